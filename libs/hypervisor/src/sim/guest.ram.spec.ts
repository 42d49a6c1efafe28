import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestRam } from './guest.ram.js';

const PAGE = 4096;
const RAM = 64 * PAGE;

describe('guest RAM file', () => {
  let dir: string;
  let path: string;
  let ram: GuestRam;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'wanmig-ram-'));
    path = join(dir, 'vm.ram');
    ram = GuestRam.open(path, RAM, 8 * PAGE);
  });
  afterEach(() => {
    ram.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates a sparse file of the RAM size and refuses a larger one', () => {
    expect(statSync(path).size).toBe(RAM);
    writeFileSync(join(dir, 'big.ram'), Buffer.alloc(RAM + PAGE));
    expect(() => GuestRam.open(join(dir, 'big.ram'), RAM, PAGE)).toThrow(/more than/);
  });

  it('writes through to the file before anyone else reads it', () => {
    ram.writePage(3, Buffer.alloc(PAGE, 0xab));
    ram.writePages(10, Buffer.alloc(3 * PAGE, 0xcd));
    ram.writeBytes(5 * PAGE + 100, Buffer.from('hello'));
    const file = readFileSync(path);
    expect(file.subarray(3 * PAGE, 4 * PAGE).equals(Buffer.alloc(PAGE, 0xab))).toBe(true);
    expect(file.subarray(10 * PAGE, 13 * PAGE).equals(Buffer.alloc(3 * PAGE, 0xcd))).toBe(true);
    expect(file.toString('latin1', 5 * PAGE + 100, 5 * PAGE + 105)).toBe('hello');
    expect(ram.stats).toEqual({ pageWrites: 5, bytesWritten: 4 * PAGE + 5 });
  });

  it('loads pages lazily and sees its own writes through the cache', () => {
    writeFileSync(path, Buffer.alloc(RAM, 7));
    ram.dropCache();
    expect(ram.cachedPages).toBe(0);
    expect(ram.page(4)[0]).toBe(7);
    expect(ram.cachedPages).toBe(1);
    ram.writeBytes(4 * PAGE + 1, Buffer.from([9, 9]));
    expect([...ram.page(4).subarray(0, 4)]).toEqual([7, 9, 9, 7]);
    ram.writePages(4, Buffer.alloc(2 * PAGE, 1));
    expect(ram.page(5)[0]).toBe(1);
    expect(ram.bytes(4 * PAGE + 2, 2)).toEqual(Buffer.from([1, 1]));
  });

  it('keeps at most its cache size in memory', () => {
    for (let n = 0; n < 20; n++) ram.page(n);
    expect(ram.cachedPages).toBe(8);
  });

  it('logs dirty pages only after the first drain, and each write in exactly one drain', () => {
    ram.writePage(1, Buffer.alloc(PAGE));
    expect(ram.dirtyLogging).toBe(false);
    expect(ram.drainDirty().count).toBe(0);
    ram.writePage(2, Buffer.alloc(PAGE));
    ram.writePages(20, Buffer.alloc(2 * PAGE));
    ram.writeBytes(30 * PAGE - 2, Buffer.alloc(4));
    expect(ram.drainDirty().toArray()).toEqual([2, 20, 21, 29, 30]);
    expect(ram.drainDirty().count).toBe(0);
    ram.stopDirtyLog();
    ram.writePage(2, Buffer.alloc(PAGE));
    expect(ram.drainDirty().count).toBe(0);
  });
});
