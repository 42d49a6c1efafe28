import type { Frame } from '@wanmig/protocol';

/**
 * Where a receiver puts frames. `apply` is called strictly in sequence order, one at a time;
 * `sync` must make everything applied so far durable (the receiver acknowledges only after it).
 * An `apply` that throws leaves the sink as it was before that frame (no partial corrupt writes), and the receiver
 * asks for the frame again; unless the error is final ({@link isFinalApplyError}): then the stream fails at once with
 * it, since no re-send can help (what arrived differs from what was sent, and the sink already acted on it).
 */
export interface FrameSink {
  apply(frame: Frame): Promise<void>;
  sync(): Promise<void>;
}

/** An error a sink throws when no re-send of the frame can help: the receiver fails the stream with it at once. */
export interface FinalApplyError extends Error {
  readonly final: true;
}

export function isFinalApplyError(err: unknown): err is FinalApplyError {
  return err instanceof Error && (err as { final?: unknown }).final === true;
}
