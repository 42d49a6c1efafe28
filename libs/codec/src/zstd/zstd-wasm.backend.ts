import { type ZstdSimple } from 'zstd-codec';
import { type ZstdBackend, ZstdBackendName } from './zstd.backend.js';

/** The WASM backend; `zstd-codec` instantiates its module asynchronously, once. */
export async function loadWasmBackend(): Promise<ZstdBackend> {
  const { ZstdCodec } = await import('zstd-codec');
  const simple = await new Promise<ZstdSimple>((resolve, reject) => {
    try {
      ZstdCodec.run((zstd) => resolve(new zstd.Simple()));
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
    }
  });
  return {
    name: ZstdBackendName.Wasm,
    compress(data, level) {
      // zstd-codec treats level 0 as "default" (3), as libzstd does.
      const out = simple.compress(data, level);
      if (!out) throw new Error('zstd-codec failed to compress');
      return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    },
    decompress(data, contentSize) {
      // zstd-codec returns null for an empty frame, which is not an error here.
      if (contentSize === 0) return Buffer.alloc(0);
      const out = simple.decompress(data);
      if (!out) throw new Error('zstd-codec failed to decompress');
      if (out.length !== contentSize)
        throw new Error(`frame decoded to ${out.length} bytes, header says ${contentSize}`);
      return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    },
  };
}
