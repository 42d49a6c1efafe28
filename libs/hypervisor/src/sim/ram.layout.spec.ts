import { describe, expect, it } from 'vitest';
import {
  KV_MAX_VALUE_BYTES,
  KV_PAGES,
  RESERVED_PAGES,
  decodeKvSlot,
  decodeRamHeader,
  encodeKvSlot,
  encodeRamHeader,
  kvKeyIndex,
} from './ram.layout.js';

describe('RAM layout', () => {
  it('round-trips the header and refuses a page without one', () => {
    const header = { pageSize: 4096, ramBytes: 4 * 2 ** 30, seed: 0xffffffff, flags: 1, counter: 2 ** 40 + 3 };
    const page = Buffer.alloc(4096);
    encodeRamHeader(header).copy(page);
    expect(decodeRamHeader(page)).toEqual(header);
    expect(decodeRamHeader(Buffer.alloc(4096))).toBeUndefined();
  });

  it('keeps 256 keys of 256 bytes in 16 pages after page 0', () => {
    expect(KV_PAGES).toBe(16);
    expect(RESERVED_PAGES).toBe(17);
    expect(kvKeyIndex('k0')).toBe(0);
    expect(kvKeyIndex('k255')).toBe(255);
    for (const key of ['k256', 'k01', 'key1', 'k', 'k-1']) expect(kvKeyIndex(key), key).toBeUndefined();
  });

  it('round-trips slots and refuses values that do not fit', () => {
    expect(decodeKvSlot(encodeKvSlot(7, 'db-k3-v7-00ff00ff'))).toEqual({ version: 7, value: 'db-k3-v7-00ff00ff' });
    expect(() => encodeKvSlot(1, 'x'.repeat(KV_MAX_VALUE_BYTES + 1))).toThrow(RangeError);
  });
});
