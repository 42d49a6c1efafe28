import { describe, expect, it } from 'vitest';
import { CodecUsageError } from './errors.js';
import { SentPageCache } from './sent-page.cache.js';

const page = (fill: number): Buffer => Buffer.alloc(4096, fill);

describe('SentPageCache', () => {
  it('keeps a copy of each page with its CRC', () => {
    const cache = new SentPageCache(1024 * 1024);
    const data = page(1);
    cache.put(5, data, 1234);
    data.fill(9);
    const got = cache.get(5);
    expect(got?.bytes[0]).toBe(1);
    expect(got?.crc).toBe(1234);
    expect(got?.bytes.byteOffset && got.bytes.byteOffset % 4).toBeFalsy();
    cache.put(5, page(2));
    expect(cache.get(5)?.bytes[0]).toBe(2);
    expect(cache.get(5)?.crc).toBeUndefined();
  });

  it('stays within its byte budget, evicting the least recently used page', () => {
    const cache = new SentPageCache(3 * 4096);
    cache.put(1, page(1));
    cache.put(2, page(2));
    cache.put(3, page(3));
    cache.get(1);
    cache.put(4, page(4));
    expect(cache.size).toBe(3);
    expect(cache.get(2)).toBeUndefined();
    expect(cache.get(1)?.bytes[0]).toBe(1);
    expect(cache.get(4)?.bytes[0]).toBe(4);
  });

  it('forgets single pages and ranges', () => {
    const cache = new SentPageCache(1024 * 1024);
    for (let i = 0; i < 10; i++) cache.put(i, page(i));
    cache.delete(0);
    cache.deleteRange(3, 6);
    expect(cache.size).toBe(6);
    cache.deleteRange(0, 2 ** 40);
    expect(cache.size).toBe(0);
    cache.put(1, page(1));
    cache.clear();
    expect(cache.get(1)).toBeUndefined();
  });

  it('refuses a budget smaller than a page', () => {
    expect(() => new SentPageCache(100)).toThrow(CodecUsageError);
  });
});
