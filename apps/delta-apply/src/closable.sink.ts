import type { Frame } from '@wanmig/protocol';
import type { FrameSink } from '@wanmig/stream';
import { SessionClosedError } from './errors.js';

/**
 * A sink that can be shut: after `close()` resolves, nothing touches the image again. The stream
 * receiver stops listening on `stop()`, but frames already queued keep being applied and may start
 * one more sync; writing them into a file descriptor that was closed (and perhaps reused by another
 * image) would be a disaster. Once closed, `apply` and `sync` fail without touching the target;
 * the receiver counts that, drops its queue and re-requests, which nobody answers any more.
 */
export class ClosableSink implements FrameSink {
  private closed = false;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly inner: FrameSink,
    private readonly migrationId: string,
  ) {}

  apply(frame: Frame): Promise<void> {
    return this.track(() => this.inner.apply(frame));
  }

  sync(): Promise<void> {
    return this.track(() => this.inner.sync());
  }

  /** Refuses new work and waits for the apply or sync under way. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inFlight]);
  }

  private track(work: () => Promise<void>): Promise<void> {
    if (this.closed) return Promise.reject(new SessionClosedError(this.migrationId));
    const run = work();
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run)).catch(() => undefined);
    return run;
  }
}
