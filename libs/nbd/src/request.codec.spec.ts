import { describe, expect, it } from 'vitest';
import { NbdProtocolError } from './errors.js';
import { CommandFlag, NbdCommand, NbdMagic } from './nbd.constants.js';
import { decodeRequestHeader, encodeRequestHeader, readU64, writeU64 } from './request.codec.js';

describe('request header codec', () => {
  it('lays out a request as proto.md says and decodes it back', () => {
    const req = {
      flags: CommandFlag.Fua,
      type: NbdCommand.Write,
      cookie: 0x0102030405060708n,
      offset: 2 ** 40 + 4096,
      length: 65536,
    };
    const buf = encodeRequestHeader(req);
    expect(buf.toString('hex')).toBe(
      '25609513' + '0001' + '0001' + '0102030405060708' + '0000010000001000' + '00010000',
    );
    expect(decodeRequestHeader(buf)).toEqual(req);
  });

  it('rejects a wrong magic as a protocol violation', () => {
    const buf = encodeRequestHeader({ flags: 0, type: 0, cookie: 1n, offset: 0, length: 1 });
    buf.writeUInt32BE(NbdMagic.SimpleReply, 0);
    expect(() => decodeRequestHeader(buf)).toThrow(NbdProtocolError);
  });

  it('reads 64-bit offsets beyond 2^53 as huge numbers rather than wrapping', () => {
    const buf = Buffer.alloc(8, 0xff);
    expect(readU64(buf, 0)).toBeGreaterThan(2 ** 63);
    const small = Buffer.alloc(8);
    writeU64(small, 2 ** 33 + 5, 0);
    expect(readU64(small, 0)).toBe(2 ** 33 + 5);
  });
});
