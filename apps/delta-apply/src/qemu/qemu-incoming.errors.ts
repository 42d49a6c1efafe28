import type { ErrorCode } from '@wanmig/protocol';
import { DeltaApplyError } from '../errors.js';

/** Feeding QEMU's migration stream to the destination QEMU failed (socket, frame, or stream). */
export class QemuIncomingError extends DeltaApplyError {
  readonly socketPath: string;
  /** Bytes of QEMU's stream written to the destination QEMU when it failed. */
  readonly position: number;
  readonly seq?: number;
  /** No re-send can help (a digest that differs): the stream fails at once (see FrameSink). */
  readonly final: boolean;
  constructor(
    code: ErrorCode,
    message: string,
    fields: {
      migrationId: string;
      socketPath: string;
      position: number;
      seq?: number;
      cause?: unknown;
      final?: boolean;
    },
  ) {
    super(code, message, fields);
    this.name = 'QemuIncomingError';
    this.socketPath = fields.socketPath;
    this.position = fields.position;
    this.seq = fields.seq;
    this.final = fields.final === true;
  }
}
