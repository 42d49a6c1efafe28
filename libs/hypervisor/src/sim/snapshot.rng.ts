import { type Rng } from '@wanmig/codec';

/** The four sfc32 words: all a stream needs to go on exactly where it stopped. */
export type RngState = readonly [number, number, number, number];

/**
 * The codec's seeded PRNG (sfc32 seeded through splitmix32, same seed → same bytes as `createRng`),
 * with its state readable and restorable: the guest's workload streams are part of its device
 * state, so a migrated guest continues the very sequence the source was drawing from.
 */
export class SnapshotRng implements Rng {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;

  constructor(seed: number) {
    let s = seed >>> 0;
    const splitmix = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = splitmix();
    this.b = splitmix();
    this.c = splitmix();
    this.d = splitmix();
    for (let i = 0; i < 12; i++) this.u32();
  }

  static fromState(state: RngState): SnapshotRng {
    const rng = new SnapshotRng(0);
    rng.restore(state);
    return rng;
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  float(): number {
    return this.u32() / 4294967296;
  }

  int(n: number): number {
    return Math.floor((this.u32() / 4294967296) * n);
  }

  fill(out: Uint8Array): void {
    const words = (out.byteOffset & 3) === 0 ? out.length >>> 2 : 0;
    if (words > 0) {
      const view = new Uint32Array(out.buffer, out.byteOffset, words);
      for (let i = 0; i < words; i++) view[i] = this.u32();
    }
    for (let i = words * 4; i < out.length; i++) out[i] = this.u32() & 0xff;
  }

  state(): RngState {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0];
  }

  restore(state: RngState): void {
    [this.a, this.b, this.c, this.d] = state.map((w) => w | 0) as [number, number, number, number];
  }
}

/** A distinct, stable seed per purpose (RAM writes, key-value updates, disk writes, layout) from one guest seed. */
export function streamSeed(seed: number, stream: number): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x2c1b3c6d);
  z = Math.imul(z ^ (z >>> 12), 0x297a2d39);
  return (z ^ (z >>> 15)) >>> 0;
}
