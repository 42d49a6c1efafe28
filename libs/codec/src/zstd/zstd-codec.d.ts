/** The part of `zstd-codec` (Emscripten build of zstd, no typings of its own) that wanmig uses. */
declare module 'zstd-codec' {
  export interface ZstdSimple {
    /** A zstd frame with its content size, or null on failure. */
    compress(content: Uint8Array, level?: number): Uint8Array | null;
    /** The content of a frame that records its size, or null on failure. */
    decompress(compressed: Uint8Array): Uint8Array | null;
  }
  export interface ZstdBinding {
    Simple: new () => ZstdSimple;
  }
  export const ZstdCodec: { run(callback: (zstd: ZstdBinding) => void): void };
}
