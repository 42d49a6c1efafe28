/** The two zstd implementations wanmig can use; both read and write standard zstd frames. */
export const ZstdBackendName = {
  /** Native binding to libzstd (optional dependency, built with node-gyp). */
  Napi: 'zstd-napi',
  /** Emscripten/WASM build of zstd: always available, about 2.5x slower. */
  Wasm: 'zstd-codec',
} as const;
export type ZstdBackendName = (typeof ZstdBackendName)[keyof typeof ZstdBackendName];

export interface ZstdBackend {
  readonly name: ZstdBackendName;
  /** One zstd frame that records its content size. Throws on failure. */
  compress(data: Uint8Array, level: number): Buffer;
  /** The content of one frame, whose header says `contentSize`; checked by the caller. Throws on failure. */
  decompress(data: Uint8Array, contentSize: number): Buffer;
}
