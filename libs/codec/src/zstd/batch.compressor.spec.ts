import { describe, expect, it } from 'vitest';
import { createRng } from '../dataset/seeded.rng.js';
import { AdaptiveCompression } from './adaptive.compression.js';
import { BatchCompressor } from './batch.compressor.js';
import { Zstd } from './zstd.facade.js';

function random(size: number, seed: number): Buffer {
  const buf = Buffer.alloc(size);
  createRng(seed).fill(buf);
  return buf;
}

describe('AdaptiveCompression', () => {
  it('skips after repeated failures and re-probes with growing gaps', () => {
    const a = new AdaptiveCompression({ giveUpAfter: 2, probeEvery: 3, maxProbeEvery: 6 });
    const trace: boolean[] = [];
    for (let i = 0; i < 20; i++) {
      const tried = a.shouldTry();
      trace.push(tried);
      if (tried) a.report(false);
    }
    // 2 failures, skip 3, probe (fail), skip 6, probe (fail), skip 6 ...
    expect(trace.map((t) => (t ? 'T' : '.')).join('')).toBe('TT...T......T......T');
  });

  it('returns to compressing every batch after a successful probe', () => {
    const a = new AdaptiveCompression({ giveUpAfter: 1, probeEvery: 2 });
    a.report(false);
    expect(a.skipping).toBe(true);
    expect(a.shouldTry()).toBe(false);
    expect(a.shouldTry()).toBe(false);
    expect(a.shouldTry()).toBe(true);
    a.report(true);
    expect([a.shouldTry(), a.shouldTry(), a.shouldTry()]).toEqual([true, true, true]);
  });
});

describe('BatchCompressor', () => {
  it('compresses what shrinks and passes the rest through', async () => {
    const c = new BatchCompressor({ zstd: await Zstd.load() });
    const text = Buffer.from('hello world, hello world, hello world. '.repeat(500));
    const packed = c.maybeCompress(text);
    expect(packed.zstd).toBe(true);
    expect(packed.payload.length).toBeLessThan(text.length / 10);
    const noise = random(64 * 1024, 1);
    expect(c.maybeCompress(noise)).toEqual({ payload: noise, zstd: false });
    const tiny = Buffer.from('abcabcabc');
    expect(c.maybeCompress(tiny)).toEqual({ payload: tiny, zstd: false });
  });

  it('stops trying on incompressible streams, so random data costs few attempts', async () => {
    const c = new BatchCompressor({ zstd: await Zstd.load() });
    for (let i = 0; i < 100; i++) c.maybeCompress(random(16 * 1024, i));
    const s = c.stats;
    expect(s.compressed).toBe(0);
    expect(s.attempts).toBeLessThan(15);
    expect(s.skipped).toBe(100 - s.attempts);
  });
});
