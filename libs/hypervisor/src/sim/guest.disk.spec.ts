import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryExportBackend, NbdServer } from '@wanmig/nbd';
import { GuestDisk } from './guest.disk.js';

const SIZE = 1024 * 1024;

/** Holds every write (and read) until released: they are then in flight when the "process" dies. */
class HeldBackend extends MemoryExportBackend {
  held = false;
  private waiting: Array<() => void> = [];
  override async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    while (this.held) await new Promise<void>((resolve) => this.waiting.push(resolve));
    return super.write(offset, data, fua);
  }
  override async read(offset: number, length: number): Promise<Buffer> {
    while (this.held) await new Promise<void>((resolve) => this.waiting.push(resolve));
    return super.read(offset, length);
  }
  release(): void {
    this.held = false;
    for (const wake of this.waiting.splice(0)) wake();
  }
}

/**
 * The disk server's process as the guest sees it: a fixed port in front of an NBD server. `crash` drops every
 * connection at once and stops listening (kill -9); `restart` listens on the same port again.
 */
class CrashableFront {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;
  constructor(private readonly backendPort: number) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = connect({ port: this.backendPort, host: '127.0.0.1' });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => this.sockets.delete(s));
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  crash(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.server?.close();
  }
}

describe('GuestDisk', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function bed() {
    const backend = new HeldBackend(SIZE);
    const nbd = new NbdServer({ exports: [{ name: 'disk', backend }] });
    const address = await nbd.listen({ host: '127.0.0.1', port: 0 });
    cleanups.push(() => nbd.close());
    const front = new CrashableFront((address as { port: number }).port);
    await front.start();
    cleanups.push(() => front.crash());
    const lines: string[] = [];
    const disk = await GuestDisk.connect(
      { target: { host: '127.0.0.1', port: front.port }, exportName: 'disk' },
      (line) => lines.push(line),
    );
    cleanups.push(() => disk.close());
    return { backend, front, disk, lines };
  }

  it('waits for a disk server that was killed and sends again what it never answered', async () => {
    const { backend, front, disk, lines } = await bed();
    disk.write(0, Buffer.alloc(4096, 1), false);
    await disk.quiesce();
    backend.held = true;
    disk.write(8192, Buffer.alloc(4096, 2), false);
    disk.write(16384, Buffer.alloc(4096, 3), true);
    const read = disk.read(0, 4096);
    await new Promise((resolve) => setTimeout(resolve, 50));
    front.crash();
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Away: the guest issues no new writes meanwhile, and nothing has failed.
    expect(disk.ready).toBe(false);
    expect(disk.reconnecting).toBe(true);
    expect(disk.failed).toBeUndefined();
    // The old process's writes may have reached the disk or not; the new one serves the same disk.
    backend.release();
    await front.start();
    await disk.quiesce();
    expect((await read).equals(Buffer.alloc(4096, 1))).toBe(true);
    expect(backend.data.subarray(8192, 8192 + 4096).equals(Buffer.alloc(4096, 2))).toBe(true);
    expect(backend.data.subarray(16384, 16384 + 4096).equals(Buffer.alloc(4096, 3))).toBe(true);
    expect(disk.stats).toMatchObject({ writes: 3, errors: 0, reconnects: 1 });
    expect(disk.stats.reissued).toBeGreaterThanOrEqual(2);
    expect(disk.ready).toBe(true);
    expect(lines.some((l) => l.startsWith('disk connection lost'))).toBe(true);
    expect(lines.some((l) => l.startsWith('disk reconnected after'))).toBe(true);
  });

  it('fails what still waits when the guest stops while its disk is away', async () => {
    const { front, disk, backend } = await bed();
    backend.held = true;
    const read = disk.read(0, 4096);
    await new Promise((resolve) => setTimeout(resolve, 50));
    front.crash();
    await new Promise((resolve) => setTimeout(resolve, 150));
    await disk.close();
    await expect(read).rejects.toThrow(/closed/);
    backend.release();
  });
});
