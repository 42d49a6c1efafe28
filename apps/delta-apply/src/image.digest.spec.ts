import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, MAX_DIGEST_REGIONS } from '@wanmig/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestRegions } from '@wanmig/stream';
import { digestRange, maxDigestRegions } from './image.digest.js';

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const expected = (data: Buffer, regionBytes: number, offset: number, length: number): string[] => {
  const out: string[] = [];
  for (let at = offset; at < offset + length; at += regionBytes) {
    out.push(sha(data.subarray(at, Math.min(offset + length, at + regionBytes))));
  }
  return out;
};

describe('image digests', () => {
  let dir: string;
  let path: string;
  const data = randomBytes(3 * 1024 * 1024 + 777);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'digest-'));
    path = join(dir, 'disk.img');
    await writeFile(path, data);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes each region over the whole image, the last one short', async () => {
    const range = digestRange(data.length, { regionBytes: 1024 * 1024 });
    expect(range).toEqual({ offset: 0, length: data.length, regionBytes: 1024 * 1024 });
    expect(await digestRegions(path, range)).toEqual(expected(data, 1024 * 1024, 0, data.length));
  });

  it('handles regions that straddle reads, sub-ranges and small read sizes', async () => {
    for (const [regionBytes, offset, length, readBytes] of [
      [12_288, 5, 100_000, 8192],
      [4096, 4096 * 3, 4096 * 5 + 1, 3000],
      [1 << 20, 0, data.length, 1 << 16],
    ]) {
      const range = digestRange(data.length, { regionBytes, offset, length });
      expect(await digestRegions(path, range, readBytes)).toEqual(expected(data, regionBytes, offset, length));
    }
  });

  it('gives no digests for an empty range', async () => {
    expect(await digestRegions(path, digestRange(data.length, { regionBytes: 4096, offset: data.length }))).toEqual([]);
  });

  it('refuses ranges outside the image and too many regions', () => {
    const bad = (request: { offset?: number; length?: number; regionBytes: number }) => () =>
      digestRange(1 << 30, request);
    expect(bad({ regionBytes: 4096, offset: (1 << 30) + 1 })).toThrow(/offset/);
    expect(bad({ regionBytes: 4096, offset: 4096, length: 1 << 30 })).toThrow(/length/);
    expect(bad({ regionBytes: 4096 })).toThrow(new RegExp(`at most ${MAX_DIGEST_REGIONS}`));
    expect(bad({ regionBytes: 4096 })).toThrow(expect.objectContaining({ code: ErrorCode.InvalidRequest }));
    expect(digestRange(1 << 30, { regionBytes: (1 << 30) / MAX_DIGEST_REGIONS }).length).toBe(1 << 30);
  });

  it('keeps a reply within the server max_payload', () => {
    expect(maxDigestRegions(8 * 1024 * 1024)).toBe(MAX_DIGEST_REGIONS);
    const fit = maxDigestRegions(1024 * 1024);
    expect(fit).toBeLessThan(MAX_DIGEST_REGIONS);
    expect(fit * 67 + 1024).toBeLessThanOrEqual(1024 * 1024);
    expect(() => digestRange(1 << 30, { regionBytes: 4096 * 64 }, fit)).not.toThrow();
    expect(() => digestRange(1 << 30, { regionBytes: 4096 * 4 }, fit)).toThrow(/per reply/);
  });
});
