import { describe, expect, it } from 'vitest';
import { AckType, decodeAck, encodeAck } from './ack.codec.js';
import { FrameError } from './errors.js';

describe('ack codec', () => {
  it('round-trips large sequence numbers and cursors', () => {
    const msg = { type: AckType.Nak, nextSeq: 2 ** 45 + 17, cursor: 2 ** 38 + 4096, received: 2 ** 45 + 20 };
    expect(decodeAck(encodeAck(msg))).toEqual(msg);
  });

  it('rejects anything that is not an ack record', () => {
    expect(() => decodeAck(Buffer.alloc(32))).toThrow(FrameError);
    const bad = encodeAck({ type: AckType.Ack, nextSeq: 1, cursor: 1 });
    bad[3] = 42;
    expect(() => decodeAck(bad)).toThrow(FrameError);
  });
});
