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

/**
 * A window for a link of known rate and round trip: two bandwidth-delay products (acks wait for
 * fsync and the ack interval) plus 1 MiB of slack. Every byte in flight when a link is cut must be
 * sent again, so a window much larger than this costs re-sends without buying throughput.
 */
export function recommendedWindowBytes(bytesPerSecond: number, rttMs: number): number {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0 || rttMs <= 0) return DEFAULT_WINDOW_BYTES;
  return Math.ceil(2 * bytesPerSecond * (rttMs / 1000)) + 1024 * 1024;
}
export const DEFAULT_MIN_RTO_MS = 500;
export const DEFAULT_GIVE_UP_MS = 5 * 60_000;
export const DEFAULT_ACK_INTERVAL_MS = 20;
export const DEFAULT_ACK_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_APPLY_FAILURES = 5;
