import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AllocationFlag,
  ClientHandshake,
  FileExportBackend,
  MemoryExportBackend,
  NbdAddressInUseError,
  NbdClient,
  NbdCommand,
  NbdCommandError,
  NbdConnectionClosedError,
  NbdErrno,
  NbdExportNotFoundError,
  NbdServer,
  WriteKind,
  encodeRequestHeader,
  readerForSocket,
  type NbdAddress,
} from '@wanmig/nbd';

const MiB = 1024 * 1024;

function tcpTarget(address: NbdAddress): { port: number } {
  if (address.transport !== 'tcp') throw new Error('expected a TCP address');
  return { port: address.port };
}

async function expectNbdError(promise: Promise<unknown>, errno: number): Promise<NbdCommandError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(NbdCommandError);
  expect((err as NbdCommandError).errno).toBe(errno);
  return err as NbdCommandError;
}

/** Open a raw socket past the handshake (NBD_OPT_GO on the default export, simple replies). */
async function rawSession(port: number): Promise<{ socket: Socket; reader: ReturnType<typeof readerForSocket> }> {
  const socket = connect({ port, host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const reader = readerForSocket(socket);
  const hs = new ClientHandshake(reader, (b) => socket.write(b));
  await hs.open();
  await hs.go({ exportName: '', structuredReplies: false, blockStatus: false });
  return { socket, reader };
}

function waitClose(socket: Socket): Promise<void> {
  return socket.destroyed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));
}

describe('NbdServer with NbdClient', () => {
  let dir: string;
  let server: NbdServer;
  let backend: FileExportBackend;
  let address: NbdAddress;
  let unixAddress: NbdAddress;
  const writes: { offset: number; length: number; kind: string }[] = [];
  let gateDelayMs = 0;
  let gated = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-nbd-client-'));
    const image = join(dir, 'disk.raw');
    await writeFile(image, '');
    await truncate(image, 16 * MiB);
    backend = await FileExportBackend.open(image);
    server = new NbdServer({
      exports: [
        {
          name: 'disk',
          description: 'test disk',
          backend,
          onWrite: (offset, length, kind) => writes.push({ offset, length, kind }),
          beforeWriteReply: async () => {
            gated++;
            if (gateDelayMs > 0) await new Promise((r) => setTimeout(r, gateDelayMs));
          },
        },
        { name: 'ro', backend: new MemoryExportBackend(Buffer.alloc(1 * MiB, 7)), readOnly: true },
      ],
      defaultExport: 'disk',
    });
    address = await server.listen({ port: 0 });
    unixAddress = await server.listen({ path: join(dir, 'nbd.sock') });
  });

  afterAll(async () => {
    await server?.close();
    await backend?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists exports and reports size and block sizes after NBD_OPT_GO', async () => {
    const list = await NbdClient.list(tcpTarget(address));
    expect(list.map((e) => e.name).sort()).toEqual(['disk', 'ro']);
    const client = await NbdClient.connect(tcpTarget(address), { exportName: 'disk' });
    expect(client.size).toBe(16 * MiB);
    expect(client.blockSize).toEqual({ minimum: 1, preferred: 4096, maximum: 32 * MiB });
    expect(client.structuredReplies).toBe(true);
    await client.disconnect();
  });

  it('writes, reads back, flushes, trims and zeroes over TCP and unix sockets, pipelined', async () => {
    for (const target of [tcpTarget(address), { path: (unixAddress as { path: string }).path }]) {
      for (const structuredReplies of [true, false]) {
        const client = await NbdClient.connect(target, { structuredReplies });
        const blocks = Array.from({ length: 32 }, (_, i) => ({ offset: i * 65536 + 123, data: randomBytes(40_000) }));
        await Promise.all(blocks.map((b) => client.write(b.offset, b.data, { fua: b.offset % 2 === 0 })));
        const back = await Promise.all(blocks.map((b) => client.read(b.offset, b.data.length)));
        back.forEach((buf, i) => expect(buf.equals(blocks[i].data)).toBe(true));
        await client.flush();
        await client.writeZeroes(blocks[0].offset, 1000);
        expect((await client.read(blocks[0].offset, 1000)).equals(Buffer.alloc(1000))).toBe(true);
        await client.trim(8 * MiB, 65536);
        expect(await client.read(0, 0)).toHaveLength(0);
        await client.disconnect();
      }
    }
  });

  it('keeps pipelined read-after-write on the same bytes in order', async () => {
    const client = await NbdClient.connect(tcpTarget(address));
    const ops: Promise<unknown>[] = [];
    const reads: Promise<Buffer>[] = [];
    for (let i = 0; i < 20; i++) {
      ops.push(client.write(4 * MiB, Buffer.alloc(8192, i)));
      reads.push(client.read(4 * MiB, 8192));
    }
    await Promise.all(ops);
    const results = await Promise.all(reads);
    results.forEach((buf, i) => expect(buf.equals(Buffer.alloc(8192, i))).toBe(true));
    await client.disconnect();
  });

  it('reports block status from the allocation map', async () => {
    const client = await NbdClient.connect(tcpTarget(address), { blockStatus: true });
    expect(client.canBlockStatus).toBe(true);
    await client.write(12 * MiB, Buffer.alloc(65536, 1));
    const extents = await client.blockStatus(12 * MiB - 65536, 3 * 65536);
    expect(extents).toEqual([
      { length: 65536, flags: AllocationFlag.Hole | AllocationFlag.Zero },
      { length: 65536, flags: 0 },
      { length: 65536, flags: AllocationFlag.Hole | AllocationFlag.Zero },
    ]);
    const one = await client.blockStatus(12 * MiB - 65536, 3 * 65536, { reqOne: true });
    expect(one).toEqual([{ length: 65536, flags: AllocationFlag.Hole | AllocationFlag.Zero }]);
    await client.writeZeroes(12 * MiB, 65536, { noHole: true });
    expect(await client.blockStatus(12 * MiB, 65536)).toEqual([{ length: 65536, flags: AllocationFlag.Zero }]);
    // A fast zero succeeds where the range already reads as zeroes and fails fast elsewhere.
    await client.writeZeroes(14 * MiB, 65536, { fastZero: true });
    await client.write(14 * MiB, Buffer.alloc(10, 9));
    await expectNbdError(client.writeZeroes(14 * MiB, 65536, { fastZero: true }), NbdErrno.ENOTSUP);
    await client.disconnect();
  });

  it('fires onWrite after every write, trim and write-zeroes, and delays write replies through the gate', async () => {
    const client = await NbdClient.connect(tcpTarget(address));
    writes.length = 0;
    await client.write(100, Buffer.alloc(10, 1));
    await client.trim(4096, 4096);
    await client.writeZeroes(8192, 512);
    expect(writes).toEqual([
      { offset: 100, length: 10, kind: WriteKind.Write },
      { offset: 4096, length: 4096, kind: WriteKind.Trim },
      { offset: 8192, length: 512, kind: WriteKind.WriteZeroes },
    ]);
    gateDelayMs = 150;
    try {
      const started = Date.now();
      await client.write(0, Buffer.alloc(512, 2));
      expect(Date.now() - started).toBeGreaterThanOrEqual(140);
      // A read does not pass the write gate (counted, not timed: a loaded machine may take 100 ms for any read).
      const gatedBefore = gated;
      const readStart = Date.now();
      await client.read(0, 512);
      console.info(`read behind a 150 ms write gate: ${Date.now() - readStart} ms`);
      expect(gated).toBe(gatedBefore);
    } finally {
      gateDelayMs = 0;
    }
    await client.disconnect();
  });

  it('answers bad requests with the errors proto.md names', async () => {
    const client = await NbdClient.connect(tcpTarget(address), { exportName: 'disk' });
    const e = await expectNbdError(client.read(16 * MiB - 10, 20), NbdErrno.EINVAL);
    expect(e.offset).toBe(16 * MiB - 10);
    expect(e.command).toBe('READ');
    await expectNbdError(client.write(16 * MiB, Buffer.alloc(1)), NbdErrno.ENOSPC);
    await expectNbdError(client.writeZeroes(16 * MiB - 1, 2), NbdErrno.ENOSPC);
    await expectNbdError(client.trim(16 * MiB, 1), NbdErrno.EINVAL);
    await expectNbdError(client.request({ type: 42, offset: 0, length: 1 }), NbdErrno.EINVAL);
    await expectNbdError(
      client.request({ type: NbdCommand.Read, flags: 1 << 9, offset: 0, length: 1 }),
      NbdErrno.EINVAL,
    );
    await expectNbdError(
      client.request({ type: NbdCommand.Write, flags: 1 << 1, data: Buffer.alloc(4) }),
      NbdErrno.EINVAL,
    );
    await expectNbdError(client.read(0, 33 * MiB), NbdErrno.EOVERFLOW);
    await expectNbdError(client.blockStatus(0, 4096), NbdErrno.EINVAL);
    await expectNbdError(client.request({ type: NbdCommand.Flush, offset: 1 }), NbdErrno.EINVAL);
    // Still serving after all of that.
    expect((await client.read(0, 16)).length).toBe(16);
    await client.disconnect();

    const simple = await NbdClient.connect(tcpTarget(address), { structuredReplies: false });
    await expectNbdError(simple.read(0, 33 * MiB), NbdErrno.EINVAL);
    await simple.disconnect();

    const ro = await NbdClient.connect(tcpTarget(address), { exportName: 'ro' });
    expect(ro.readOnly).toBe(true);
    await expectNbdError(ro.write(0, Buffer.alloc(4)), NbdErrno.EPERM);
    await expectNbdError(ro.trim(0, 4), NbdErrno.EPERM);
    await expectNbdError(ro.writeZeroes(0, 4), NbdErrno.EPERM);
    expect((await ro.read(0, 4)).equals(Buffer.alloc(4, 7))).toBe(true);
    await ro.disconnect();

    await expect(NbdClient.connect(tcpTarget(address), { exportName: 'nope' })).rejects.toBeInstanceOf(
      NbdExportNotFoundError,
    );
  });

  it('applies nothing of a WRITE whose payload never arrives, and keeps serving others', async () => {
    const setup = await NbdClient.connect(tcpTarget(address));
    const before = randomBytes(65536);
    await setup.write(MiB, before);
    await setup.disconnect();

    const { socket } = await rawSession(tcpTarget(address).port);
    socket.write(encodeRequestHeader({ flags: 0, type: NbdCommand.Write, cookie: 7n, offset: MiB, length: 65536 }));
    socket.write(Buffer.alloc(30_000, 0xee));
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();

    const { socket: half } = await rawSession(tcpTarget(address).port);
    half.write(
      encodeRequestHeader({ flags: 0, type: NbdCommand.Read, cookie: 8n, offset: 0, length: 1 }).subarray(0, 13),
    );
    await new Promise((r) => setTimeout(r, 50));
    half.destroy();

    const after = await NbdClient.connect(tcpTarget(address));
    expect((await after.read(MiB, 65536)).equals(before)).toBe(true);
    await after.disconnect();
  });

  it('hangs up on bad magic, and on an oversized WRITE after refusing it, and reports both', async () => {
    const problems: string[] = [];
    const onProblem = (err: Error) => problems.push(err.message);
    server.on('protocolError', onProblem);
    try {
      const { socket } = await rawSession(tcpTarget(address).port);
      const bad = encodeRequestHeader({ flags: 0, type: NbdCommand.Read, cookie: 1n, offset: 0, length: 1 });
      bad.writeUInt32BE(0xdeadbeef, 0);
      socket.write(bad);
      await waitClose(socket);

      const oversized = await rawSession(tcpTarget(address).port);
      oversized.socket.write(
        encodeRequestHeader({ flags: 0, type: NbdCommand.Write, cookie: 9n, offset: 0, length: 64 * MiB }),
      );
      // The server refuses before the payload: it never holds more than its read-ahead of it.
      for (let i = 0; i < 16 && !oversized.socket.destroyed; i++) oversized.socket.write(Buffer.alloc(MiB, 1));
      const reply = await oversized.reader.readExact(16);
      expect(reply.readUInt32BE(4)).toBe(NbdErrno.EINVAL);
      expect(reply.readBigUInt64BE(8)).toBe(9n);
      await waitClose(oversized.socket);
      expect(problems.some((m) => /bad request magic/.test(m))).toBe(true);
      expect(problems.some((m) => /oversized WRITE/.test(m))).toBe(true);
    } finally {
      server.off('protocolError', onProblem);
    }

    const client = await NbdClient.connect(tcpTarget(address));
    expect((await client.read(0, 512)).length).toBe(512);
    await client.disconnect();
  });

  it('serves other connections while one sits in the middle of a WRITE, and several at once', async () => {
    const { socket: stuck } = await rawSession(tcpTarget(address).port);
    stuck.write(encodeRequestHeader({ flags: 0, type: NbdCommand.Write, cookie: 1n, offset: 0, length: 8192 }));
    stuck.write(Buffer.alloc(100));
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => NbdClient.connect(tcpTarget(address), { maxInFlight: 8 })),
    );
    const region = (i: number) => 2 * MiB + i * 256 * 1024;
    const payloads = clients.map(() => randomBytes(256 * 1024));
    await Promise.all(clients.map((c, i) => c.write(region(i), payloads[i])));
    await Promise.all(clients.map((c) => c.flush()));
    const back = await Promise.all(clients.map((c, i) => clients[(i + 1) % 4].read(region(i), 256 * 1024)));
    back.forEach((b, i) => expect(b.equals(payloads[i])).toBe(true));
    await Promise.all(clients.map((c) => c.disconnect()));
    stuck.destroy();
  });

  it('finishes a gated write before closing, when the server shuts down', async () => {
    const mem = new MemoryExportBackend(MiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const s2 = new NbdServer({ exports: [{ name: 'g', backend: mem, beforeWriteReply: () => gate }] });
    const addr = await s2.listen({ port: 0 });
    const client = await NbdClient.connect(tcpTarget(addr));
    const write = client.write(0, Buffer.alloc(10, 3));
    await new Promise((r) => setTimeout(r, 30));
    const closing = s2.close();
    setTimeout(release, 50);
    await write;
    await closing;
    expect(mem.data.subarray(0, 10).equals(Buffer.alloc(10, 3))).toBe(true);
    await expect(client.read(0, 10)).rejects.toBeInstanceOf(Error);
  });

  it('a client sees its requests fail with NbdConnectionClosedError when the server goes away', async () => {
    const mem = new MemoryExportBackend(MiB);
    const s2 = new NbdServer({ exports: [{ name: 'm', backend: mem }] });
    const addr = await s2.listen({ port: 0 });
    await expect(s2.listen({ port: tcpTarget(addr).port })).rejects.toBeInstanceOf(NbdAddressInUseError);
    const client = await NbdClient.connect(tcpTarget(addr));
    await client.write(0, Buffer.alloc(100, 5));
    await s2.close();
    await expect(client.read(0, 100)).rejects.toBeInstanceOf(NbdConnectionClosedError);
    expect(mem.data.subarray(0, 100).equals(Buffer.alloc(100, 5))).toBe(true);
  });

  // The rate is printed, not asserted: a loaded machine is no place for a speed limit (benchmarks measure speed).
  it('moves data between NbdClient and NbdServer with pipelined 1 MiB requests', async () => {
    const client = await NbdClient.connect(tcpTarget(address), { maxInFlight: 16 });
    const chunk = randomBytes(MiB);
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 16 }, (_, i) => client.write(i * MiB, chunk)));
    await client.flush();
    const writeMs = performance.now() - t0;
    const t1 = performance.now();
    const back = await Promise.all(Array.from({ length: 16 }, (_, i) => client.read(i * MiB, MiB)));
    const readMs = performance.now() - t1;
    back.forEach((b) => expect(b.equals(chunk)).toBe(true));
    const rate = (ms: number) => (16 * MiB) / 1e6 / (ms / 1000);
    console.info(
      `NbdClient ↔ NbdServer, 16 MiB: write+flush ${rate(writeMs).toFixed(0)} MB/s, read ${rate(readMs).toFixed(0)} MB/s`,
    );
    await client.disconnect();
  });

  it('persists writes into the image file', async () => {
    const client = await NbdClient.connect(tcpTarget(address));
    const data = randomBytes(4096);
    await client.write(10 * MiB, data, { fua: true });
    await client.disconnect();
    const file = await readFile(backend.path);
    expect(file.subarray(10 * MiB, 10 * MiB + 4096).equals(data)).toBe(true);
  });

  it('rejects a second listener on the same unix socket path', async () => {
    await expect(server.listen({ path: (unixAddress as { path: string }).path })).rejects.toBeInstanceOf(
      NbdAddressInUseError,
    );
  });
});
