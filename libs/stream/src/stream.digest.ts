import { createHash, type Hash } from 'node:crypto';

/**
 * Bytes of a relayed byte stream (QEMU's migration stream) per checked segment. Small enough that a mismatch names
 * a narrow range and is found while the stream still runs; large enough that the digest frames cost nothing (32
 * bytes each).
 */
export const STREAM_DIGEST_SEGMENT_BYTES = 32 * 1024 * 1024;
/** A segment's digest: sha256. */
export const STREAM_DIGEST_BYTES = 32;

export interface StreamSegmentDigest {
  /** The stream bytes [start, end) the digest covers. */
  start: number;
  end: number;
  sha256: Buffer;
}

/**
 * sha256 of a byte stream in segments, kept as the bytes pass (no second read, nothing added to a pause): the
 * sending end seals a segment where it cuts one (at most `segmentBytes` long) and sends its digest in band; the
 * receiving end hashes what it hands on and seals at the same offsets, then compares. `streamSha256` chains the
 * sealed segments' digests: both ends report the same value exactly when every segment matched.
 */
export class StreamDigester {
  /** Bytes hashed so far: the stream position. */
  position = 0;
  /** Segments sealed so far. */
  segments = 0;
  private start = 0;
  private hash: Hash = createHash('sha256');
  private readonly chain: Hash = createHash('sha256');

  constructor(readonly segmentBytes = STREAM_DIGEST_SEGMENT_BYTES) {
    if (!Number.isSafeInteger(segmentBytes) || segmentBytes < 1) {
      throw new RangeError(`segmentBytes must be a positive integer, got ${segmentBytes}`);
    }
  }

  /** Bytes that may still join the current segment before it must be sealed. */
  get room(): number {
    return this.start + this.segmentBytes - this.position;
  }

  /** Where the current segment began. */
  get segmentStart(): number {
    return this.start;
  }

  /** Adds bytes to the current segment; they must fit in its `room` (cut frames at segment ends). */
  update(data: Uint8Array): void {
    if (data.length > this.room) {
      throw new RangeError(
        `${data.length} bytes at ${this.position} cross the segment end ${this.start + this.segmentBytes}`,
      );
    }
    this.hash.update(data);
    this.position += data.length;
  }

  /** Closes the current segment (it may be short, or empty at the end of a stream) and starts the next. */
  seal(): StreamSegmentDigest {
    const sha256 = this.hash.digest();
    const sealed = { start: this.start, end: this.position, sha256 };
    this.chain.update(sha256);
    this.segments++;
    this.start = this.position;
    this.hash = createHash('sha256');
    return sealed;
  }

  /** Hex sha256 over the digests of the segments sealed so far, in order. */
  streamSha256(): string {
    return this.chain.copy().digest('hex');
  }
}
