import { createRng, PageGenerator, PageKind } from '@wanmig/codec';
import { NbdClient } from '@wanmig/nbd';

export interface WorkloadStats {
  writes: number;
  bytes: number;
  seconds: number;
  /** What the guest achieved, and what it asked for. */
  bytesPerSecond: number;
  targetBytesPerSecond: number;
  maxLatencyMs: number;
}

/**
 * A guest that keeps writing: random block-aligned writes of VM-like pages through NBD, at a
 * target rate, until stopped. Each write waits for its reply, as a real guest's I/O does, so a
 * throttled or frozen export slows it down.
 */
export class RandomWriteWorkload {
  private stopped = false;
  private done?: Promise<void>;
  private readonly stats: Omit<WorkloadStats, 'seconds' | 'bytesPerSecond'> = {
    writes: 0,
    bytes: 0,
    targetBytesPerSecond: 0,
    maxLatencyMs: 0,
  };
  private started = 0;
  private finished = 0;

  private constructor(
    private readonly client: NbdClient,
    private readonly writeBytes: number,
    private readonly seed: number,
  ) {}

  static async start(
    uri: { host: string; port: number } | { path: string },
    options: {
      bytesPerSecond: number;
      writeBytes?: number;
      seed?: number;
      maxSeconds?: number;
      /** `mixed`: VM-like pages (text, random, duplicate, zero); `random`: incompressible. */
      data?: 'mixed' | 'random';
    },
  ): Promise<RandomWriteWorkload> {
    const client = await NbdClient.connect(uri);
    const workload = new RandomWriteWorkload(client, options.writeBytes ?? 64 * 1024, options.seed ?? 7);
    workload.stats.targetBytesPerSecond = options.bytesPerSecond;
    workload.done = workload.loop(options.bytesPerSecond, options.maxSeconds ?? 600, options.data ?? 'mixed');
    return workload;
  }

  private async loop(rate: number, maxSeconds: number, dataKind: 'mixed' | 'random'): Promise<void> {
    const rng = createRng(this.seed);
    const pages = new PageGenerator(rng);
    const kinds =
      dataKind === 'random'
        ? ([PageKind.Random] as const)
        : ([PageKind.Text, PageKind.Random, PageKind.Duplicate, PageKind.Zero] as const);
    const blocks = Math.floor(this.client.size / this.writeBytes);
    this.started = performance.now();
    const deadline = this.started + maxSeconds * 1000;
    while (!this.stopped && performance.now() < deadline) {
      const data = Buffer.alloc(this.writeBytes);
      for (let at = 0; at < data.length; at += 4096) pages.page(kinds[rng.int(kinds.length)]).copy(data, at);
      const t = performance.now();
      try {
        await this.client.write(rng.int(blocks) * this.writeBytes, data);
      } catch (err) {
        // The export going away while we stop is the end of the run, not a failure.
        if (this.stopped) break;
        throw err;
      }
      const latency = performance.now() - t;
      this.stats.maxLatencyMs = Math.max(this.stats.maxLatencyMs, latency);
      this.stats.writes++;
      this.stats.bytes += data.length;
      // Pace to the target: the n-th write may not finish before n * size / rate seconds.
      const due = this.started + (this.stats.bytes / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    this.finished = performance.now();
  }

  /** Stops after the write in flight; returns what the guest achieved. */
  async stop(): Promise<WorkloadStats> {
    this.stopped = true;
    await this.done;
    await this.client.disconnect().catch(() => this.client.destroy());
    const seconds = (this.finished - this.started) / 1000;
    return { ...this.stats, seconds, bytesPerSecond: this.stats.bytes / Math.max(seconds, 0.001) };
  }
}
