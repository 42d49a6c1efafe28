export interface AdaptiveCompressionOptions {
  /** Consecutive incompressible results before compression is skipped. Default 4. */
  giveUpAfter?: number;
  /** Attempts skipped before the first re-probe. Default 16. */
  probeEvery?: number;
  /** Each failed re-probe doubles the skip, up to this. Default 256. */
  maxProbeEvery?: number;
}

/**
 * Decides whether compressing the next batch is worth trying. After `giveUpAfter` incompressible
 * results in a row it skips, then re-probes once every `probeEvery` batches (doubling while probes
 * keep failing), so a stream of random or encrypted pages costs almost no CPU while a stream that
 * turns compressible again is noticed within a few batches.
 */
export class AdaptiveCompression {
  private readonly giveUpAfter: number;
  private readonly probeEvery: number;
  private readonly maxProbeEvery: number;
  private failures = 0;
  private skipLeft = 0;
  private backoff: number;

  constructor(options: AdaptiveCompressionOptions = {}) {
    this.giveUpAfter = options.giveUpAfter ?? 4;
    this.probeEvery = options.probeEvery ?? 16;
    this.maxProbeEvery = Math.max(this.probeEvery, options.maxProbeEvery ?? 256);
    this.backoff = this.probeEvery;
  }

  /** True when the next batch should be compressed; false counts as one skipped batch. */
  shouldTry(): boolean {
    if (this.skipLeft > 0) {
      this.skipLeft--;
      return false;
    }
    return true;
  }

  /** The outcome of an attempt that `shouldTry` allowed. */
  report(compressible: boolean): void {
    if (compressible) {
      this.failures = 0;
      this.backoff = this.probeEvery;
      return;
    }
    this.failures++;
    if (this.failures >= this.giveUpAfter) {
      this.skipLeft = this.backoff;
      this.backoff = Math.min(this.backoff * 2, this.maxProbeEvery);
    }
  }

  /** True while attempts are being skipped. */
  get skipping(): boolean {
    return this.skipLeft > 0;
  }
}
