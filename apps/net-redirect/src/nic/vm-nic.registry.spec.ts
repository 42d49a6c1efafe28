import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WanmigError, type VmNicStatus } from '@wanmig/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startInProcessForwarder } from '../relay/forwarder.handle.js';
import { CommandFailedError, type CommandExecutor } from '../route/command.executor.js';
import { VmNicRegistry } from './vm-nic.registry.js';

const NETNS = 'wm1a2b3c-a';
const TUNNEL_HOST = '127.0.0.1';
const LIMIT_MS = 5_000;

/** Records every `ip` command; `failOn` makes the matching ones fail as `ip` would. */
class FakeExecutor implements CommandExecutor {
  readonly commands: string[] = [];
  failOn?: RegExp;
  run(argv: readonly string[]) {
    const command = argv.join(' ');
    this.commands.push(command);
    if (this.failOn?.test(command)) {
      return Promise.reject(
        new CommandFailedError(argv, { exitCode: 2, stderr: 'RTNETLINK answers: Operation not permitted' }),
      );
    }
    return Promise.resolve({ stdout: '', stderr: '' });
  }
}

/** A line server on a unix socket: answers each request line with `<label>:<line>`. */
async function lineServer(path: string, label: string): Promise<Server> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    let partial = '';
    socket.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) socket.write(`${label}:${line}\n`);
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return server;
}

async function freePort(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

class LineClient {
  replies: string[] = [];
  closed = false;
  error?: string;
  private partial = '';
  readonly socket: Socket;
  constructor(host: string, port: number) {
    this.socket = connect({ host, port });
    this.socket.on('error', (err: NodeJS.ErrnoException) => (this.error = err.code));
    this.socket.on('data', (chunk: Buffer) => {
      const lines = (this.partial + chunk.toString()).split('\n');
      this.partial = lines.pop() ?? '';
      this.replies.push(...lines);
    });
    this.socket.on('close', () => (this.closed = true));
  }
  async ask(line: string): Promise<string> {
    const before = this.replies.length;
    this.socket.write(`${line}\n`);
    await until(`the reply to ${line}`, () => this.replies.length > before || this.closed);
    return this.replies[before];
  }
}

async function until(what: string, check: () => boolean, timeoutMs = LIMIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function failure(promise: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (err) {
    return err instanceof WanmigError ? `${err.code}: ${err.message}` : `untyped: ${String(err)}`;
  }
  return 'resolved';
}

describe('VmNicRegistry (fake ip, in-process forwarders on 127.0.0.x, unix socket guests)', () => {
  let dir: string;
  let executor: FakeExecutor;
  let nics: VmNicRegistry;
  let port: number;
  const servers: Server[] = [];
  const clients: LineClient[] = [];

  const sock = (name: string) => join(dir, `${name}.sock`);
  const client = (host: string, p = port) => {
    const c = new LineClient(host, p);
    clients.push(c);
    return c;
  };
  const attach = (vmId: string, address: string, extra: Record<string, unknown> = {}) =>
    nics.attach({ vmId, addresses: [address], ports: [port], socket: sock('one'), framing: 'lines', ...extra });
  const registry = (options: { netns?: string; tunnelHost?: string } = { netns: NETNS, tunnelHost: TUNNEL_HOST }) =>
    new VmNicRegistry({ ...options, ipBin: 'ip', commandTimeoutMs: 1_000 }, executor, (config) =>
      startInProcessForwarder(config),
    );

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'wanmig-nic-'));
    servers.push(await lineServer(sock('one'), 'one'), await lineServer(sock('two'), 'two'));
    executor = new FakeExecutor();
    nics = registry();
    port = await freePort('127.0.0.1');
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await nics.beforeApplicationShutdown();
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
    rmSync(dir, { recursive: true, force: true });
  });

  it('attaches: the address on lo, a forwarder per port to the socket, a tunnel endpoint; a repeat is the same', async () => {
    const attached = await attach('shop', '127.0.0.11');
    expect(executor.commands).toEqual([`ip -n ${NETNS} addr replace 127.0.0.11/32 dev lo`]);
    expect(attached).toMatchObject({
      vmId: 'shop',
      state: 'attached',
      netns: NETNS,
      addresses: ['127.0.0.11'],
      socket: sock('one'),
      framing: 'lines',
      tunnelHost: TUNNEL_HOST,
      connections: { accepted: 0, active: 0, relayed: 0 },
    });
    const [p] = attached.ports;
    expect(p.port).toBe(port);
    expect(p.tunnelPort).toBeGreaterThan(0);
    expect(await client('127.0.0.11').ask('hello')).toBe('one:hello');
    expect(await client(TUNNEL_HOST, p.tunnelPort).ask('via tunnel')).toBe('one:via tunnel');
    await until('both counted', () => nics.status({ vmId: 'shop' }).connections.accepted === 2);

    const again = await attach('shop', '127.0.0.11');
    expect(again.ports).toEqual(attached.ports);
    expect(again.state).toBe('attached');
    expect(executor.commands).toHaveLength(1);
    expect(await failure(attach('shop', '127.0.0.11', { ports: [port, port + 1] }))).toMatch(
      /^CONFLICT: NIC of VM shop: it is attached with other settings \(ports/,
    );
    expect(await failure(attach('shop', '127.0.0.12'))).toMatch(/^CONFLICT: .*addresses 127\.0\.0\.11/);
    expect(await failure(attach('other', '127.0.0.11'))).toMatch(/^CONFLICT: .*127\.0\.0\.11 belong to VM shop/);
    expect(await failure(nics.attach({ vmId: 'x', addresses: ['127.0.0.1'], ports: [1], socket: 'rel' }))).toMatch(
      /^INVALID_REQUEST: .*socket/,
    );
  });

  it('without a namespace configured or asked: UNAVAILABLE, saying what to set; no tunnel host: no tunnel port', async () => {
    nics = registry({});
    expect(await failure(attach('shop', '127.0.0.11'))).toMatch(/^UNAVAILABLE: .*set WANMIG_VM_NETNS/);
    expect(executor.commands).toEqual([]);
    const status = await attach('shop', '127.0.0.11', { netns: 'wm000000-b' });
    expect(status.ports).toEqual([{ port }]);
    expect(status.tunnelHost).toBeUndefined();
    expect(executor.commands).toEqual([`ip -n wm000000-b addr replace 127.0.0.11/32 dev lo`]);
  });

  it('a port in use is CONFLICT and leaves nothing behind: addresses removed, forwarders gone', async () => {
    const taken = createServer();
    const takenPort = await freePort('127.0.0.13');
    await new Promise<void>((resolve) => taken.listen(takenPort, '127.0.0.13', resolve));
    servers.push(taken);
    const err = await failure(
      nics.attach({ vmId: 'shop', addresses: ['127.0.0.13'], ports: [port, takenPort], socket: sock('one') }),
    );
    expect(err).toMatch(new RegExp(`^CONFLICT: NIC of VM shop: port ${takenPort} is already in use`));
    expect(executor.commands).toEqual([
      `ip -n ${NETNS} addr replace 127.0.0.13/32 dev lo`,
      `ip -n ${NETNS} addr del 127.0.0.13/32 dev lo`,
    ]);
    const refused = client('127.0.0.13', port);
    await until('the first port refused', () => refused.closed);
    expect(refused.error).toBe('ECONNREFUSED');
    expect(await failure(() => nics.status({ vmId: 'shop' }))).toMatch(/^NOT_FOUND/);

    executor.failOn = /addr replace/;
    expect(await failure(attach('shop', '127.0.0.14'))).toMatch(
      /^UNAVAILABLE: NIC of VM shop: cannot attach in .*Operation not permitted/,
    );
  });

  it('relays an open connection to the other NIC’s tunnel, and an attach again points it back at the guest', async () => {
    await attach('shop', '127.0.0.21');
    const b = await nics.attach({
      vmId: 'shop-b',
      addresses: ['127.0.0.22'],
      ports: [port],
      socket: sock('two'),
      framing: 'lines',
    });
    const c = client('127.0.0.21');
    expect(await c.ask('x')).toBe('one:x');

    const tunnels = [{ port, tunnelPort: b.ports[0].tunnelPort }];
    const relaying = await nics.relay({ vmId: 'shop', tunnelHost: TUNNEL_HOST, tunnels, maxMs: 60_000 });
    expect(relaying).toMatchObject({
      state: 'relaying',
      relay: { tunnelHost: TUNNEL_HOST, tunnels, maxMs: 60_000 },
      addresses: ['127.0.0.21'],
    });
    expect(await c.ask('y')).toBe('two:y');
    expect(await client('127.0.0.21').ask('new')).toBe('two:new');
    expect(c.closed).toBe(false);
    await until('relayed counted', () => nics.status({ vmId: 'shop' }).connections.relayed === 2);
    expect(nics.status({ vmId: 'shop-b' }).connections.accepted).toBe(2);
    // A repeat of the relay changes nothing.
    expect((await nics.relay({ vmId: 'shop', tunnelHost: TUNNEL_HOST, tunnels, maxMs: 60_000 })).relay).toEqual(
      relaying.relay,
    );

    const back = await attach('shop', '127.0.0.21');
    expect(back.state).toBe('attached');
    expect(back.relay).toBeUndefined();
    expect(await c.ask('z')).toBe('one:z');
    expect(c.closed).toBe(false);

    expect(await failure(nics.relay({ vmId: 'nobody', tunnelHost: TUNNEL_HOST, tunnels, maxMs: 60_000 }))).toMatch(
      /^NOT_FOUND/,
    );
    expect(
      await failure(
        nics.relay({
          vmId: 'shop',
          tunnelHost: TUNNEL_HOST,
          tunnels: [{ port: port + 1, tunnelPort: 1 }],
          maxMs: 60_000,
        }),
      ),
    ).toMatch(new RegExp(`^INVALID_REQUEST: NIC of VM shop: port\\(s\\) ${port + 1} are not attached`));
    const own = [{ port, tunnelPort: back.ports[0].tunnelPort! }];
    expect(await failure(nics.relay({ vmId: 'shop', tunnelHost: TUNNEL_HOST, tunnels: own, maxMs: 60_000 }))).toMatch(
      /^INVALID_REQUEST: .* are its own endpoints: a relay there would loop back into it/,
    );
    expect(
      await failure(
        nics.relay({ vmId: 'shop', tunnelHost: '127.0.0.21', tunnels: [{ port, tunnelPort: port }], maxMs: 60_000 }),
      ),
    ).toMatch(/^INVALID_REQUEST: .*own endpoints/);
    expect(nics.status({ vmId: 'shop' }).state).toBe('attached');
    expect(
      await failure(nics.relay({ vmId: 'shop', tunnelHost: TUNNEL_HOST, tunnels: [{ port }], maxMs: 60_000 })),
    ).toMatch(/^INVALID_REQUEST: invalid VmRelayRequest\.tunnels\[0\]: tunnelPort/);
  });

  it('detaches itself at maxMs, and once idle for idleMs (not while a connection is open)', async () => {
    await attach('max', '127.0.0.31');
    await nics.relay({ vmId: 'max', tunnelHost: TUNNEL_HOST, tunnels: [{ port, tunnelPort: 9 }], maxMs: 1_000 });
    await attach('idle', '127.0.0.32');
    // The relay goes to another NIC's tunnel, as to the new site's: to its own it would loop back into itself.
    const next = await nics.attach({ vmId: 'idle-b', addresses: ['127.0.0.33'], ports: [port], socket: sock('two') });
    const c = client('127.0.0.32');
    expect(await c.ask('a')).toBe('one:a');
    await nics.relay({
      vmId: 'idle',
      tunnelHost: TUNNEL_HOST,
      tunnels: [{ port, tunnelPort: next.ports[0].tunnelPort }],
      maxMs: 60_000,
      idleMs: 100,
    });
    expect(await c.ask('b')).toBe('two:b');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(nics.status({ vmId: 'idle' }).state).toBe('relaying');
    c.socket.destroy();
    await until('idle detach', () => nics.status({ vmId: 'idle' }).state === 'detached');
    expect(nics.status({ vmId: 'idle' })).toMatchObject({ stoppedReason: 'idle', pids: [] });
    await until('max-time detach', () => nics.status({ vmId: 'max' }).state === 'detached');
    const max: VmNicStatus = nics.status({ vmId: 'max' });
    expect(max).toMatchObject({ stoppedReason: 'max-time', addresses: ['127.0.0.31'] });
    expect(executor.commands).toContain(`ip -n ${NETNS} addr del 127.0.0.31/32 dev lo`);
    expect(executor.commands).toContain(`ip -n ${NETNS} addr del 127.0.0.32/32 dev lo`);
    const refused = client('127.0.0.31');
    await until('refused after the detach', () => refused.closed);
    expect(refused.error).toBe('ECONNREFUSED');
  });

  it('detach cuts connections and is idempotent; a detached NIC can be attached anew; shutdown detaches all', async () => {
    await attach('shop', '127.0.0.41');
    const c = client('127.0.0.41');
    expect(await c.ask('a')).toBe('one:a');
    const detached = await nics.detach({ vmId: 'shop' });
    expect(detached).toMatchObject({ state: 'detached', stoppedReason: 'requested', connections: { closed: 1 } });
    await until('the client cut', () => c.closed);
    expect(await nics.detach({ vmId: 'shop', force: true })).toEqual(detached);
    expect(await failure(nics.detach({ vmId: 'nobody' }))).toMatch(/^NOT_FOUND/);
    expect(
      await failure(
        nics.relay({ vmId: 'shop', tunnelHost: TUNNEL_HOST, tunnels: [{ port, tunnelPort: 9 }], maxMs: 1000 }),
      ),
    ).toMatch(/^CONFLICT: .*detached/);

    expect((await attach('shop', '127.0.0.41', { ports: [port, await freePort('127.0.0.1')] })).state).toBe('attached');
    await nics.beforeApplicationShutdown();
    expect(nics.status({ vmId: 'shop' })).toMatchObject({ state: 'detached', stoppedReason: 'shutdown' });
    expect(await failure(attach('new', '127.0.0.42'))).toMatch(/^UNAVAILABLE: net-redirect is shutting down/);
  });
});
