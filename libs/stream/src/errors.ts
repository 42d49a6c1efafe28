import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** The stream gave up: the receiver stayed unreachable, or a frame kept failing to apply. */
export class StreamError extends WanmigError {
  readonly migrationId: string;
  readonly streamId: number;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; streamId: number; cause?: unknown }) {
    super(code, message, { cause: fields.cause });
    this.name = 'StreamError';
    this.migrationId = fields.migrationId;
    this.streamId = fields.streamId;
  }
}

export class StreamClosedError extends StreamError {
  constructor(fields: { migrationId: string; streamId: number }) {
    super(ErrorCode.StreamClosed, `stream ${fields.migrationId}/${fields.streamId} is closed`, fields);
    this.name = 'StreamClosedError';
  }
}
