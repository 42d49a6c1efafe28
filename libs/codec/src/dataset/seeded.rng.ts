/** A small, fast, seeded PRNG (sfc32 seeded through splitmix32): same seed, same bytes, on every machine. */
export interface Rng {
  /** Uniform 32-bit unsigned integer. */
  u32(): number;
  /** Uniform in [0, 1). */
  float(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Fills `out` with random bytes. */
  fill(out: Uint8Array): void;
}

export function createRng(seed: number): Rng {
  let s = seed >>> 0;
  const splitmix = (): number => {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const u32 = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) u32();
  return {
    u32,
    float: () => u32() / 4294967296,
    int: (n) => Math.floor((u32() / 4294967296) * n),
    fill(out) {
      const words = (out.byteOffset & 3) === 0 ? out.length >>> 2 : 0;
      if (words > 0) {
        const view = new Uint32Array(out.buffer, out.byteOffset, words);
        for (let i = 0; i < words; i++) view[i] = u32();
      }
      for (let i = words * 4; i < out.length; i++) out[i] = u32() & 0xff;
    },
  };
}
