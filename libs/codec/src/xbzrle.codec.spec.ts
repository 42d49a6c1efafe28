import { PAGE_SIZE } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { createRng } from './dataset/seeded.rng.js';
import { mutatePage } from './dataset/mixed.dataset.js';
import { CodecUsageError } from './errors.js';
import { XBZRLE_MERGE_GAP, xbzrleApply, xbzrleCheck, xbzrleEncode } from './xbzrle.codec.js';

function roundTrip(base: Uint8Array, next: Uint8Array): number {
  const out = new Uint8Array(base.length + 64);
  const n = xbzrleEncode(base, next, out);
  expect(n).toBeGreaterThanOrEqual(0);
  const delta = out.subarray(0, n);
  expect(xbzrleCheck(delta, base.length)).toBeUndefined();
  const page = Buffer.from(base);
  xbzrleApply(delta, page);
  expect(Buffer.compare(page, Buffer.from(next))).toBe(0);
  // Applying twice changes nothing more.
  xbzrleApply(delta, page);
  expect(Buffer.compare(page, Buffer.from(next))).toBe(0);
  return n;
}

describe('xbzrle codec', () => {
  it('encodes an unchanged page as an empty delta', () => {
    const page = Buffer.alloc(PAGE_SIZE, 7);
    expect(roundTrip(page, Buffer.from(page))).toBe(0);
  });

  it('writes QEMU-style pairs: unchanged run, changed run, new bytes', () => {
    const base = Buffer.alloc(300);
    const next = Buffer.from(base);
    next[0] = 1; // changed run at the start: first unchanged run is 0
    next[200] = 2;
    next[201] = 3;
    const out = new Uint8Array(64);
    const n = xbzrleEncode(base, next, out);
    // [0, 1, 0x01] then [199 = 0xc7 0x01, 2, 0x02 0x03]; the trailing unchanged run is left out.
    expect([...out.subarray(0, n)]).toEqual([0, 1, 1, 0xc7, 0x01, 2, 2, 3]);
  });

  it('folds unchanged gaps shorter than the merge gap into the changed run', () => {
    const base = Buffer.alloc(64);
    const next = Buffer.from(base);
    next[10] = 1;
    next[10 + XBZRLE_MERGE_GAP] = 1; // gap of MERGE_GAP - 1 equal bytes: merged
    next[40] = 1; // far: a new pair
    const out = new Uint8Array(64);
    const n = xbzrleEncode(base, next, out);
    expect([...out.subarray(0, n)]).toEqual([10, XBZRLE_MERGE_GAP + 1, 1, 0, 0, 1, 40 - 11 - XBZRLE_MERGE_GAP, 1, 1]);
    roundTrip(base, next);
  });

  it('round-trips seeded random modifications, aligned and not', () => {
    const rng = createRng(11);
    for (let i = 0; i < 200; i++) {
      const base = Buffer.alloc(PAGE_SIZE);
      rng.fill(base);
      const fraction = [0.001, 0.01, 0.05, 0.2, 0.6][i % 5];
      const next = mutatePage(rng, base, fraction, 1 + (i % 16));
      roundTrip(base, next);
      const unaligned = Buffer.alloc(PAGE_SIZE + 1).subarray(1);
      next.copy(unaligned);
      roundTrip(base, unaligned);
      roundTrip(base.subarray(0, 1000 + i), next.subarray(0, 1000 + i));
    }
  });

  it('gives up with -1 once the delta passes the limit', () => {
    const rng = createRng(5);
    const base = Buffer.alloc(PAGE_SIZE);
    const next = Buffer.alloc(PAGE_SIZE);
    rng.fill(next);
    const out = new Uint8Array(PAGE_SIZE * 2);
    expect(xbzrleEncode(base, next, out, Math.floor(PAGE_SIZE * 0.7))).toBe(-1);
    expect(xbzrleEncode(base, next, out, 10)).toBe(-1);
    expect(xbzrleEncode(base, next, out)).toBeGreaterThan(PAGE_SIZE);
  });

  it('refuses pages of different lengths', () => {
    expect(() => xbzrleEncode(Buffer.alloc(10), Buffer.alloc(11), new Uint8Array(32))).toThrow(CodecUsageError);
  });

  it('rejects malformed deltas', () => {
    const bad: [string, number[], number][] = [
      ['zero-length changed run', [0, 0], 16],
      ['zero unchanged run after the first pair', [0, 1, 9, 0, 1, 9], 16],
      ['runs past the page', [10, 7, 1, 1, 1, 1, 1, 1, 1], 16],
      ['truncated changed bytes', [0, 4, 1, 2], 16],
      ['truncated length', [0x80], 16],
      ['length longer than 3 bytes', [0x80, 0x80, 0x80, 0x01, 1, 1], 16],
    ];
    for (const [what, bytes, length] of bad) {
      expect(xbzrleCheck(Uint8Array.from(bytes), length), what).toBeTypeOf('string');
      expect(() => xbzrleApply(Uint8Array.from(bytes), new Uint8Array(length)), what).toThrow(CodecUsageError);
    }
    expect(xbzrleCheck(new Uint8Array(0), 16)).toBeUndefined();
  });
});
