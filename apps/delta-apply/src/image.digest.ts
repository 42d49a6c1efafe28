import { MAX_DIGEST_REGIONS, ValidationError } from '@wanmig/protocol';
import type { DigestRange } from '@wanmig/stream';

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
