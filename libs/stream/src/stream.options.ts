import type { NatsConnection } from '@nats-io/nats-core';
import type { StreamKind } from '@wanmig/protocol';

export interface StreamAddress {
  nc: NatsConnection;
  migrationId: string;
  streamId: number;
}

export interface SenderOptions extends StreamAddress {
  kind: StreamKind;
  /** Bytes in flight before the sender waits for acks; keep it ≥ bandwidth × RTT. */
  windowBytes?: number;
  /** Shared per-migration budget; frames (and re-sends) take wire bytes from it. */
  limiter?: { take(bytes: number): Promise<void> };
  /** No ack progress for this long (at least) starts a probe of the receiver's watermark. */
  minRtoMs?: number;
  /** Give up after the receiver has not answered for this long. */
  giveUpAfterMs?: number;
}

export const DEFAULT_WINDOW_BYTES = 16 * 1024 * 1024;
export const DEFAULT_MIN_RTO_MS = 500;
export const DEFAULT_GIVE_UP_MS = 5 * 60_000;
export const DEFAULT_ACK_INTERVAL_MS = 20;
export const DEFAULT_ACK_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_APPLY_FAILURES = 5;
