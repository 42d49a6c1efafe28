import { describe, expect, it } from 'vitest';
import { NbdProtocolError } from './errors.js';
import { AllocationFlag, NbdErrno, ReplyFlag, ReplyType } from './nbd.constants.js';
import {
  decodeBlockStatusPayload,
  decodeErrorPayload,
  decodeSimpleReply,
  decodeStructuredHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataHead,
  encodeOffsetHoleChunk,
  encodeSimpleReply,
} from './reply.codec.js';

describe('reply codec', () => {
  it('encodes a simple reply', () => {
    const buf = encodeSimpleReply(NbdErrno.EINVAL, 0xabcdn);
    expect(buf.toString('hex')).toBe('67446698' + '00000016' + '000000000000abcd');
    expect(decodeSimpleReply(buf)).toEqual({ errno: 22, cookie: 0xabcdn });
  });

  it('encodes an OFFSET_DATA head whose length covers the offset and the data that follows', () => {
    const buf = encodeOffsetDataHead(5n, 1 << 20, 4096, true);
    expect(buf).toHaveLength(28);
    expect(decodeStructuredHeader(buf)).toEqual({
      flags: ReplyFlag.Done,
      type: ReplyType.OffsetData,
      cookie: 5n,
      length: 8 + 4096,
    });
    expect(buf.readUInt32BE(24)).toBe(1 << 20);
  });

  it('encodes NONE, OFFSET_HOLE and ERROR chunks', () => {
    expect(decodeStructuredHeader(encodeNoneChunk(1n))).toEqual({ flags: 1, type: 0, cookie: 1n, length: 0 });
    const hole = encodeOffsetHoleChunk(2n, 512, 1024);
    expect(decodeStructuredHeader(hole)).toMatchObject({ type: ReplyType.OffsetHole, length: 12, flags: 0 });
    const err = encodeErrorChunk(3n, NbdErrno.ENOSPC, 'disk full');
    const h = decodeStructuredHeader(err);
    expect(h).toMatchObject({ flags: ReplyFlag.Done, type: ReplyType.Error, length: 6 + 9 });
    expect(decodeErrorPayload(h.type, err.subarray(20))).toEqual({ errno: NbdErrno.ENOSPC, message: 'disk full' });
  });

  it('round-trips a BLOCK_STATUS chunk', () => {
    const extents = [
      { length: 4096, flags: 0 },
      { length: 1 << 20, flags: AllocationFlag.Hole | AllocationFlag.Zero },
    ];
    const buf = encodeBlockStatusChunk(9n, 1, extents);
    const h = decodeStructuredHeader(buf);
    expect(h).toMatchObject({ type: ReplyType.BlockStatus, length: 4 + 16, flags: ReplyFlag.Done });
    expect(decodeBlockStatusPayload(buf.subarray(20))).toEqual({ contextId: 1, extents });
  });

  it('refuses malformed replies', () => {
    expect(() => decodeSimpleReply(Buffer.alloc(16))).toThrow(NbdProtocolError);
    expect(() => decodeStructuredHeader(Buffer.alloc(20))).toThrow(NbdProtocolError);
    expect(() => decodeBlockStatusPayload(Buffer.alloc(8))).toThrow(NbdProtocolError);
    const bad = Buffer.alloc(6);
    bad.writeUInt16BE(10, 4);
    expect(() => decodeErrorPayload(ReplyType.Error, bad)).toThrow(NbdProtocolError);
  });
});
