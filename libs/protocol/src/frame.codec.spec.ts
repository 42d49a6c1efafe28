import { randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from './error-codes.js';
import { FrameError } from './errors.js';
import { FRAME_HEADER_BYTES, FrameFlag, MAX_FRAME_PAYLOAD, StreamKind } from './frame.js';
import { decodeFrame, encodeFrame, type FrameFields } from './frame.codec.js';

const fields = (over: Partial<FrameFields> = {}): FrameFields => ({
  kind: StreamKind.Disk,
  flags: FrameFlag.Records | FrameFlag.Zstd,
  migrationId: randomUUID(),
  streamId: 7,
  seq: 2 ** 40 + 3,
  offset: 2 ** 33 + 4096,
  length: 131072,
  ...over,
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FrameError);
    return (err as FrameError).code;
  }
  return undefined;
}

describe('frame codec', () => {
  it('round-trips every header field and the payload', () => {
    const f = fields();
    const payload = randomBytes(1000);
    const { header, payload: out } = decodeFrame(encodeFrame(f, payload));
    expect(header).toMatchObject({ ...f, version: 1, payloadLength: 1000 });
    expect(Buffer.compare(out, payload)).toBe(0);
  });

  it('rejects a truncated frame', () => {
    const wire = encodeFrame(fields(), randomBytes(100));
    expect(codeOf(() => decodeFrame(wire.subarray(0, 20)))).toBe(ErrorCode.FrameTruncated);
    expect(codeOf(() => decodeFrame(wire.subarray(0, wire.length - 1)))).toBe(ErrorCode.FrameTruncated);
  });

  it('rejects a flipped bit anywhere in header or payload', () => {
    const wire = encodeFrame(fields(), randomBytes(256));
    for (const at of [9, 33, 41, 50, FRAME_HEADER_BYTES + 10, wire.length - 1]) {
      const bad = Buffer.from(wire);
      bad[at] ^= 0x10;
      expect(codeOf(() => decodeFrame(bad))).toBe(ErrorCode.FrameBadChecksum);
    }
  });

  it('rejects unknown magic, version, kind and flags', () => {
    const wire = encodeFrame(fields(), Buffer.alloc(8));
    const patch = (at: number, value: number) => {
      const bad = Buffer.from(wire);
      bad[at] = value;
      return bad;
    };
    expect(codeOf(() => decodeFrame(patch(0, 0)))).toBe(ErrorCode.FrameBadMagic);
    expect(codeOf(() => decodeFrame(patch(2, 9)))).toBe(ErrorCode.FrameBadVersion);
    expect(codeOf(() => decodeFrame(patch(3, 99)))).toBe(ErrorCode.FrameBadKind);
    expect(codeOf(() => decodeFrame(patch(4, 0x80)))).toBe(ErrorCode.FrameBadFlags);
    // One payload is either a zstd frame or a zstd stream's segment, never both.
    expect(codeOf(() => decodeFrame(patch(5, FrameFlag.Zstd | FrameFlag.ZstdStream)))).toBe(ErrorCode.FrameBadFlags);
  });

  it('refuses to build a frame larger than max_payload allows', () => {
    expect(codeOf(() => encodeFrame(fields(), Buffer.alloc(MAX_FRAME_PAYLOAD + 1)))).toBe(ErrorCode.FrameTooLarge);
  });
});
