import { describe, expect, it } from 'vitest';
import { DedupIndex } from './dedup.index.js';
import { CodecUsageError } from './errors.js';

describe('DedupIndex', () => {
  it('finds recorded content by key', () => {
    const index = new DedupIndex();
    index.record('a', 8192);
    expect(index.lookup('a')).toBe(8192);
    expect(index.lookup('b')).toBeUndefined();
  });

  it('keeps the first location of content recorded twice', () => {
    const index = new DedupIndex();
    index.record('a', 4096);
    index.record('a', 40960);
    expect(index.lookup('a')).toBe(4096);
  });

  it('forgets pages a write touches, including partly', () => {
    const index = new DedupIndex();
    index.record('a', 0);
    index.record('b', 4096);
    index.record('c', 8192);
    index.invalidate(4095, 2);
    expect(index.lookup('a')).toBeUndefined();
    expect(index.lookup('b')).toBeUndefined();
    expect(index.lookup('c')).toBe(8192);
    index.invalidate(0, 2 ** 40);
    expect(index.size).toBe(0);
  });

  it('replaces what a page held when new content is recorded there', () => {
    const index = new DedupIndex();
    index.record('a', 4096);
    index.record('b', 4096);
    expect(index.lookup('a')).toBeUndefined();
    expect(index.lookup('b')).toBe(4096);
  });

  it('evicts the least recently used entry past its bound', () => {
    const index = new DedupIndex({ maxEntries: 2 });
    index.record('a', 0);
    index.record('b', 4096);
    index.lookup('a');
    index.record('c', 8192);
    expect(index.size).toBe(2);
    expect(index.lookup('b')).toBeUndefined();
    expect(index.lookup('a')).toBe(0);
    // The evicted entry's page is free again: recording there works.
    index.record('d', 4096);
    expect(index.lookup('d')).toBe(4096);
  });

  it('refuses unaligned offsets and bad bounds', () => {
    expect(() => new DedupIndex().record('a', 100)).toThrow(CodecUsageError);
    expect(() => new DedupIndex({ maxEntries: 0 })).toThrow(CodecUsageError);
  });
});
