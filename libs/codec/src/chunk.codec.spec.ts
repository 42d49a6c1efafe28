import { crc32 } from 'node:zlib';
import { ErrorCode, PAGE_SIZE } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { ChunkDecoder } from './chunk.decoder.js';
import { CODEC_OFF, ChunkEncoder, type ChunkEncoderOptions } from './chunk.encoder.js';
import { BufferTarget, type ChunkTarget } from './chunk.target.js';
import { PageGenerator, PageKind, mutatePage } from './dataset/mixed.dataset.js';
import { createRng, type Rng } from './dataset/seeded.rng.js';
import { BaseMismatchError, CodecError, RecordCorruptError } from './errors.js';
import { BatchCompressor } from './zstd/batch.compressor.js';
import { Zstd } from './zstd/zstd.facade.js';

const zstd = await Zstd.load();
const PAGES = 96;
/** Odd size: the last page of the space is partial. */
const SIZE = PAGES * PAGE_SIZE + 1000;

interface Write {
  offset: number;
  data: Buffer;
}

/** A seeded sequence of writes over the space: zero, duplicate, text, random and lightly modified pages. */
function* writes(rng: Rng, truth: Buffer, count: number): Generator<Write> {
  const gen = new PageGenerator(rng);
  for (let i = 0; i < count; i++) {
    const unaligned = rng.float() < 0.1;
    const pages = 1 + rng.int(8);
    let offset = rng.int(PAGES - pages + 1) * PAGE_SIZE;
    let length = pages * PAGE_SIZE;
    if (unaligned) {
      offset += rng.int(PAGE_SIZE);
      length = Math.min(1 + rng.int(3 * PAGE_SIZE), SIZE - offset);
    } else if (rng.float() < 0.05) {
      offset = PAGES * PAGE_SIZE; // the partial tail page
      length = 1000;
    }
    const data = Buffer.alloc(length);
    const kind = rng.float();
    for (let at = 0; at < length; at += PAGE_SIZE) {
      const n = Math.min(PAGE_SIZE, length - at);
      let page: Buffer;
      if (kind < 0.2) page = Buffer.alloc(PAGE_SIZE);
      else if (kind < 0.4) {
        const from = rng.int(PAGES) * PAGE_SIZE; // a copy of a page the receiver should hold
        page = Buffer.from(truth.subarray(from, from + PAGE_SIZE));
      } else if (kind < 0.7) page = mutatePage(rng, truth.subarray(offset + at, offset + at + n), 0.03);
      else page = gen.page(rng.float() < 0.5 ? PageKind.Text : PageKind.Random);
      page.copy(data, at, 0, n);
    }
    data.copy(truth, offset);
    yield { offset, data };
  }
}

interface Outcome {
  target: Buffer;
  truth: Buffer;
  counts: Record<string, number>;
}

async function transfer(seed: number, options: ChunkEncoderOptions, target?: ChunkTarget): Promise<Outcome> {
  const rng = createRng(seed);
  const truth = Buffer.alloc(SIZE);
  const memory = BufferTarget.ofSize(SIZE);
  const encoder = new ChunkEncoder({ compressor: new BatchCompressor({ zstd }), ...options });
  const decoder = new ChunkDecoder({ targetSize: SIZE, zstd });
  const counts: Record<string, number> = { raw: 0, zero: 0, ref: 0, xbzrle: 0, zstd: 0 };
  const flush = async (): Promise<void> => {
    const batch = encoder.takeBatch();
    expect(batch.stats.encodedBytes).toBe(batch.records.length);
    for (const [name, s] of Object.entries(batch.stats.byEncoding)) counts[name] += s.pages;
    const { payload, zstd: packed } = encoder.maybeCompress(batch);
    if (packed) counts.zstd++;
    const result = await decoder.apply(payload, target ?? memory, { zstd: packed });
    expect(result.bytes).toBe(batch.stats.rawBytes);
  };
  for (const w of writes(rng, truth, 400)) {
    encoder.encode(w.offset, w.data);
    if (rng.float() < 0.15) await flush();
  }
  await flush();
  return { target: memory.buffer, truth, counts };
}

describe('chunk encoder -> maybeCompress -> decoder', () => {
  it.each([1, 2, 3, 4, 5])('reproduces the source byte for byte (seed %i)', async (seed) => {
    const { target, truth, counts } = await transfer(seed, { dedupEntries: 64, xbzrleCacheBytes: 32 * PAGE_SIZE });
    expect(target.equals(truth)).toBe(true);
    for (const name of ['raw', 'zero', 'ref', 'xbzrle', 'zstd']) expect(counts[name], name).toBeGreaterThan(0);
  });

  it.each<[string, ChunkEncoderOptions]>([
    ['codec off', CODEC_OFF],
    ['zero only', { dedup: false, xbzrle: false }],
    ['dedup only', { zero: false, xbzrle: false }],
    ['xbzrle only', { zero: false, dedup: false }],
    ['tiny caches', { dedupEntries: 1, xbzrleCacheBytes: PAGE_SIZE }],
    ['no compressor', { compressor: undefined }],
  ])('reproduces the source with %s', async (_, options) => {
    const { target, truth, counts } = await transfer(9, options);
    expect(target.equals(truth)).toBe(true);
    if (options === CODEC_OFF) expect(counts.zero + counts.ref + counts.xbzrle).toBe(0);
  });

  it('applies through an asynchronous target without zero()', async () => {
    const memory = BufferTarget.ofSize(SIZE);
    const slow: ChunkTarget = {
      read: async (o, l) => {
        await Promise.resolve();
        return Buffer.from(memory.read(o, l));
      },
      write: async (o, d) => {
        await Promise.resolve();
        memory.write(o, d);
      },
    };
    const { truth } = await transfer(21, {}, slow);
    expect(memory.buffer.equals(truth)).toBe(true);
  });
});

/** A batch over a target that already holds `base` at page 1: one Ref (page 1 -> 0) and one Xbzrle (page 1). */
function refAndDelta(): { base: Buffer; encoder: ChunkEncoder; target: BufferTarget; records: Buffer } {
  const rng = createRng(77);
  const base = new PageGenerator(rng).page(PageKind.Text);
  const encoder = new ChunkEncoder();
  const target = BufferTarget.ofSize(4 * PAGE_SIZE);
  encoder.encode(PAGE_SIZE, base);
  target.write(PAGE_SIZE, base);
  encoder.takeBatch();
  encoder.encode(0, base);
  encoder.encode(PAGE_SIZE, mutatePage(rng, base, 0.02));
  const records = encoder.takeBatch().records;
  return { base, encoder, target, records };
}

describe('chunk decoder checks', () => {
  it('rejects truncated batches without writing anything', async () => {
    const { target, records } = refAndDelta();
    const before = Buffer.from(target.buffer);
    const decoder = new ChunkDecoder({ targetSize: target.size });
    for (const cut of [1, 15, 20, records.length - 1]) {
      await expect(decoder.apply(records.subarray(0, cut), target)).rejects.toBeInstanceOf(RecordCorruptError);
      expect(target.buffer.equals(before)).toBe(true);
    }
  });

  it('rejects a batch reaching past the target', async () => {
    const { target, records } = refAndDelta();
    const decoder = new ChunkDecoder({ targetSize: 2 * PAGE_SIZE - 1 });
    await expect(decoder.apply(records, target)).rejects.toMatchObject({ code: ErrorCode.FrameOutOfRange });
  });

  it('refuses a Ref or delta whose source or base is not what the sender saw', async () => {
    const { target, records } = refAndDelta();
    target.buffer.fill(0x55, PAGE_SIZE, 2 * PAGE_SIZE);
    const before = Buffer.from(target.buffer);
    const err = await new ChunkDecoder({ targetSize: target.size }).apply(records, target).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BaseMismatchError);
    expect(err).toMatchObject({ code: ErrorCode.BaseMismatch, recordIndex: 0, offset: 0 });
    expect(target.buffer.equals(before)).toBe(true);
  });

  it('refuses a delta whose result fails its CRC and leaves the page intact', async () => {
    const { target, records } = refAndDelta();
    const decoder = new ChunkDecoder({ targetSize: target.size });
    const parsed = decoder.parse(records);
    const delta = parsed[1];
    if (delta.encoding !== 3) throw new Error('expected an xbzrle record');
    const bad = Buffer.from(records);
    bad[delta.delta.byteOffset - records.byteOffset + delta.delta.length - 1] ^= 0x01; // a literal byte
    const before = Buffer.from(target.buffer);
    const err = await decoder.apply(bad, target).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RecordCorruptError);
    expect((err as CodecError).recordIndex).toBe(1);
    expect(target.buffer.subarray(PAGE_SIZE).equals(before.subarray(PAGE_SIZE))).toBe(true);
  });

  it('rejects a corrupt zstd payload', async () => {
    const decoder = new ChunkDecoder({ targetSize: 1 << 20, zstd });
    const frame = zstd.compress(Buffer.alloc(100_000, 3));
    await expect(
      decoder.apply(frame.subarray(0, frame.length - 4), BufferTarget.ofSize(1 << 20), { zstd: true }),
    ).rejects.toMatchObject({
      code: ErrorCode.RecordCorrupt,
    });
  });

  it('survives replays: a whole batch again, or again after a crash part way through', async () => {
    const { base, target, records } = refAndDelta();
    const decoder = new ChunkDecoder({ targetSize: target.size });
    await decoder.apply(records, target);
    const done = Buffer.from(target.buffer);
    expect(target.buffer.subarray(0, PAGE_SIZE).equals(base)).toBe(true);
    expect((await decoder.apply(records, target)).replayed).toBeGreaterThan(0);
    expect(target.buffer.equals(done)).toBe(true);

    // A batch that references a page, diffs it, then overwrites it: every replay must still succeed,
    // though by then the Ref's source and the delta's base are gone.
    const rng = createRng(3);
    const gen = new PageGenerator(rng);
    const [a, b] = [gen.page(PageKind.Random), gen.page(PageKind.Random)];
    const encoder = new ChunkEncoder();
    encoder.encode(0, a);
    const first = encoder.takeBatch().records;
    encoder.encode(PAGE_SIZE, a); // Ref to page 0
    encoder.encode(0, mutatePage(rng, a, 0.01)); // Xbzrle on page 0
    encoder.encode(0, b); // page 0 overwritten
    const second = encoder.takeBatch();
    expect(second.stats.byEncoding).toMatchObject({ ref: { pages: 1 }, xbzrle: { pages: 1 }, raw: { pages: 1 } });
    const fresh = BufferTarget.ofSize(2 * PAGE_SIZE);
    await decoder.apply(first, fresh);
    await decoder.apply(second.records, fresh);
    const expected = Buffer.from(fresh.buffer);
    expect(crc32(expected.subarray(PAGE_SIZE))).toBe(crc32(a));
    expect((await decoder.apply(second.records, fresh)).replayed).toBe(2);
    expect(fresh.buffer.equals(expected)).toBe(true);
    for (let crashAfter = 0; crashAfter < 3; crashAfter++) {
      const t = BufferTarget.ofSize(2 * PAGE_SIZE);
      await decoder.apply(first, t);
      let writes = 0;
      const crashing: ChunkTarget = {
        read: (o, l) => t.read(o, l),
        write: (o, d) => {
          if (writes++ === crashAfter) throw new Error('crash');
          t.write(o, d);
        },
      };
      await expect(decoder.apply(second.records, crashing)).rejects.toThrow('crash');
      await decoder.apply(second.records, t);
      expect(t.buffer.equals(expected), `crash after ${crashAfter} writes`).toBe(true);
    }
  });
});

describe('chunk encoder', () => {
  it('merges zero pages into one extent record', () => {
    const encoder = new ChunkEncoder();
    encoder.encode(0, Buffer.alloc(1024 * 1024));
    encoder.encode(1024 * 1024, Buffer.alloc(PAGE_SIZE));
    const batch = encoder.takeBatch();
    expect(batch.stats.records).toBe(1);
    expect(batch.records.length).toBe(16);
    expect(batch.stats.byEncoding.zero.pages).toBe(257);
    expect(batch.span).toEqual({ offset: 0, end: 1024 * 1024 + PAGE_SIZE });
  });

  it('never references a page a later record overwrote', async () => {
    const rng = createRng(5);
    const gen = new PageGenerator(rng);
    const a = gen.page(PageKind.Random);
    const encoder = new ChunkEncoder();
    encoder.encode(0, a);
    encoder.encode(0, gen.page(PageKind.Random)); // page 0 no longer holds `a`
    encoder.encode(PAGE_SIZE, a); // must not be a Ref to page 0
    const batch = encoder.takeBatch();
    expect(batch.stats.byEncoding.ref.pages).toBe(0);
    encoder.encode(2 * PAGE_SIZE, a); // page 1 holds `a` now
    const next = encoder.takeBatch();
    expect(next.stats.byEncoding.ref.pages).toBe(1);
    const parsed = new ChunkDecoder({ targetSize: 3 * PAGE_SIZE }).parse(next.records);
    expect(parsed[0]).toMatchObject({ encoding: 2, source: PAGE_SIZE });
    const t = BufferTarget.ofSize(3 * PAGE_SIZE);
    await new ChunkDecoder({ targetSize: t.size }).apply(batch.records, t);
    await new ChunkDecoder({ targetSize: t.size }).apply(next.records, t);
    expect(t.read(2 * PAGE_SIZE, PAGE_SIZE).equals(a)).toBe(true);
  });

  it('falls back to raw when a delta would not save enough, and uses one when it does', () => {
    const rng = createRng(6);
    const gen = new PageGenerator(rng);
    const encoder = new ChunkEncoder({ dedup: false });
    const second = gen.page(PageKind.Random);
    encoder.encode(0, gen.page(PageKind.Random));
    encoder.encode(0, second);
    expect(encoder.takeBatch().stats.byEncoding).toMatchObject({ raw: { pages: 2 }, xbzrle: { pages: 0 } });
    encoder.encode(0, mutatePage(rng, second, 0.05));
    const batch = encoder.takeBatch();
    expect(batch.stats.byEncoding.xbzrle.pages).toBe(1);
    expect(batch.stats.byEncoding.xbzrle.encodedBytes).toBeLessThan(PAGE_SIZE * 0.3);
  });

  it('with xbzrleCacheFirstSend off, caches a page from its second send on', () => {
    const rng = createRng(7);
    const gen = new PageGenerator(rng);
    const encoder = new ChunkEncoder({ dedup: false, xbzrleCacheFirstSend: false });
    const first = gen.page(PageKind.Random);
    const second = mutatePage(rng, first, 0.05);
    encoder.encode(0, first);
    encoder.encode(0, second);
    expect(encoder.takeBatch().stats.byEncoding).toMatchObject({ raw: { pages: 2 }, xbzrle: { pages: 0 } });
    encoder.encode(0, mutatePage(rng, second, 0.05));
    expect(encoder.takeBatch().stats.byEncoding.xbzrle.pages).toBe(1);
  });

  it('forgets the receiver on reset and on forget()', () => {
    const page = new PageGenerator(createRng(8)).page(PageKind.Text);
    const encoder = new ChunkEncoder();
    encoder.encode(0, page);
    encoder.takeBatch();
    encoder.forget(0, 1);
    encoder.encode(PAGE_SIZE, page);
    expect(encoder.takeBatch().stats.byEncoding.raw.pages).toBe(1);
    encoder.reset();
    encoder.encode(2 * PAGE_SIZE, page);
    expect(encoder.pendingRecords).toBe(1);
    expect(encoder.takeBatch().stats.byEncoding.raw.pages).toBe(1);
  });

  it('refuses empty chunks and bad offsets', () => {
    const encoder = new ChunkEncoder();
    expect(() => encoder.encode(-1, Buffer.alloc(1))).toThrow(CodecError);
    expect(() => encoder.encode(0, Buffer.alloc(0))).toThrow(CodecError);
    expect(() => encoder.encode(2 ** 53, Buffer.alloc(1))).toThrow(CodecError);
  });

  it('stays within its documented worst case', () => {
    const encoder = new ChunkEncoder();
    const data = Buffer.alloc(3 * PAGE_SIZE + 100);
    createRng(1).fill(data);
    encoder.encode(100, data);
    expect(encoder.pendingBytes).toBeLessThanOrEqual(ChunkEncoder.maxEncodedBytes(data.length));
  });
});
