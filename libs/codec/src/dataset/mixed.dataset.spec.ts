import { PAGE_SIZE } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { isZero } from '../zero.detect.js';
import { Zstd } from '../zstd/zstd.facade.js';
import { PageGenerator, PageKind, generateMixedPage, mixedDataset, mutatePage } from './mixed.dataset.js';
import { createRng } from './seeded.rng.js';

const concat = (options: Parameters<typeof mixedDataset>[0]): Buffer =>
  Buffer.concat([...mixedDataset(options)].map((c) => c.data));

describe('mixed data set', () => {
  it('is deterministic for a seed and differs across seeds', () => {
    const a = concat({ size: 1 << 20, seed: 42 });
    expect(a.equals(concat({ size: 1 << 20, seed: 42 }))).toBe(true);
    expect(a.equals(concat({ size: 1 << 20, seed: 43 }))).toBe(false);
  });

  it('yields chunks covering the size, the last one partial', () => {
    const chunks = [...mixedDataset({ size: 200_000, chunkSize: 65_536 })];
    expect(chunks.map((c) => [c.offset, c.data.length])).toEqual([
      [0, 65_536],
      [65_536, 65_536],
      [131_072, 65_536],
      [196_608, 3_392],
    ]);
  });

  it('mixes page kinds in about the requested proportions', () => {
    const data = concat({ size: 16 << 20, seed: 5, mix: { zero: 0.4, duplicate: 0.2, text: 0.2, random: 0.2 } });
    const pages = data.length / PAGE_SIZE;
    let zero = 0;
    const seen = new Set<string>();
    let dup = 0;
    for (let at = 0; at < data.length; at += PAGE_SIZE) {
      const page = data.subarray(at, at + PAGE_SIZE);
      if (isZero(page)) zero++;
      else {
        const key = page.toString('base64');
        if (seen.has(key)) dup++;
        seen.add(key);
      }
    }
    expect(zero / pages).toBeGreaterThan(0.33);
    expect(zero / pages).toBeLessThan(0.47);
    expect(dup / pages).toBeGreaterThan(0.14);
    expect(dup / pages).toBeLessThan(0.26);
  });

  it('makes text that zstd compresses about 3-4x, and random data it cannot', async () => {
    const zstd = await Zstd.load();
    const ratio = (buf: Buffer): number => {
      let out = 0;
      for (let at = 0; at < buf.length; at += 256 * 1024)
        out += zstd.compress(buf.subarray(at, at + 256 * 1024), 3).length;
      return buf.length / out;
    };
    const text = ratio(concat({ size: 2 << 20, seed: 9, mix: { text: 1 } }));
    expect(text).toBeGreaterThan(3);
    expect(text).toBeLessThan(4.5);
    expect(ratio(concat({ size: 1 << 20, seed: 9, mix: { random: 1 } }))).toBeLessThan(1.01);
  });

  it('changes about the requested fraction of bytes when mutating a page', () => {
    const rng = createRng(2);
    const page = generateMixedPage(rng, PageKind.Text);
    const next = mutatePage(rng, page, 0.05);
    let changed = 0;
    for (let i = 0; i < PAGE_SIZE; i++) if (page[i] !== next[i]) changed++;
    expect(changed / PAGE_SIZE).toBeGreaterThan(0.03);
    expect(changed / PAGE_SIZE).toBeLessThanOrEqual(0.05);
  });

  it('makes duplicates of earlier pages', () => {
    const gen = new PageGenerator(createRng(1));
    const first = Buffer.from(gen.page(PageKind.Random));
    expect(gen.page(PageKind.Duplicate).equals(first)).toBe(true);
  });
});
