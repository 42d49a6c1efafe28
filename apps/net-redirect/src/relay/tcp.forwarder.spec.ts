import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TcpForwarder } from './tcp.forwarder.js';

const HOST = '127.0.0.1';
const LIMIT_MS = 5_000;

/**
 * A line server on a unix socket: answers each request line with `<label>:<line>`, except lines starting with `hold`,
 * which it never answers (a request in flight when the forwarder retargets), and lines starting with `split`, whose
 * answer it writes in two halves 100 ms apart.
 */
async function lineServer(path: string, label: string, sockets: Socket[] = []): Promise<Server> {
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    let partial = '';
    let answers = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.startsWith('hold')) continue;
        // Answers stay in order, as the guest's: a split answer finishes before the next one starts.
        answers = answers.then(async () => {
          if (!line.startsWith('split')) {
            socket.write(`${label}:${line}\n`);
            return;
          }
          socket.write(`${label}:${line.slice(0, 3)}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
          socket.write(`${line.slice(3)}\n`);
        });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return server;
}

/** A client connection that records the reply lines and whether it closed. */
class LineClient {
  replies: string[] = [];
  closed = false;
  private partial = '';
  readonly socket: Socket;
  constructor(port: number, host = HOST) {
    this.socket = connect({ host, port });
    this.socket.on('error', () => {});
    this.socket.on('data', (chunk: Buffer) => {
      const lines = (this.partial + chunk.toString()).split('\n');
      this.partial = lines.pop() ?? '';
      this.replies.push(...lines);
    });
    this.socket.on('close', () => (this.closed = true));
  }
  send(line: string): void {
    this.socket.write(`${line}\n`);
  }
}

async function until(what: string, check: () => boolean, timeoutMs = LIMIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('TcpForwarder retarget (unix socket targets)', () => {
  let dir: string;
  const servers: Server[] = [];
  const clients: LineClient[] = [];
  let forwarder: TcpForwarder | undefined;

  const client = (port: number, host = HOST) => {
    const c = new LineClient(port, host);
    clients.push(c);
    return c;
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'wanmig-fwd-'));
    servers.push(await lineServer(join(dir, 'one.sock'), 'one'), await lineServer(join(dir, 'two.sock'), 'two'));
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await forwarder?.destroy();
    forwarder = undefined;
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
    rmSync(dir, { recursive: true, force: true });
  });

  it('with lines framing carries an open connection over: the unanswered request is answered by the new target', async () => {
    forwarder = await TcpForwarder.listen({
      listen: { host: HOST, port: 0 },
      alsoListen: [{ host: '127.0.0.2', port: 0 }],
      target: { path: join(dir, 'one.sock') },
      framing: 'lines',
    });
    const [main, second] = forwarder.addresses;
    expect(main.port).toBeGreaterThan(0);
    expect(second).toMatchObject({ host: '127.0.0.2' });
    const c = client(main.port);
    c.send('a');
    await until('the first reply', () => c.replies.length === 1);
    // A request the old target never answers, and half of the next line: both must reach the new target.
    c.send('hold b');
    c.socket.write('par');
    await new Promise((resolve) => setTimeout(resolve, 50));
    forwarder.retarget({ path: join(dir, 'two.sock') }, true);
    c.socket.write('tial\n');
    c.send('d');
    await until('the replies from the new target', () => c.replies.length === 3);
    expect(c.replies).toEqual(['one:a', 'two:partial', 'two:d']);
    // `hold b` is replayed too, and the new target holds it as well: nothing answered twice, nothing lost.
    expect(c.closed).toBe(false);
    expect(forwarder.counters).toMatchObject({ accepted: 1, active: 1, relayed: 1, failed: 0 });

    // New connections (on any listener) go to the new target and, the target being a relay, count as relayed.
    const other = client(second.port, '127.0.0.2');
    other.send('e');
    await until('the reply on the second listener', () => other.replies.length === 1);
    expect(other.replies).toEqual(['two:e']);
    expect(forwarder.counters).toMatchObject({ accepted: 2, relayed: 2 });
  });

  it('waits for a reply line half delivered before it carries the connection over (no duplicate half line)', async () => {
    forwarder = await TcpForwarder.listen({
      listen: { host: HOST, port: 0 },
      target: { path: join(dir, 'one.sock') },
      framing: 'lines',
    });
    const c = client(forwarder.address.port);
    c.send('split me');
    // The first half of the reply is through the forwarder (the guest sends the rest 100 ms later).
    await until('half the reply out', () => forwarder!.counters.bytesOut > 0);
    forwarder.retarget({ path: join(dir, 'two.sock') }, true);
    c.send('after');
    await until('both replies', () => c.replies.length === 2);
    expect(c.replies).toEqual(['one:split me', 'two:after']);
    expect(c.closed).toBe(false);
    expect(forwarder.counters.relayed).toBe(1);
  });

  it('a retarget back (relay: false) carries an open connection home', async () => {
    forwarder = await TcpForwarder.listen({
      listen: { host: HOST, port: 0 },
      target: { path: join(dir, 'one.sock') },
      framing: 'lines',
    });
    const c = client(forwarder.address.port);
    c.send('x');
    await until('x from one', () => c.replies.length === 1);
    forwarder.retarget({ path: join(dir, 'two.sock') }, true);
    c.send('y');
    await until('y from two', () => c.replies.length === 2);
    forwarder.retarget({ path: join(dir, 'one.sock') }, false);
    c.send('z');
    await until('z from one', () => c.replies.length === 3);
    expect(c.replies).toEqual(['one:x', 'two:y', 'one:z']);
    expect(c.closed).toBe(false);
    expect(forwarder.counters).toMatchObject({ accepted: 1, active: 1, relayed: 1 });
  });

  it('with no framing keeps an open connection on its old target; new ones go to the new target', async () => {
    forwarder = await TcpForwarder.listen({ listen: { host: HOST, port: 0 }, target: { path: join(dir, 'one.sock') } });
    const port = forwarder.address.port;
    const old = client(port);
    old.send('a');
    await until('the first reply', () => old.replies.length === 1);
    forwarder.retarget({ path: join(dir, 'two.sock') }, true);
    old.send('b');
    const fresh = client(port);
    fresh.send('c');
    await until('both replies', () => old.replies.length === 2 && fresh.replies.length === 1);
    expect(old.replies).toEqual(['one:a', 'one:b']);
    expect(fresh.replies).toEqual(['two:c']);
    expect(forwarder.counters).toMatchObject({ accepted: 2, active: 2, relayed: 1 });
  });

  it('closes the client, counted failed, when the new target cannot be reached', async () => {
    forwarder = await TcpForwarder.listen({
      listen: { host: HOST, port: 0 },
      target: { path: join(dir, 'one.sock') },
      framing: 'lines',
    });
    const c = client(forwarder.address.port);
    c.send('a');
    await until('the first reply', () => c.replies.length === 1);
    forwarder.retarget({ path: join(dir, 'nobody.sock') }, true);
    await until('the client to be closed', () => c.closed);
    await until('the close counted', () => forwarder!.counters.closed === 1);
    expect(forwarder.counters).toMatchObject({ accepted: 1, active: 0, closed: 1, failed: 1 });
  });

  describe('holding a connection whose upstream went away with requests unanswered', () => {
    const listen = async (holdMs: number) =>
      (forwarder = await TcpForwarder.listen({
        listen: { host: HOST, port: 0 },
        target: { path: join(dir, 'gone.sock') },
        framing: 'lines',
        holdMs,
      }));

    it('holds the client and replays to the target of a retarget', async () => {
      const sockets: Socket[] = [];
      const gone = await lineServer(join(dir, 'gone.sock'), 'gone', sockets);
      servers.push(gone);
      await listen(5_000);
      const c = client(forwarder!.address.port);
      c.send('a');
      await until('the first reply', () => c.replies.length === 1);
      c.send('hold b');
      await new Promise((resolve) => setTimeout(resolve, 30));
      // The guest stops: its connections go, its socket too.
      await new Promise((resolve) => {
        gone.close(resolve);
        for (const socket of sockets) socket.destroy();
      });
      c.send('c');
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(c.closed).toBe(false);
      forwarder!.retarget({ path: join(dir, 'one.sock') }, true);
      await until('the held request answered by the new target', () => c.replies.length === 2);
      expect(c.replies).toEqual(['gone:a', 'one:c']);
      expect(c.closed).toBe(false);
      expect(forwarder!.counters).toMatchObject({ accepted: 1, active: 1, relayed: 1, failed: 0 });
    });

    it('reconnects to the same target when it comes back (a rollback)', async () => {
      const sockets: Socket[] = [];
      let back = await lineServer(join(dir, 'gone.sock'), 'gone', sockets);
      await listen(5_000);
      const c = client(forwarder!.address.port);
      c.send('a');
      await until('the first reply', () => c.replies.length === 1);
      await new Promise((resolve) => {
        back.close(resolve);
        c.send('hold x');
        for (const socket of sockets) socket.destroy();
      });
      c.send('b');
      await new Promise((resolve) => setTimeout(resolve, 150));
      back = await lineServer(join(dir, 'gone.sock'), 'back');
      servers.push(back);
      await until('answered by the target back', () => c.replies.length === 2);
      expect(c.replies).toEqual(['gone:a', 'back:b']);
      expect(c.closed).toBe(false);
      expect(forwarder!.counters.relayed).toBe(0);
    });

    it('closes the client, counted failed, when nothing takes it over within holdMs', async () => {
      const sockets: Socket[] = [];
      const gone = await lineServer(join(dir, 'gone.sock'), 'gone', sockets);
      await listen(300);
      const c = client(forwarder!.address.port);
      c.send('a');
      await until('the first reply', () => c.replies.length === 1);
      // Taken before the guest goes, so that the hold (which starts after) is all inside the time measured.
      const t0 = Date.now();
      await new Promise((resolve) => {
        gone.close(resolve);
        c.send('hold x');
        setTimeout(() => sockets.forEach((socket) => socket.destroy()), 20);
      });
      await until('the client closed', () => c.closed);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(200);
      await until('counted', () => forwarder!.counters.closed === 1);
      expect(forwarder!.counters).toMatchObject({ active: 0, failed: 1 });
    });

    it('does not hold a connection with nothing unanswered: the client sees the close', async () => {
      const sockets: Socket[] = [];
      const gone = await lineServer(join(dir, 'gone.sock'), 'gone', sockets);
      servers.push(gone);
      // A held connection would stay open a minute: far past the 5 s the close is waited for.
      await listen(60_000);
      const c = client(forwarder!.address.port);
      c.send('a');
      await until('the first reply', () => c.replies.length === 1);
      for (const socket of sockets) socket.destroy();
      await until('the client closed', () => c.closed);
      await until('counted', () => forwarder!.counters.closed === 1);
      expect(forwarder!.counters).toMatchObject({ active: 0, failed: 0 });
    });
  });

  it('a listen error leaves nothing open', async () => {
    const taken = await TcpForwarder.listen({ listen: { host: HOST, port: 0 }, target: { host: HOST, port: 1 } });
    try {
      const err = await TcpForwarder.listen({
        listen: { host: HOST, port: 0 },
        alsoListen: [taken.address],
        target: { host: HOST, port: 1 },
      }).catch((e: NodeJS.ErrnoException) => e);
      expect((err as NodeJS.ErrnoException).code).toBe('EADDRINUSE');
    } finally {
      await taken.destroy();
    }
  });
});
