import { ErrorCode } from '@wanmig/protocol';
import { ZstdError } from '../errors.js';
import { ZstdBackendName } from './zstd.backend.js';

/** zstd's window for a stream: 128 MiB, the most a decoder accepts without being told (ZSTD_WINDOWLOG_LIMIT_DEFAULT). */
export const ZSTD_STREAM_WINDOW_LOG = 27;
export const ZSTD_STREAM_LEVEL = 3;

export interface ZstdStreamOptions {
  level?: number;
  /** log2 of the window the encoder may refer back into (default ZSTD_STREAM_WINDOW_LOG). */
  windowLog?: number;
  /** Long-distance matching (default on): finds repeats anywhere in the window, not only nearby. */
  longDistance?: boolean;
}

/** The parts of zstd-napi's low-level binding the stream codec needs. */
interface NapiBinding {
  CCtx: new () => {
    setParameter(param: number, value: number): void;
    compressStream2(dst: Uint8Array, src: Uint8Array, endOp: number): [number, number, number];
  };
  DCtx: new () => {
    setParameter(param: number, value: number): void;
    decompressStream(dst: Uint8Array, src: Uint8Array): [number, number, number];
  };
  CParameter: Record<'compressionLevel' | 'windowLog' | 'enableLongDistanceMatching', number>;
  DParameter: Record<'windowLogMax', number>;
  EndDirective: Record<'flush', number>;
  compressBound(size: number): number;
}

const EMPTY = new Uint8Array(0);

let binding: Promise<NapiBinding | undefined> | undefined;

/** zstd-napi's binding, or undefined where the native module does not load (the WASM build has no streaming). */
function loadBinding(): Promise<NapiBinding | undefined> {
  // The CommonJS binding arrives as the default export; typed locally, only the calls used here.
  binding ??= import('zstd-napi/binding.js').then(
    (m) => (m as unknown as { default: NapiBinding }).default,
    () => undefined,
  );
  return binding;
}

function unavailable(): ZstdError {
  return new ZstdError(ErrorCode.Internal, 'a zstd stream needs zstd-napi, which does not load on this machine', {
    backend: ZstdBackendName.Napi,
  });
}

/**
 * One zstd stream across many frames: each `push` compresses a chunk and flushes, so the chunk's bytes decode as
 * soon as its segment arrives, while later chunks may refer back into everything sent before (up to the window).
 * With long-distance matching that finds a page sent earlier anywhere in the last 128 MiB, which per-frame zstd
 * cannot: on a QEMU migration stream of a 512 MiB guest it sent 84 MB where frame-by-frame zstd sent 102 MB.
 *
 * The price is order: segments decode only in the order they were made, each exactly once (ZstdStreamDecoder), so
 * this suits a stream that cannot be resumed from the middle anyway, as QEMU's.
 */
export class ZstdStreamEncoder {
  private out: Buffer = Buffer.alloc(0);
  bytesIn = 0;
  bytesOut = 0;

  private constructor(
    private readonly napi: NapiBinding,
    private readonly ctx: InstanceType<NapiBinding['CCtx']>,
  ) {}

  /** Throws ZstdError (INTERNAL) when zstd-napi does not load. */
  static async create(options: ZstdStreamOptions = {}): Promise<ZstdStreamEncoder> {
    const napi = await loadBinding();
    if (!napi) throw unavailable();
    const ctx = new napi.CCtx();
    try {
      ctx.setParameter(napi.CParameter.compressionLevel, options.level ?? ZSTD_STREAM_LEVEL);
      ctx.setParameter(napi.CParameter.windowLog, options.windowLog ?? ZSTD_STREAM_WINDOW_LOG);
      ctx.setParameter(napi.CParameter.enableLongDistanceMatching, options.longDistance === false ? 0 : 1);
    } catch (cause) {
      throw new ZstdError(ErrorCode.InvalidRequest, `zstd stream parameters rejected: ${String(cause)}`, { cause });
    }
    return new ZstdStreamEncoder(napi, ctx);
  }

  /** The segment that carries `chunk`, flushed: it decodes once every earlier segment has been. */
  push(chunk: Uint8Array): Buffer {
    const bound = this.napi.compressBound(chunk.length) + 64;
    if (this.out.length < bound) this.out = Buffer.allocUnsafe(bound);
    const parts: Buffer[] = [];
    let consumed = 0;
    for (;;) {
      const [remaining, produced, used] = this.ctx.compressStream2(
        this.out,
        chunk.subarray(consumed),
        this.napi.EndDirective.flush,
      );
      consumed += used;
      if (produced > 0) parts.push(Buffer.from(this.out.subarray(0, produced)));
      if (remaining === 0 && consumed === chunk.length) break;
    }
    const segment = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    this.bytesIn += chunk.length;
    this.bytesOut += segment.length;
    return segment;
  }
}

/** The receiving end of a ZstdStreamEncoder: segments in the order they were made, each once. */
export class ZstdStreamDecoder {
  private constructor(
    private readonly ctx: InstanceType<NapiBinding['DCtx']>,
    private broken = false,
  ) {}

  static async create(options: Pick<ZstdStreamOptions, 'windowLog'> = {}): Promise<ZstdStreamDecoder> {
    const napi = await loadBinding();
    if (!napi) throw unavailable();
    const ctx = new napi.DCtx();
    ctx.setParameter(napi.DParameter.windowLogMax, options.windowLog ?? ZSTD_STREAM_WINDOW_LOG);
    return new ZstdStreamDecoder(ctx);
  }

  /**
   * The `length` bytes `segment` carries. A segment that does not decode to exactly that leaves the decoder
   * unusable (its history no longer matches the encoder's): every later call throws.
   */
  pull(segment: Uint8Array, length: number): Buffer {
    if (this.broken) throw new ZstdError(ErrorCode.RecordCorrupt, 'the zstd stream broke at an earlier segment');
    const dst = Buffer.allocUnsafe(length);
    let read = 0;
    let written = 0;
    try {
      while (read < segment.length || written < length) {
        const [, produced, consumed] = this.ctx.decompressStream(dst.subarray(written), segment.subarray(read));
        written += produced;
        read += consumed;
        if (produced === 0 && consumed === 0) break;
      }
    } catch (cause) {
      this.broken = true;
      throw new ZstdError(ErrorCode.RecordCorrupt, `zstd stream segment does not decode: ${String(cause)}`, { cause });
    }
    // zstd may take the whole segment and hold output back: ask once more for anything past `length`.
    const extra = written === length ? this.ctx.decompressStream(Buffer.allocUnsafe(1), EMPTY)[1] : 0;
    if (written !== length || read !== segment.length || extra > 0) {
      this.broken = true;
      throw new ZstdError(
        ErrorCode.RecordCorrupt,
        `zstd stream segment of ${segment.length} bytes decoded to ${written + extra}${extra ? '+' : ''} ` +
          `(used ${read}), expected ${length}`,
      );
    }
    return dst;
  }
}
