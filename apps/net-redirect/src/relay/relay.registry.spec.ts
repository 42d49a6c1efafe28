import { connect, createServer, type Server, type Socket } from 'node:net';
import { WanmigError, type RelayStatusReply } from '@wanmig/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startInProcessForwarder } from './forwarder.handle.js';
import { RelayRegistry } from './relay.registry.js';

const MIGRATION = '0b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a';
const OTHER = '1b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a';
const HOST = '127.0.0.1';
const LIMIT_MS = 5_000;

/**
 * The target: echoes what it reads; once the client's half is closed it writes `bye` (after `byeDelayMs`, so the
 * relay must carry data after a half-close) and closes its own.
 */
async function echoServer(byeDelayMs = 0): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.on('data', (chunk) => socket.write(chunk));
    socket.on('end', () => setTimeout(() => socket.end('bye'), byeDelayMs));
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return server;
}

function portOf(server: Server): number {
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('not listening');
  return address.port;
}

/** A client connection that records what it receives and how it ended; it closes its side once the other did. */
class Client {
  received = '';
  ended = false;
  closed: Promise<{ error?: string }>;
  readonly socket: Socket;
  constructor(port: number) {
    this.socket = connect({ host: HOST, port, allowHalfOpen: true });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (text: string) => (this.received += text));
    this.socket.on('end', () => {
      this.ended = true;
      this.socket.end();
    });
    this.closed = new Promise((resolve) => {
      let error: string | undefined;
      this.socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
      this.socket.on('close', () => resolve({ error }));
    });
  }

  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
  }
}

async function until(what: string, check: () => boolean, timeoutMs = LIMIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function codeOf(promise: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (err) {
    return err instanceof WanmigError ? `${err.code}: ${err.message}` : `untyped: ${String(err)}`;
  }
  return 'resolved';
}

describe('RelayRegistry (in-process forwarder on 127.0.0.1)', () => {
  let target: Server;
  let relays: RelayRegistry;
  const clients: Client[] = [];

  const client = (port: number) => {
    const c = new Client(port);
    clients.push(c);
    return c;
  };
  const start = (extra: Record<string, unknown> = {}, migrationId = MIGRATION): Promise<RelayStatusReply> =>
    relays.start({
      migrationId,
      listen: { host: HOST, port: 0 },
      target: { host: HOST, port: portOf(target) },
      maxMs: LIMIT_MS,
      ...extra,
    });
  const status = (migrationId = MIGRATION) => relays.status({ migrationId });

  beforeEach(async () => {
    target = await echoServer(30);
    relays = new RelayRegistry((config, netns) =>
      netns === undefined ? startInProcessForwarder(config) : Promise.reject(new Error('no namespaces here')),
    );
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await relays.beforeApplicationShutdown();
    await new Promise((resolve) => target.close(resolve));
  });

  it('forwards connections both ways, carries data after a half-close, and counts connections and bytes', async () => {
    const started = await start();
    expect(started).toMatchObject({
      migrationId: MIGRATION,
      state: 'listening',
      listen: { host: HOST },
      target: { host: HOST, port: portOf(target) },
      connections: { accepted: 0, active: 0, closed: 0, failed: 0 },
      bytes: { in: 0, out: 0 },
    });
    expect(started.listen.port).toBeGreaterThan(0);
    const port = started.listen.port;
    const three = [client(port), client(port), client(port)];
    await Promise.all(three.map((c) => c.connected()));
    three.forEach((c, i) => c.socket.write(`hello ${i}`));
    await until('the echoes', () => three.every((c, i) => c.received === `hello ${i}`));
    expect(status().connections).toMatchObject({ accepted: 3, active: 3, closed: 0 });
    // Half-close: each client ends its side; the target answers `bye` 30 ms later, through the relay.
    for (const c of three) c.socket.end();
    const ends = await Promise.all(three.map((c) => c.closed));
    expect(ends.every((e) => e.error === undefined)).toBe(true);
    three.forEach((c, i) => expect(c.received).toBe(`hello ${i}bye`));
    expect(three.every((c) => c.ended)).toBe(true);
    await until('the relay to count the closes', () => status().connections.closed === 3);
    expect(status()).toMatchObject({
      state: 'listening',
      connections: { accepted: 3, active: 0, closed: 3, failed: 0 },
      bytes: { in: 3 * 'hello 0'.length, out: 3 * 'hello 0bye'.length },
    });
  });

  it('stops at maxMs, cutting the connections still open', async () => {
    const started = await start({ maxMs: 300 });
    const c = client(started.listen.port);
    await c.connected();
    c.socket.write('x');
    await until('the echo', () => c.received === 'x');
    const t0 = Date.now();
    await c.closed;
    expect(Date.now() - t0).toBeLessThan(LIMIT_MS);
    await until('stopped', () => status().state === 'stopped');
    expect(status()).toMatchObject({ stoppedReason: 'max-time', connections: { accepted: 1, active: 0, closed: 1 } });
    expect(status().stoppedAt).toBeDefined();
    expect((await client(started.listen.port).closed).error).toBe('ECONNREFUSED');
  });

  it('stops once no connection has been open for idleMs, not while one is', async () => {
    const idle = await start({ idleMs: 150 });
    await until('idle stop', () => status().state === 'stopped');
    expect(status().stoppedReason).toBe('idle');

    const busy = await start({ idleMs: 150 }, OTHER);
    const c = client(busy.listen.port);
    await c.connected();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(status(OTHER).state).toBe('listening');
    c.socket.end();
    await c.closed;
    await until('idle stop after the last connection', () => status(OTHER).state === 'stopped');
    expect(status(OTHER)).toMatchObject({ stoppedReason: 'idle', connections: { accepted: 1, closed: 1 } });
    expect(idle.state).toBe('listening');
  });

  it('stops gracefully: no new connections, open ones finish, then stopped; force cuts them', async () => {
    const started = await start();
    const open = client(started.listen.port);
    await open.connected();
    const draining = await relays.stop({ migrationId: MIGRATION });
    expect(draining.state).toBe('draining');
    expect((await client(started.listen.port).closed).error).toBe('ECONNREFUSED');
    open.socket.write('still here');
    await until('the echo while draining', () => open.received === 'still here');
    open.socket.end();
    await open.closed;
    await until('stopped', () => status().state === 'stopped');
    expect(status()).toMatchObject({ stoppedReason: 'requested', connections: { accepted: 1, active: 0, closed: 1 } });
    expect(await relays.stop({ migrationId: MIGRATION, force: true })).toMatchObject({ state: 'stopped' });

    const other = await start({}, OTHER);
    const cut = client(other.listen.port);
    await cut.connected();
    await until('accepted', () => status(OTHER).connections.active === 1);
    expect(await relays.stop({ migrationId: OTHER, force: true })).toMatchObject({
      state: 'stopped',
      stoppedReason: 'requested',
      connections: { accepted: 1, active: 0, closed: 1 },
    });
    await cut.closed;
  });

  it('counts a connection the target refuses as failed', async () => {
    const gone = await echoServer();
    const port = portOf(gone);
    await new Promise((resolve) => gone.close(resolve));
    const started = await relays.start({
      migrationId: MIGRATION,
      listen: { host: HOST, port: 0 },
      target: { host: HOST, port },
      maxMs: LIMIT_MS,
    });
    await client(started.listen.port).closed;
    await until('the failure counted', () => status().connections.closed === 1);
    expect(status().connections).toEqual({ accepted: 1, active: 0, closed: 1, failed: 1 });
  });

  it('answers a repeat with the status, refuses another start of the same migration, a taken port, unknown ids', async () => {
    const started = await start();
    const again = await relays.start({
      migrationId: MIGRATION,
      listen: { host: HOST, port: 0 },
      target: { host: HOST, port: portOf(target) },
      maxMs: LIMIT_MS,
    });
    expect(again.listen.port).toBe(started.listen.port);
    expect(await codeOf(start({ maxMs: 1000 }))).toMatch(/^CONFLICT: migration .* a relay with other settings/);

    expect(
      await codeOf(
        relays.start({
          migrationId: OTHER,
          listen: { host: HOST, port: started.listen.port },
          target: { host: HOST, port: portOf(target) },
          maxMs: LIMIT_MS,
        }),
      ),
    ).toBe(`CONFLICT: relay of migration ${OTHER}: 127.0.0.1:${started.listen.port} is already in use`);
    expect(await codeOf(() => status(OTHER))).toMatch(/^NOT_FOUND: no relay of migration/);
    expect(await codeOf(relays.stop({ migrationId: OTHER }))).toMatch(/^NOT_FOUND: /);
    expect(await codeOf(start({ listen: { host: HOST, port: 0, netns: 'nowhere' } }, OTHER))).toBe(
      `UNAVAILABLE: relay of migration ${OTHER} cannot start: listen on 127.0.0.1:0 in namespace nowhere: no namespaces here`,
    );
    for (const bad of [{ maxMs: 0 }, { target: { host: 'example.com', port: 80 } }, { listen: { port: 1 } }]) {
      expect(await codeOf(start(bad, OTHER))).toMatch(/^INVALID_REQUEST: /);
    }
    expect(await codeOf(() => relays.status({}))).toMatch(/^INVALID_REQUEST: /);
  });

  it('cuts every relay at shutdown and takes no new one', async () => {
    const started = await start();
    const c = client(started.listen.port);
    await c.connected();
    await relays.beforeApplicationShutdown();
    await c.closed;
    expect(status()).toMatchObject({ state: 'stopped', stoppedReason: 'shutdown' });
    expect(await codeOf(start({}, OTHER))).toBe('UNAVAILABLE: net-redirect is shutting down');
  });
});
