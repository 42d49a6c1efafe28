import { describe, expect, it, vi } from 'vitest';
import { ByteReader } from './byte.reader.js';
import { NbdConnectionClosedError } from './errors.js';

describe('ByteReader', () => {
  it('serves a read held in one chunk as a view of it, without copying', () => {
    const reader = new ByteReader();
    const chunk = Buffer.from('abcdefgh');
    reader.push(chunk);
    const out = reader.tryRead(4)!;
    expect(out.toString()).toBe('abcd');
    expect(out.buffer).toBe(chunk.buffer);
    expect(reader.tryRead(4)!.toString()).toBe('efgh');
    expect(reader.buffered).toBe(0);
  });

  it('assembles reads that span chunks, however the bytes were fragmented', async () => {
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => i & 0xff));
    for (const size of [1, 3, 7, 28, 999]) {
      const reader = new ByteReader();
      const reads = [reader.readExact(28)];
      for (let at = 0; at < data.length; at += size) reader.push(data.subarray(at, at + size));
      const first = await reads[0];
      expect(first.equals(data.subarray(0, 28))).toBe(true);
      expect((await reader.readExact(500)).equals(data.subarray(28, 528))).toBe(true);
      expect(reader.tryRead(472)!.equals(data.subarray(528))).toBe(true);
    }
  });

  it('copies chunks that arrive while a large read waits straight into its buffer', async () => {
    const reader = new ByteReader({ highWater: 16 });
    const pending = reader.readExact(100);
    for (let i = 0; i < 10; i++) reader.push(Buffer.alloc(10, i));
    expect(reader.buffered).toBe(0);
    const out = await pending;
    expect(out[0]).toBe(0);
    expect(out[99]).toBe(9);
  });

  it('skips bytes without keeping them', async () => {
    const reader = new ByteReader();
    reader.push(Buffer.from('0123'));
    const skipped = reader.skip(6);
    reader.push(Buffer.from('45678'));
    await skipped;
    expect(reader.tryRead(3)!.toString()).toBe('678');
  });

  it('rejects a read the source ends before, saying how much arrived', async () => {
    const reader = new ByteReader();
    const pending = reader.readExact(28);
    reader.push(Buffer.alloc(13));
    reader.end();
    const err = await pending.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdConnectionClosedError);
    expect(err).toMatchObject({ expected: 28, received: 13 });
    await expect(reader.readExact(1)).rejects.toBeInstanceOf(NbdConnectionClosedError);
  });

  it('still serves bytes queued before the end', async () => {
    const reader = new ByteReader();
    reader.push(Buffer.from('xyz'));
    reader.end();
    expect((await reader.readExact(3)).toString()).toBe('xyz');
    expect(reader.exhausted).toBe(true);
  });

  it('pauses its source above the high-water mark and resumes it when the consumer needs data', async () => {
    const flow = { pause: vi.fn(), resume: vi.fn() };
    const reader = new ByteReader({ highWater: 10, flow });
    reader.push(Buffer.alloc(6));
    expect(flow.pause).not.toHaveBeenCalled();
    reader.push(Buffer.alloc(6));
    expect(flow.pause).toHaveBeenCalledTimes(1);
    reader.tryRead(8);
    expect(flow.resume).toHaveBeenCalledTimes(1);
    reader.push(Buffer.alloc(20));
    expect(flow.pause).toHaveBeenCalledTimes(2);
    const big = reader.readExact(30);
    expect(flow.resume).toHaveBeenCalledTimes(2);
    reader.push(Buffer.alloc(6));
    expect((await big).length).toBe(30);
  });

  it('allows one pending read at a time', async () => {
    const reader = new ByteReader();
    const first = reader.readExact(4);
    await expect(reader.readExact(4)).rejects.toThrow(/already pending/);
    reader.push(Buffer.alloc(4));
    await first;
  });
});
