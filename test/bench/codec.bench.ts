/**
 * Codec benchmark: MB/s of each stage and of the whole encoder on a mixed data set.
 *
 *   npm run build && node dist/test/bench/codec.bench.js [--json] [--quick]
 *
 * Prints a table; with --json, also one JSON object on the last line. --quick shortens every
 * measurement (smoke test). One core, runs in well under a minute.
 */
import { createHash, hash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { crc32 } from 'node:zlib';
import {
  BatchCompressor,
  BufferTarget,
  CODEC_OFF,
  ChunkDecoder,
  ChunkEncoder,
  type ChunkEncoderOptions,
  DEFAULT_MIX,
  PageGenerator,
  PageKind,
  Zstd,
  ZstdBackendName,
  addStats,
  createRng,
  emptyStats,
  hashPage,
  isZero,
  mixedDataset,
  mutatePage,
  xbzrleApply,
  xbzrleEncode,
} from '@wanmig/codec';
import { PAGE_SIZE } from '@wanmig/protocol';

interface Row {
  name: string;
  mbps: number;
  note?: string;
}

const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');
const budgetMs = quick ? 60 : 400;
const rows: Row[] = [];
const extra: Record<string, unknown> = {};

/** Runs `fn` (which processes `bytes` bytes) repeatedly for about `budgetMs`, after a warm-up; returns MB/s. */
function measure(name: string, bytes: number, fn: () => void, note?: string): number {
  for (let i = 0; i < 3; i++) fn();
  let runs = 0;
  const t0 = performance.now();
  let elapsed = 0;
  do {
    fn();
    runs++;
    elapsed = performance.now() - t0;
  } while (elapsed < budgetMs);
  const mbps = (bytes * runs) / (elapsed / 1000) / 1e6;
  rows.push({ name, mbps, note });
  return mbps;
}

function pages(kind: PageKind, count: number, seed: number): Buffer[] {
  const gen = new PageGenerator(createRng(seed));
  return Array.from({ length: count }, () => gen.page(kind));
}

/** 40 % zero, 30 % random, 30 % text pages in one buffer: the page-like data of GROUND.md. */
function pageLike(bytes: number, seed: number): Buffer {
  const chunks = [...mixedDataset({ size: bytes, seed, mix: { zero: 0.4, random: 0.3, text: 0.3 } })];
  return Buffer.concat(chunks.map((c) => c.data));
}

function zeroDetection(): void {
  const zeros = pages(PageKind.Zero, 1024, 1);
  const random = pages(PageKind.Random, 1024, 2);
  const bytes = 1024 * PAGE_SIZE;
  measure('zero detect: isZero, zero pages', bytes, () => zeros.forEach((p) => isZero(p)));
  measure('zero detect: isZero, random pages', bytes, () => random.forEach((p) => isZero(p)), 'exits at byte 0');
  const u32 = (p: Buffer): boolean => {
    const w = new Uint32Array(p.buffer, p.byteOffset, p.length >>> 2);
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false;
    return true;
  };
  const big64 = (p: Buffer): boolean => {
    const w = new BigUint64Array(p.buffer, p.byteOffset, p.length >>> 3);
    for (let i = 0; i < w.length; i++) if (w[i] !== 0n) return false;
    return true;
  };
  measure('zero detect: Uint32Array loop', bytes, () => zeros.forEach((p) => u32(p)), 'alternative, not used');
  measure('zero detect: BigUint64Array loop', bytes, () => zeros.forEach((p) => big64(p)), 'alternative, not used');
}

function hashing(): void {
  const text = pages(PageKind.Text, 1024, 3);
  const bytes = 1024 * PAGE_SIZE;
  measure('hash: hashPage (sha1, crypto.hash)', bytes, () => text.forEach((p) => hashPage(p)), 'dedup key');
  measure('hash: createHash sha1', bytes, () => text.forEach((p) => createHash('sha1').update(p).digest()));
  measure('hash: crypto.hash md5', bytes, () => text.forEach((p) => hash('md5', p, 'base64')));
  measure('hash: crc32 (node:zlib)', bytes, () => text.forEach((p) => crc32(p)), 'record CRC');
}

function xbzrle(): void {
  const rng = createRng(4);
  const gen = new PageGenerator(rng);
  const bases = Array.from({ length: 512 }, (_, i) => gen.page(i % 2 ? PageKind.Text : PageKind.Random));
  const nexts = bases.map((b) => mutatePage(rng, b, 0.05));
  const out = new Uint8Array(PAGE_SIZE);
  const deltas = bases.map((b, i) => Buffer.from(out.subarray(0, xbzrleEncode(b, nexts[i], out))));
  const bytes = bases.length * PAGE_SIZE;
  const mean = deltas.reduce((s, d) => s + d.length, 0) / deltas.length;
  measure(
    'xbzrle encode, 5 % changed',
    bytes,
    () => bases.forEach((b, i) => xbzrleEncode(b, nexts[i], out)),
    `delta ≈ ${Math.round(mean)} B/page`,
  );
  const scattered = bases.map((b) => mutatePage(rng, b, 0.05, 1));
  measure('xbzrle encode, 5 % scattered bytes', bytes, () =>
    bases.forEach((b, i) => xbzrleEncode(b, scattered[i], out)),
  );
  const page = Buffer.alloc(PAGE_SIZE);
  measure('xbzrle decode, 5 % changed', bytes, () =>
    bases.forEach((b, i) => {
      b.copy(page);
      xbzrleApply(deltas[i], page);
    }),
  );
  const random = pages(PageKind.Random, 512, 5);
  measure('xbzrle encode, random (gives up)', bytes, () =>
    bases.forEach((b, i) => xbzrleEncode(b, random[i], out, 2867)),
  );
  extra.xbzrleDeltaBytesPerPage = Math.round(mean);
}

async function zstd(): Promise<void> {
  const data = pageLike(4 * 1024 * 1024, 6);
  const batches = Array.from({ length: 16 }, (_, i) => data.subarray(i * 256 * 1024, (i + 1) * 256 * 1024));
  const backends: ZstdBackendName[] = [ZstdBackendName.Wasm];
  if (await Zstd.napiAvailable()) backends.unshift(ZstdBackendName.Napi);
  else extra.zstdNapi = 'unavailable';
  for (const backend of backends) {
    const z = await Zstd.load({ backend });
    for (const level of [1, 3]) {
      const packed = batches.map((b) => z.compress(b, level));
      const ratio = data.length / packed.reduce((s, p) => s + p.length, 0);
      measure(
        `zstd ${backend} L${level} compress`,
        data.length,
        () => batches.forEach((b) => z.compress(b, level)),
        `ratio ${ratio.toFixed(2)}`,
      );
      measure(`zstd ${backend} L${level} decompress`, data.length, () => packed.forEach((p) => z.decompress(p)));
    }
  }
}

async function encoder(): Promise<void> {
  const size = quick ? 16 * 1024 * 1024 : 64 * 1024 * 1024;
  const chunks = [...mixedDataset({ size, seed: 7, mix: DEFAULT_MIX })];
  const zstd = await Zstd.load();
  const run = (
    options: ChunkEncoderOptions,
    compress: boolean,
  ): { wire: number; stats: ReturnType<typeof emptyStats> } => {
    const enc = new ChunkEncoder({ ...options, compressor: compress ? new BatchCompressor({ zstd }) : undefined });
    const stats = emptyStats();
    let wire = 0;
    for (const c of chunks) {
      enc.encode(c.offset, c.data);
      if (enc.pendingBytes >= 512 * 1024) {
        const batch = enc.takeBatch();
        addStats(stats, batch.stats);
        wire += enc.maybeCompress(batch).payload.length;
      }
    }
    const last = enc.takeBatch();
    addStats(stats, last.stats);
    wire += enc.maybeCompress(last).payload.length;
    return { wire, stats };
  };
  const report = (name: string, options: ChunkEncoderOptions, compress: boolean): void => {
    const { wire, stats } = run(options, compress);
    const ratio = size / wire;
    const mix = Object.entries(stats.byEncoding)
      .map(([k, v]) => `${k} ${Math.round((100 * v.rawBytes) / size)}%`)
      .join(', ');
    measure(name, size, () => run(options, compress), `ratio ${ratio.toFixed(2)} (${mix})`);
    extra[`ratio: ${name}`] = Number(ratio.toFixed(3));
  };
  report('encoder, codec off, no zstd', CODEC_OFF, false);
  report('encoder, codec off + zstd', CODEC_OFF, true);
  report('encoder, full, no zstd', {}, false);
  report('encoder, full + zstd', {}, true);

  // A second round over the same pages with 5 % of bytes changed: the XBZRLE path end to end.
  const rng = createRng(8);
  const enc = new ChunkEncoder({ compressor: new BatchCompressor({ zstd }) });
  for (const c of chunks) enc.encode(c.offset, c.data);
  enc.takeBatch();
  const dirty = chunks.map((c) => ({
    offset: c.offset,
    data: isZero(c.data) ? c.data : mutatePage(rng, c.data, 0.05),
  }));
  const t0 = performance.now();
  let wire = 0;
  const stats = emptyStats();
  for (const c of dirty) {
    enc.encode(c.offset, c.data);
    if (enc.pendingBytes >= 512 * 1024) {
      const b = enc.takeBatch();
      addStats(stats, b.stats);
      wire += enc.maybeCompress(b).payload.length;
    }
  }
  const b = enc.takeBatch();
  addStats(stats, b.stats);
  wire += enc.maybeCompress(b).payload.length;
  const secs = (performance.now() - t0) / 1000;
  rows.push({
    name: 'encoder, re-send 5 % changed + zstd',
    mbps: size / secs / 1e6,
    note: `ratio ${(size / wire).toFixed(2)}, xbzrle ${Math.round((100 * stats.byEncoding.xbzrle.rawBytes) / size)}% of bytes`,
  });

  // Decode side: apply the full + zstd stream into memory.
  const full = new ChunkEncoder({ compressor: new BatchCompressor({ zstd }) });
  const payloads: { payload: Buffer; zstd: boolean }[] = [];
  for (const c of chunks) {
    full.encode(c.offset, c.data);
    if (full.pendingBytes >= 512 * 1024) payloads.push(full.maybeCompress(full.takeBatch()));
  }
  payloads.push(full.maybeCompress(full.takeBatch()));
  const target = BufferTarget.ofSize(size);
  const decoder = new ChunkDecoder({ targetSize: size, zstd });
  const t1 = performance.now();
  for (const p of payloads) await decoder.apply(p.payload, target, { zstd: p.zstd });
  rows.push({ name: 'decoder, full + zstd, into memory', mbps: size / ((performance.now() - t1) / 1000) / 1e6 });
  const source = Buffer.concat(chunks.map((c) => c.data));
  if (!source.equals(target.buffer)) throw new Error('decoded data differs from the source');
}

async function main(): Promise<void> {
  const t0 = performance.now();
  zeroDetection();
  hashing();
  xbzrle();
  await zstd();
  await encoder();
  const zstdBackend = (await Zstd.load()).backend;
  console.log(
    `codec benchmark — Node ${process.version}, zstd default backend ${zstdBackend}${quick ? ', quick' : ''}`,
  );
  const width = Math.max(...rows.map((r) => r.name.length));
  for (const r of rows) {
    console.log(`${r.name.padEnd(width)}  ${r.mbps.toFixed(0).padStart(7)} MB/s  ${r.note ?? ''}`);
  }
  console.log(`(${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  if (json) {
    const results = Object.fromEntries(rows.map((r) => [r.name, { mbps: Number(r.mbps.toFixed(1)), note: r.note }]));
    console.log(JSON.stringify({ bench: 'codec', node: process.version, zstdBackend, results, ...extra }));
  }
}

await main();
