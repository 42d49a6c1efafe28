import type { NatsConnection } from '@nats-io/nats-core';
import { ErrorCode } from '../error-codes.js';
import { WanmigError } from '../errors.js';
import { decodeRpcReply, encodeRpcRequest } from './rpc.envelope.js';

export const DEFAULT_CONTROL_TIMEOUT_MS = 10_000;

/** Calls a service's control subject and returns its response, or throws its typed error. */
export async function callControl<T>(
  nc: NatsConnection,
  subject: string,
  data: object,
  timeoutMs = DEFAULT_CONTROL_TIMEOUT_MS,
): Promise<T> {
  let text: string;
  try {
    const msg = await nc.request(subject, encodeRpcRequest(subject, data), { timeout: timeoutMs });
    text = msg.string();
  } catch (cause) {
    throw new WanmigError(ErrorCode.Unavailable, `no answer on ${subject} within ${timeoutMs} ms`, { cause });
  }
  return decodeRpcReply<T>(text, subject);
}
