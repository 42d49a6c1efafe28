import { describe, expect, it } from 'vitest';
import { ByteReader } from './byte.reader.js';
import { ClientHandshake } from './client.handshake.js';
import { NbdExportNotFoundError, NbdProtocolError } from './errors.js';
import { ExportRegistry } from './export.registry.js';
import { HandshakeNegotiator } from './handshake.negotiator.js';
import { MemoryExportBackend } from './memory-export.backend.js';
import { ClientFlag, InfoType, NbdMagic, NbdOption, OptionReply, TransmissionFlag } from './nbd.constants.js';
import {
  decodeInfo,
  decodeOptionReplyHeader,
  decodeServerEntry,
  encodeGoData,
  encodeMetaContextData,
  encodeOptionRequest,
} from './option.codec.js';

const LIMITS = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };

function registry(): ExportRegistry {
  const r = new ExportRegistry('disk');
  r.add({ name: 'disk', description: 'the disk', backend: new MemoryExportBackend(1 << 20) });
  r.add({ name: 'ro', backend: new MemoryExportBackend(4096), readOnly: true });
  return r;
}

/** A negotiator fed `input` in 1-byte pieces; returns what it wrote and how it ended. */
async function negotiate(input: Buffer) {
  const reader = new ByteReader();
  const out: Buffer[] = [];
  const negotiator = new HandshakeNegotiator(reader, (b) => out.push(b), registry(), LIMITS);
  const result = negotiator.run().then(
    (session) => ({ session, error: undefined }),
    (error: unknown) => ({ session: undefined, error }),
  );
  for (const byte of input) reader.push(Buffer.from([byte]));
  reader.end();
  const outcome = await result;
  return { ...outcome, output: Buffer.concat(out) };
}

function clientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags, 0);
  return b;
}

/** Split server output after the greeting into option replies. */
function replies(output: Buffer): { option: number; type: number; data: Buffer }[] {
  const out: { option: number; type: number; data: Buffer }[] = [];
  let at = 18;
  while (at + 20 <= output.length) {
    const h = decodeOptionReplyHeader(output.subarray(at, at + 20));
    out.push({ option: h.option, type: h.type, data: output.subarray(at + 20, at + 20 + h.length) });
    at += 20 + h.length;
  }
  return out;
}

describe('HandshakeNegotiator', () => {
  it('greets with NBDMAGIC, IHAVEOPT and the fixed-newstyle and no-zeroes flags', async () => {
    const { output, error } = await negotiate(Buffer.alloc(0));
    expect(output.readBigUInt64BE(0)).toBe(NbdMagic.Init);
    expect(output.readBigUInt64BE(8)).toBe(NbdMagic.Opt);
    expect(output.readUInt16BE(16)).toBe(3);
    expect(error).toBeDefined();
  });

  it('answers NBD_OPT_GO with export info and block sizes, then enters transmission', async () => {
    const input = Buffer.concat([
      clientFlags(ClientFlag.FixedNewstyle | ClientFlag.NoZeroes),
      encodeOptionRequest(NbdOption.StructuredReply),
      encodeOptionRequest(
        NbdOption.SetMetaContext,
        encodeMetaContextData({ name: 'disk', queries: ['base:allocation'] }),
      ),
      encodeOptionRequest(NbdOption.Go, encodeGoData({ name: 'disk', infos: [InfoType.BlockSize, InfoType.Name] })),
    ]);
    const { session, output } = await negotiate(input);
    expect(session).toMatchObject({ structuredReplies: true, baseAllocation: true, via: 'go', blockSizeAgreed: true });
    expect(session!.export.name).toBe('disk');
    const r = replies(output);
    expect(r.map((x) => [x.option, x.type])).toEqual([
      [NbdOption.StructuredReply, OptionReply.Ack],
      [NbdOption.SetMetaContext, OptionReply.MetaContext],
      [NbdOption.SetMetaContext, OptionReply.Ack],
      [NbdOption.Go, OptionReply.Info],
      [NbdOption.Go, OptionReply.Info],
      [NbdOption.Go, OptionReply.Info],
      [NbdOption.Go, OptionReply.Ack],
    ]);
    const info = decodeInfo(r[3].data);
    expect(info).toMatchObject({ type: InfoType.Export, size: 1 << 20 });
    const flags = (info as { flags: number }).flags;
    expect(flags & TransmissionFlag.HasFlags).toBeTruthy();
    expect(flags & TransmissionFlag.SendDf).toBeTruthy();
    expect(flags & TransmissionFlag.SendWriteZeroes).toBeTruthy();
    expect(decodeInfo(r[4].data)).toEqual({ type: InfoType.BlockSize, ...LIMITS });
    expect(decodeInfo(r[5].data)).toEqual({ type: InfoType.Name, name: 'disk' });
  });

  it('answers unknown options with ERR_UNSUP and keeps parsing, and lists exports', async () => {
    const input = Buffer.concat([
      clientFlags(ClientFlag.FixedNewstyle),
      encodeOptionRequest(0x1234, Buffer.from('ignored data')),
      encodeOptionRequest(NbdOption.StartTls),
      encodeOptionRequest(NbdOption.List),
      encodeOptionRequest(NbdOption.List, Buffer.from('x')),
      encodeOptionRequest(NbdOption.Info, encodeGoData({ name: 'nope', infos: [] })),
      encodeOptionRequest(NbdOption.Info, Buffer.from([0, 0, 0, 9, 1])),
      encodeOptionRequest(NbdOption.SetMetaContext, encodeMetaContextData({ name: 'disk', queries: [] })),
      encodeOptionRequest(NbdOption.ListMetaContext, encodeMetaContextData({ name: 'disk', queries: ['base:'] })),
      encodeOptionRequest(NbdOption.Abort),
    ]);
    const { session, error, output } = await negotiate(input);
    expect(session).toBeUndefined();
    expect(error).toBeUndefined();
    const r = replies(output).map((x) => [
      x.option,
      x.type,
      x.type === OptionReply.Server ? decodeServerEntry(x.data).name : '',
    ]);
    expect(r).toEqual([
      [0x1234, OptionReply.ErrUnsup, ''],
      [NbdOption.StartTls, OptionReply.ErrUnsup, ''],
      [NbdOption.List, OptionReply.Server, 'disk'],
      [NbdOption.List, OptionReply.Server, 'ro'],
      [NbdOption.List, OptionReply.Ack, ''],
      [NbdOption.List, OptionReply.ErrInvalid, ''],
      [NbdOption.Info, OptionReply.ErrUnknown, ''],
      [NbdOption.Info, OptionReply.ErrInvalid, ''],
      [NbdOption.SetMetaContext, OptionReply.ErrInvalid, ''],
      [NbdOption.ListMetaContext, OptionReply.MetaContext, ''],
      [NbdOption.ListMetaContext, OptionReply.Ack, ''],
      [NbdOption.Abort, OptionReply.Ack, ''],
    ]);
  });

  it('answers NBD_OPT_EXPORT_NAME with size, flags and padding unless NO_ZEROES', async () => {
    for (const noZeroes of [false, true]) {
      const input = Buffer.concat([
        clientFlags(ClientFlag.FixedNewstyle | (noZeroes ? ClientFlag.NoZeroes : 0)),
        encodeOptionRequest(NbdOption.ExportName, Buffer.from('')),
      ]);
      const { session, output } = await negotiate(input);
      expect(session).toMatchObject({ via: 'export-name', structuredReplies: false, baseAllocation: false });
      expect(session!.export.name).toBe('disk');
      expect(output.length).toBe(18 + 10 + (noZeroes ? 0 : 124));
      expect(output.readUInt32BE(18 + 4)).toBe(1 << 20);
    }
  });

  it('hangs up on unknown client flags, a bad option magic, an unknown EXPORT_NAME or an oversized option', async () => {
    const cases = [
      clientFlags(0x80),
      Buffer.concat([clientFlags(1), Buffer.alloc(16)]),
      Buffer.concat([clientFlags(1), encodeOptionRequest(NbdOption.ExportName, Buffer.from('nope'))]),
      Buffer.concat([clientFlags(1), encodeOptionRequest(NbdOption.Go).subarray(0, 12), Buffer.from([0, 1, 0, 1])]),
    ];
    for (const input of cases) {
      const { session, error } = await negotiate(input);
      expect(session).toBeUndefined();
      expect(error).toBeInstanceOf(NbdProtocolError);
    }
  });

  it('interoperates with ClientHandshake end to end, in memory', async () => {
    const toServer = new ByteReader();
    const toClient = new ByteReader();
    const negotiator = new HandshakeNegotiator(toServer, (b) => toClient.push(b), registry(), LIMITS);
    const client = new ClientHandshake(toClient, (b) => toServer.push(b));
    const serverSide = negotiator.run();
    await client.open();
    const session = await client.go({ exportName: 'ro', structuredReplies: true, blockStatus: true });
    expect(session).toMatchObject({ size: 4096, structuredReplies: true, baseAllocationId: 1, blockSize: LIMITS });
    expect(session.transmissionFlags & TransmissionFlag.ReadOnly).toBeTruthy();
    expect((await serverSide)!.baseAllocation).toBe(true);

    const toServer2 = new ByteReader();
    const toClient2 = new ByteReader();
    const n2 = new HandshakeNegotiator(toServer2, (b) => toClient2.push(b), registry(), LIMITS);
    const c2 = new ClientHandshake(toClient2, (b) => toServer2.push(b));
    void n2.run().catch(() => undefined);
    await c2.open();
    await expect(c2.go({ exportName: 'missing', structuredReplies: false, blockStatus: false })).rejects.toBeInstanceOf(
      NbdExportNotFoundError,
    );
    toServer2.end();
  });
});
