import { ErrorCode } from './error-codes.js';

/**
 * Codes of failures that may pass by themselves (a service away or restarting, a request that got no answer in time,
 * a stream that timed out): asking again may succeed. Everything else (bad input, a conflict, corrupt or differing
 * data, no room) fails again the same way.
 */
const RETRYABLE_CODES = new Set<ErrorCode>([ErrorCode.Unavailable, ErrorCode.StreamTimeout]);

/** Whether asking again may help, for an error of this code when the error itself does not say. */
export function isRetryableCode(code: ErrorCode): boolean {
  return RETRYABLE_CODES.has(code);
}

/** Base of every error wanmig sends across NATS: it has a stable code and a message fit for an operator. */
export class WanmigError extends Error {
  readonly code: ErrorCode;
  /** Asking again may help (by its code unless the thrower knows better: an engine's final failure is not). */
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options);
    this.name = 'WanmigError';
    this.code = code;
    this.retryable = options?.retryable ?? isRetryableCode(code);
  }
  toWire(): WireError {
    return { code: this.code, message: this.message, retryable: this.retryable };
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
  /** Asking again may help; absent in replies of older services: then the code says (isRetryableCode). */
  retryable?: boolean;
}

/** Translate any error for the wire: known errors keep code and message, the rest become INTERNAL. */
export function toWireError(err: unknown): WireError {
  if (err instanceof WanmigError) return err.toWire();
  return { code: ErrorCode.Internal, message: 'internal error (see the service log)', retryable: false };
}

/** Whether asking again may help with `err` (a WanmigError, or one as it crossed the wire). */
export function isRetryable(err: unknown): boolean {
  if (err instanceof WanmigError) return err.retryable;
  const wire = err as Partial<WireError> | undefined;
  if (typeof wire?.retryable === 'boolean') return wire.retryable;
  return typeof wire?.code === 'string' && RETRYABLE_CODES.has(wire.code);
}
