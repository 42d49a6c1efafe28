import type { Frame } from '@wanmig/protocol';

/**
 * Where a receiver puts frames. `apply` is called strictly in sequence order, one at a time;
 * `sync` must make everything applied so far durable (the receiver acknowledges only after it).
 * An `apply` that throws leaves the sink as it was before that frame (no partial corrupt writes).
 */
export interface FrameSink {
  apply(frame: Frame): Promise<void>;
  sync(): Promise<void>;
}
