import { PAGE_SIZE } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { isZero } from './zero.detect.js';

describe('isZero', () => {
  it('accepts all-zero data of any length', () => {
    expect(isZero(Buffer.alloc(PAGE_SIZE))).toBe(true);
    expect(isZero(Buffer.alloc(1))).toBe(true);
    expect(isZero(Buffer.alloc(0))).toBe(true);
    expect(isZero(Buffer.alloc(200_000))).toBe(true);
    expect(isZero(new Uint8Array(PAGE_SIZE))).toBe(true);
  });

  it('finds a single non-zero byte anywhere', () => {
    for (const length of [PAGE_SIZE, 513, 200_000]) {
      for (const at of [0, 7, length >> 1, length - 1]) {
        const buf = Buffer.alloc(length);
        buf[at] = 1;
        expect(isZero(buf), `length ${length}, byte ${at}`).toBe(false);
      }
    }
  });

  it('does not mistake the bit pattern of -0.0 for zero', () => {
    const page = Buffer.alloc(PAGE_SIZE);
    page.writeDoubleLE(-0, 4088);
    expect(isZero(page)).toBe(false);
  });

  it('works on unaligned views', () => {
    const backing = Buffer.alloc(PAGE_SIZE + 3);
    expect(isZero(backing.subarray(3))).toBe(true);
    backing[PAGE_SIZE + 2] = 9;
    expect(isZero(backing.subarray(3))).toBe(false);
  });
});
