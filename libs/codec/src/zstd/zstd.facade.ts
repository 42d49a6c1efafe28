import { ErrorCode } from '@wanmig/protocol';
import { ZstdError } from '../errors.js';
import { type ZstdBackend, ZstdBackendName } from './zstd.backend.js';
import { zstdContentSize } from './zstd-frame.header.js';
import { loadNapiBackend } from './zstd-napi.backend.js';
import { loadWasmBackend } from './zstd-wasm.backend.js';

/** Level for WAN links: better ratio, still several hundred MB/s natively. */
export const ZSTD_LEVEL_WAN = 3;
/** Level for fast links, where CPU rather than bandwidth is the limit. */
export const ZSTD_LEVEL_FAST = 1;
/** Default cap on what one frame may expand to (a record batch is under 1 MiB before compression). */
export const DEFAULT_ZSTD_MAX_OUTPUT = 16 * 1024 * 1024;

export interface ZstdLoadOptions {
  /** Force a backend (tests, benchmarks); by default the native one when it loads, else WASM. */
  backend?: ZstdBackendName;
}

const loaded = new Map<ZstdBackendName | 'auto', Promise<Zstd>>();

/**
 * zstd with whichever backend this machine has: `zstd-napi` when its native binary loads,
 * otherwise `zstd-codec` (WASM). Both write standard frames with the content size recorded, so a
 * sender on one backend and a receiver on the other interoperate. Loading is async (dynamic import,
 * WASM instantiation); compress and decompress are then synchronous.
 */
export class Zstd {
  readonly backend: ZstdBackendName;
  readonly level: number;

  private constructor(
    private readonly impl: ZstdBackend,
    level: number,
  ) {
    this.backend = impl.name;
    this.level = level;
  }

  /** The shared instance for a backend (the preferred one by default); later calls reuse it. */
  static load(options: ZstdLoadOptions = {}): Promise<Zstd> {
    const key = options.backend ?? 'auto';
    let promise = loaded.get(key);
    if (!promise) {
      promise = createBackend(options.backend).then((impl) => new Zstd(impl, ZSTD_LEVEL_WAN));
      // A failed load (napi forced but absent) is not cached, so a later call may try again.
      void promise.catch(() => loaded.delete(key));
      loaded.set(key, promise);
    }
    return promise;
  }

  /** True when the native backend loads on this machine. */
  static async napiAvailable(): Promise<boolean> {
    return (await loadNapiBackend()) !== undefined;
  }

  /** The same backend with another default level. */
  withLevel(level: number): Zstd {
    checkLevel(level);
    return new Zstd(this.impl, level);
  }

  /** One zstd frame holding `data`, at `level` (default: this instance's level). */
  compress(data: Uint8Array, level = this.level): Buffer {
    checkLevel(level);
    try {
      return this.impl.compress(data, level);
    } catch (cause) {
      throw new ZstdError(ErrorCode.Internal, `zstd compression failed (${this.backend})`, {
        backend: this.backend,
        cause,
      });
    }
  }

  /**
   * The content of one zstd frame. Refuses, before allocating, a frame that does not record its
   * content size or would expand past `maxOutput` bytes; anything that fails to decode is a
   * ZstdError with code RECORD_CORRUPT.
   */
  decompress(frame: Uint8Array, maxOutput = DEFAULT_ZSTD_MAX_OUTPUT): Buffer {
    const size = zstdContentSize(frame);
    if (size === undefined) {
      throw new ZstdError(ErrorCode.RecordCorrupt, 'payload is not a zstd frame with a recorded content size', {
        backend: this.backend,
      });
    }
    if (size > maxOutput) {
      throw new ZstdError(ErrorCode.RecordCorrupt, `zstd frame would expand to ${size} bytes, limit ${maxOutput}`, {
        backend: this.backend,
      });
    }
    try {
      return this.impl.decompress(frame, size);
    } catch (cause) {
      throw new ZstdError(ErrorCode.RecordCorrupt, `zstd frame does not decode (${this.backend})`, {
        backend: this.backend,
        cause,
      });
    }
  }
}

async function createBackend(forced: ZstdBackendName | undefined): Promise<ZstdBackend> {
  if (forced !== ZstdBackendName.Wasm) {
    const napi = await loadNapiBackend();
    if (napi) return napi;
    if (forced === ZstdBackendName.Napi) {
      throw new ZstdError(ErrorCode.Internal, 'zstd-napi is not available on this machine', {
        backend: ZstdBackendName.Napi,
      });
    }
  }
  try {
    return await loadWasmBackend();
  } catch (cause) {
    throw new ZstdError(ErrorCode.Internal, 'zstd-codec (WASM) failed to load', {
      backend: ZstdBackendName.Wasm,
      cause,
    });
  }
}

function checkLevel(level: number): void {
  if (!Number.isInteger(level) || level < -7 || level > 22) {
    throw new ZstdError(ErrorCode.InvalidRequest, `zstd level must be an integer in [-7, 22], got ${level}`);
  }
}
