import { MAX_DIGEST_REGIONS, ValidationError } from '@wanmig/protocol';
import { digestRegions, RegionDigestCache, type DigestRange } from '@wanmig/stream';

/**
 * Regions touched by applied frames are hashed again in the background this long after the first touch (or later,
 * once the last pass has rested: RegionDigestCache.backgroundDueAt).
 */
export const DIGEST_SETTLE_MS = 500;

/** Bytes one digest takes in the JSON reply: 64 hex digits, quotes, comma. */
const DIGEST_JSON_BYTES = 67;
/** The rest of the reply: Nest's envelope, field names, numbers. */
const DIGEST_REPLY_OVERHEAD = 1024;

/**
 * How many regions one reply may carry: MAX_DIGEST_REGIONS, or fewer when the server's
 * max_payload (1 MiB by default) could not carry that many; a reply too big to publish would
 * reach the caller as a timeout, not as an error it can act on.
 */
export function maxDigestRegions(maxPayload: number): number {
  return Math.max(
    1,
    Math.min(MAX_DIGEST_REGIONS, Math.floor((maxPayload - DIGEST_REPLY_OVERHEAD) / DIGEST_JSON_BYTES)),
  );
}

/**
 * Resolves a digest request against an image of `sizeBytes`: `offset` defaults to 0, `length` to the
 * rest of the image; the range must lie inside the image and hold at most `maxRegions` regions.
 */
export function digestRange(
  sizeBytes: number,
  request: { offset?: number; length?: number; regionBytes: number },
  maxRegions = MAX_DIGEST_REGIONS,
): DigestRange {
  const offset = request.offset ?? 0;
  const problems: string[] = [];
  if (offset > sizeBytes) problems.push(`offset: ${offset} is past the end of the ${sizeBytes}-byte image`);
  const length = request.length ?? Math.max(0, sizeBytes - offset);
  if (offset + length > sizeBytes) problems.push(`length: [${offset}, +${length}) reaches past ${sizeBytes} bytes`);
  const regions = Math.ceil(length / request.regionBytes);
  if (regions > maxRegions) {
    problems.push(`regionBytes: ${regions} regions asked, at most ${maxRegions} per reply (use larger regions)`);
  }
  if (problems.length > 0) throw new ValidationError(problems, 'DiskDigestRequest');
  return { offset, length, regionBytes: request.regionBytes };
}

/** What ImageDigests needs of the image: where it is, its size, and a way to put buffered writes in the file. */
export interface DigestedImage {
  readonly path: string;
  readonly size: number;
  flushPending(): void;
}

/**
 * The destination image's region digests, kept from the first ask on (a RegionDigestCache): every frame applied
 * marks the regions it touched (`touch`, from the present tracker), which are hashed again in the background a little
 * later and in any case at the next ask; the others keep their digest. So the final ask of a migration, at the pause,
 * hashes only the regions the last frames touched, not the whole image.
 *
 * Trusted: that every change to the image comes through the applied frames. A write to the image file by anything
 * else after its region was hashed is not seen (see DiskVerifier in disk-transfer for what the comparison catches).
 * Kept in memory only: after a restart of delta-apply the first ask hashes the whole image again, which also sees
 * whatever happened to it while the process was down.
 *
 * Asks whose range is not whole regions (from offset 0, or any multiple of regionBytes) are hashed directly.
 * One region size is kept at a time; an ask with another size starts over with it.
 */
export class ImageDigests {
  private cache?: RegionDigestCache;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly image: DigestedImage,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Regions touched since their last digest (0 before the first ask). */
  get staleRegions(): number {
    return this.cache?.staleRegions ?? 0;
  }

  /** Frames changed [offset, offset + length): once the image holds it, or buffers it until flushPending. */
  touch(offset: number, length: number): void {
    const cache = this.cache;
    if (!cache) return; // nothing hashed yet: the first ask hashes everything
    cache.touch(offset, length);
    const wait = Math.max(DIGEST_SETTLE_MS, cache.backgroundDueAt - performance.now());
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      cache.refresh().catch(this.onError);
    }, wait).unref();
  }

  async digest(range: DigestRange): Promise<string[]> {
    const { offset, length, regionBytes } = range;
    const end = offset + length;
    if (offset % regionBytes !== 0 || (end % regionBytes !== 0 && end !== this.image.size)) {
      this.image.flushPending();
      return digestRegions(this.image.path, range);
    }
    if (this.cache?.regionBytes !== regionBytes) {
      this.cache = new RegionDigestCache({
        path: this.image.path,
        sizeBytes: this.image.size,
        regionBytes,
        beforeRead: () => this.image.flushPending(),
      });
    }
    const { digests } = await this.cache.digests();
    return digests.slice(offset / regionBytes, Math.ceil(end / regionBytes));
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.cache = undefined;
  }
}
