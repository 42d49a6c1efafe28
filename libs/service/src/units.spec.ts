import { describe, expect, it } from 'vitest';
import { parseSize, UnitError } from './units.js';

describe('parseSize reads sizes as qemu-img and truncate do', () => {
  it('takes K, M, G, T and KiB..TiB as powers of 1024', () => {
    expect(parseSize('256M')).toBe(256 * 2 ** 20);
    expect(parseSize('256m')).toBe(256 * 2 ** 20);
    expect(parseSize('256MiB')).toBe(256 * 2 ** 20);
    expect(parseSize('4K')).toBe(4096);
    expect(parseSize('2G')).toBe(2 * 2 ** 30);
    expect(parseSize('1T')).toBe(2 ** 40);
    expect(parseSize('1.5GiB')).toBe(1.5 * 2 ** 30);
  });

  it('takes kB, MB, GB, TB as powers of 1000, and a bare number as bytes', () => {
    expect(parseSize('500MB')).toBe(500e6);
    expect(parseSize('1kB')).toBe(1000);
    expect(parseSize('2GB')).toBe(2e9);
    expect(parseSize('1TB')).toBe(1e12);
    expect(parseSize('4096')).toBe(4096);
  });

  it('refuses what it cannot read, naming the option', () => {
    expect(() => parseSize('lots', '--ram')).toThrow(UnitError);
    expect(() => parseSize('12Q', '--disk')).toThrow(/--disk: cannot read "12Q"/);
  });
});
