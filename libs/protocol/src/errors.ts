import { ErrorCode } from './error-codes.js';

/** Base of every error wanmig sends across NATS: it has a stable code and a message fit for an operator. */
export class WanmigError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WanmigError';
    this.code = code;
  }
  toWire(): WireError {
    return { code: this.code, message: this.message };
  }
}

/** A frame that failed to parse or verify. The receiver counts it, drops it and re-requests. */
export class FrameError extends WanmigError {
  readonly migrationId?: string;
  readonly seq?: number;
  constructor(code: ErrorCode, message: string, fields: { migrationId?: string; seq?: number; cause?: unknown } = {}) {
    super(code, message, { cause: fields.cause });
    this.name = 'FrameError';
    this.migrationId = fields.migrationId;
    this.seq = fields.seq;
  }
}

/** A request whose body failed validation; `problems` lists each bad key. */
export class ValidationError extends WanmigError {
  readonly problems: string[];
  constructor(problems: string[], what = 'request') {
    super(ErrorCode.InvalidRequest, `invalid ${what}: ${problems.join('; ')}`);
    this.name = 'ValidationError';
    this.problems = problems;
  }
}

export interface WireError {
  code: ErrorCode;
  message: string;
}

/** Translate any error for the wire: known errors keep code and message, the rest become INTERNAL. */
export function toWireError(err: unknown): WireError {
  if (err instanceof WanmigError) return err.toWire();
  return { code: ErrorCode.Internal, message: 'internal error (see the service log)' };
}
