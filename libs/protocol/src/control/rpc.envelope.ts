import { ErrorCode, isErrorCode } from '../error-codes.js';
import { WanmigError, type WireError } from '../errors.js';

/**
 * Nest's NATS transport wraps requests as `{ pattern, data, id }` and replies as
 * `{ response?, err?, isDisposed, id }`. Services speak it through Nest; plain clients (the CLI,
 * other services, tests) use these helpers.
 */
export interface RpcRequest<T> {
  pattern: string;
  data: T;
  id: string;
}

export interface RpcReply<T> {
  id?: string;
  response?: T;
  err?: unknown;
  isDisposed?: boolean;
}

let nextId = 0;

export function encodeRpcRequest<T>(pattern: string, data: T): string {
  const request: RpcRequest<T> = { pattern, data, id: `${process.pid}-${++nextId}` };
  return JSON.stringify(request);
}

/** The reply's response, or the remote error as a WanmigError with the code it carried. */
export function decodeRpcReply<T>(text: string, subject: string): T {
  let reply: RpcReply<T>;
  try {
    reply = JSON.parse(text) as RpcReply<T>;
  } catch (cause) {
    throw new WanmigError(ErrorCode.Internal, `malformed reply on ${subject}`, { cause });
  }
  if (reply.err !== undefined && reply.err !== null) throw remoteError(reply.err, subject);
  return reply.response as T;
}

export class RemoteError extends WanmigError {
  readonly subject: string;
  constructor(wire: WireError, subject: string) {
    super(wire.code, wire.message, wire.retryable === undefined ? {} : { retryable: wire.retryable });
    this.name = 'RemoteError';
    this.subject = subject;
  }
}

function remoteError(err: unknown, subject: string): RemoteError {
  const e = err as Partial<WireError>;
  const code = isErrorCode(e.code) ? e.code : ErrorCode.Internal;
  const message = typeof e.message === 'string' ? e.message : 'remote error';
  const retryable = typeof e.retryable === 'boolean' ? { retryable: e.retryable } : {};
  return new RemoteError({ code, message, ...retryable }, subject);
}
