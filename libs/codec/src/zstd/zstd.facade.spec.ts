import { ErrorCode } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { mixedDataset } from '../dataset/mixed.dataset.js';
import { ZstdError } from '../errors.js';
import { ZstdBackendName } from './zstd.backend.js';
import { zstdContentSize } from './zstd-frame.header.js';
import { Zstd } from './zstd.facade.js';

const napiAvailable = await Zstd.napiAvailable();
const sample = Buffer.concat([...mixedDataset({ size: 512 * 1024, seed: 3 })].map((c) => c.data));

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ZstdError);
    return (err as ZstdError).code;
  }
  return undefined;
}

describe('Zstd', () => {
  it('loads the native backend when it is there, WASM otherwise', async () => {
    const zstd = await Zstd.load();
    expect(zstd.backend).toBe(napiAvailable ? ZstdBackendName.Napi : ZstdBackendName.Wasm);
    expect(await Zstd.load()).toBe(zstd);
  });

  // Where the native module does not load, only WASM is there to test (the test above checks which loaded).
  const backends = napiAvailable ? [ZstdBackendName.Napi, ZstdBackendName.Wasm] : [ZstdBackendName.Wasm];

  it.each(backends)('round-trips with %s at levels 1, 3 and 19', async (name) => {
    const zstd = await Zstd.load({ backend: name });
    for (const level of [1, 3, 19]) {
      const frame = zstd.compress(sample, level);
      expect(frame.length).toBeLessThan(sample.length / 2);
      expect(zstdContentSize(frame)).toBe(sample.length);
      expect(zstd.decompress(frame).equals(sample)).toBe(true);
    }
    expect(zstd.decompress(zstd.compress(Buffer.alloc(0))).length).toBe(0);
    expect(zstd.withLevel(1).level).toBe(1);
  });

  it.skipIf(!napiAvailable)('reads frames across backends: napi -> zstd-codec and zstd-codec -> napi', async () => {
    const napi = await Zstd.load({ backend: ZstdBackendName.Napi });
    const wasm = await Zstd.load({ backend: ZstdBackendName.Wasm });
    for (const level of [1, 3]) {
      expect(wasm.decompress(napi.compress(sample, level)).equals(sample)).toBe(true);
      expect(napi.decompress(wasm.compress(sample, level)).equals(sample)).toBe(true);
    }
  });

  it('rejects garbage, truncated frames and frames that expand past the limit', async () => {
    const zstd = await Zstd.load();
    const frame = zstd.compress(sample);
    expect(codeOf(() => zstd.decompress(Buffer.from('definitely not zstd')))).toBe(ErrorCode.RecordCorrupt);
    expect(codeOf(() => zstd.decompress(frame.subarray(0, frame.length - 10)))).toBe(ErrorCode.RecordCorrupt);
    expect(codeOf(() => zstd.decompress(frame, sample.length - 1))).toBe(ErrorCode.RecordCorrupt);
    const flipped = Buffer.from(frame);
    flipped[flipped.length >> 1] ^= 0xff;
    const result = (() => {
      try {
        return zstd.decompress(flipped);
      } catch (err) {
        return err;
      }
    })();
    // A flipped byte may still decode (zstd frames carry no checksum by default), but never silently to the same bytes.
    if (Buffer.isBuffer(result)) expect(result.equals(sample)).toBe(false);
    else expect(result).toBeInstanceOf(ZstdError);
  });

  it('refuses a forced native backend that is absent, and bad levels', async () => {
    if (!napiAvailable) await expect(Zstd.load({ backend: ZstdBackendName.Napi })).rejects.toBeInstanceOf(ZstdError);
    const zstd = await Zstd.load();
    expect(codeOf(() => zstd.compress(sample, 99))).toBe(ErrorCode.InvalidRequest);
  });
});

describe('zstdContentSize', () => {
  it('reads every content-size field width', async () => {
    const zstd = await Zstd.load({ backend: ZstdBackendName.Wasm });
    for (const size of [0, 1, 255, 256, 300, 65_791, 65_792, 1 << 20]) {
      expect(zstdContentSize(zstd.compress(Buffer.alloc(size, 1)))).toBe(size);
    }
    expect(zstdContentSize(Buffer.from([1, 2, 3]))).toBeUndefined();
  });
});
