import type * as ZstdNapi from 'zstd-napi';
import { type ZstdBackend, ZstdBackendName } from './zstd.backend.js';

/**
 * The native backend, or undefined when `zstd-napi` is not installed or its binary does not load
 * (it is an optional dependency: a machine without a compiler skips it).
 */
export async function loadNapiBackend(): Promise<ZstdBackend | undefined> {
  let napi: typeof ZstdNapi;
  try {
    napi = await import('zstd-napi');
  } catch {
    return undefined;
  }
  // One compressor per level: changing parameters on a shared context costs more than a context.
  const compressors = new Map<number, InstanceType<typeof napi.Compressor>>();
  const decompressor = new napi.Decompressor();
  return {
    name: ZstdBackendName.Napi,
    compress(data, level) {
      let c = compressors.get(level);
      if (!c) {
        c = new napi.Compressor();
        c.setParameters({ compressionLevel: level, contentSizeFlag: true });
        compressors.set(level, c);
      }
      return c.compress(data);
    },
    decompress(data, contentSize) {
      const out = decompressor.decompress(data);
      if (out.length !== contentSize)
        throw new Error(`frame decoded to ${out.length} bytes, header says ${contentSize}`);
      return out;
    },
  };
}
