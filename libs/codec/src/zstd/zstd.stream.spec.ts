import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '@wanmig/protocol';
import { ZstdError } from '../errors.js';
import { Zstd } from './zstd.facade.js';
import { ZstdStreamDecoder, ZstdStreamEncoder } from './zstd.stream.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** 4 KiB pages of random data, each behind an 8-byte header, as QEMU's stream carries them. */
function pages(count: number, seed: Buffer[] = []): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const header = Buffer.alloc(8);
    header.writeUInt32BE(i * 4096 + 8, 4);
    parts.push(header, seed[i % Math.max(1, seed.length)] ?? randomBytes(4096));
  }
  return Buffer.concat(parts);
}

describe('ZstdStreamEncoder / ZstdStreamDecoder', () => {
  it('carries chunks through one stream, each segment decoding once its predecessors have', async () => {
    const encoder = await ZstdStreamEncoder.create();
    const decoder = await ZstdStreamDecoder.create();
    const chunks = [Buffer.alloc(300 * KiB, 7), randomBytes(256 * KiB), Buffer.from('tail'), Buffer.alloc(0)];
    for (const chunk of chunks) {
      const segment = encoder.push(chunk);
      expect(decoder.pull(segment, chunk.length).equals(chunk)).toBe(true);
    }
    expect(encoder.bytesIn).toBe(chunks.reduce((n, c) => n + c.length, 0));
  });

  it('sends random pages seen megabytes earlier as references, which frame-by-frame zstd cannot', async () => {
    // 8 MiB of distinct random pages, then the same pages again (a freed buffer holding a copy): the repeat
    // is far beyond one frame, so only the stream's long-distance matching finds it.
    const distinct = Array.from({ length: 2048 }, () => randomBytes(4096));
    const stream = Buffer.concat([pages(2048, distinct), pages(2048, distinct)]);
    const encoder = await ZstdStreamEncoder.create();
    const decoder = await ZstdStreamDecoder.create();
    const zstd = await Zstd.load();
    let streamBytes = 0;
    let frameBytes = 0;
    for (let at = 0; at < stream.length; at += 256 * KiB) {
      const chunk = stream.subarray(at, at + 256 * KiB);
      const segment = encoder.push(chunk);
      streamBytes += segment.length;
      frameBytes += Math.min(chunk.length, zstd.compress(chunk).length);
      expect(decoder.pull(segment, chunk.length).equals(chunk)).toBe(true);
    }
    expect(frameBytes).toBeGreaterThan(stream.length * 0.95);
    expect(streamBytes).toBeLessThan(stream.length * 0.55);
    expect(streamBytes).toBeGreaterThan(8 * MiB);
  });

  it('refuses a segment out of order, then every later one', async () => {
    const encoder = await ZstdStreamEncoder.create();
    const decoder = await ZstdStreamDecoder.create();
    const first = Buffer.alloc(64 * KiB, 1);
    const second = Buffer.concat([first, Buffer.alloc(64 * KiB, 2)]);
    const a = encoder.push(first);
    const b = encoder.push(second);
    // `b` refers back into `a`: decoded first, it cannot give the right bytes.
    expect(() => decoder.pull(b, second.length)).toThrow(ZstdError);
    expect(() => decoder.pull(a, first.length)).toThrow(/broke at an earlier segment/);
  });

  it('says so when a segment decodes to another length than its frame claims', async () => {
    const encoder = await ZstdStreamEncoder.create();
    const decoder = await ZstdStreamDecoder.create();
    const segment = encoder.push(Buffer.alloc(10 * KiB, 3));
    let caught: unknown;
    try {
      decoder.pull(segment, 9 * KiB);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ZstdError);
    expect((caught as ZstdError).code).toBe(ErrorCode.RecordCorrupt);
  });
});
