import { mkdtemp, rm } from 'node:fs/promises';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode } from '@wanmig/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from './qmp.client.js';
import { QmpClosedError, QmpCommandError, QmpConnectError, QmpProtocolError, QmpTimeoutError } from './qmp.errors.js';
import { type QmpEvent } from './qmp.types.js';

interface Request {
  execute: string;
  arguments?: Record<string, unknown>;
  id: number;
}

const GREETING = {
  QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: ['oob'] },
};
const event = (name: string, data?: Record<string, unknown>) =>
  JSON.stringify({ timestamp: { seconds: 1, microseconds: 2 }, event: name, ...(data ? { data } : {}) });

/** A QMP server on a unix socket: greets, accepts qmp_capabilities, hands every other request to `onRequest`. */
class FakeQmpServer {
  readonly requests: Request[] = [];
  onRequest: (req: Request, peer: Socket) => void = () => undefined;
  greeting: string | undefined = JSON.stringify(GREETING);
  peer: Socket | undefined;

  private constructor(private readonly server: Server) {}

  static async start(path: string): Promise<FakeQmpServer> {
    const server = createServer();
    const fake = new FakeQmpServer(server);
    server.on('connection', (peer) => fake.accept(peer));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return fake;
  }

  private accept(peer: Socket): void {
    this.peer = peer;
    peer.on('error', () => undefined);
    if (this.greeting !== undefined) peer.write(`${this.greeting}\r\n`);
    let partial = '';
    peer.setEncoding('utf8');
    peer.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const req = JSON.parse(line) as Request;
        this.requests.push(req);
        if (req.execute === 'qmp_capabilities') peer.write(`${JSON.stringify({ return: {}, id: req.id })}\r\n`);
        else this.onRequest(req, peer);
      }
    });
  }

  async stop(): Promise<void> {
    this.peer?.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

const reply = (peer: Socket, req: Request, value: unknown = {}) =>
  peer.write(`${JSON.stringify({ return: value, id: req.id })}\r\n`);

describe('QmpClient', () => {
  let dir: string;
  let path: string;
  let fake: FakeQmpServer;
  const clients: QmpClient[] = [];
  const connect = async (timeoutMs = 2000) => {
    const client = await QmpClient.connect(path, { timeoutMs, commandTimeoutMs: 2000 });
    clients.push(client);
    return client;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qmp-spec-'));
    path = join(dir, 'qmp.sock');
    fake = await FakeQmpServer.start(path);
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the greeting, then negotiates capabilities before anything else', async () => {
    const client = await connect();
    expect(client.version).toEqual(GREETING.QMP.version);
    expect(client.greeting.QMP.capabilities).toEqual(['oob']);
    expect(fake.requests).toEqual([{ execute: 'qmp_capabilities', id: expect.any(Number) as number }]);
    expect(client.isOpen).toBe(true);
  });

  it('matches concurrent replies to their requests by id, whatever their order', async () => {
    const held: Request[] = [];
    fake.onRequest = (req, peer) => {
      held.push(req);
      if (held.length < 3) return;
      // Reverse order, all three in one chunk.
      peer.write(
        held
          .reverse()
          .map((r) => `${JSON.stringify({ return: { echo: r.arguments }, id: r.id })}\r\n`)
          .join(''),
      );
    };
    const client = await connect();
    const results = await Promise.all([
      client.execute('a', { n: 1 }),
      client.execute('b', { n: 2 }),
      client.execute('c', { n: 3 }),
    ]);
    expect(results).toEqual([{ echo: { n: 1 } }, { echo: { n: 2 } }, { echo: { n: 3 } }]);
    expect(new Set(fake.requests.map((r) => r.id)).size).toBe(4);
  });

  it('rejects an error reply with QmpCommandError carrying class, desc and command', async () => {
    fake.onRequest = (req, peer) => {
      const error =
        req.execute === 'nope'
          ? { class: 'CommandNotFound', desc: 'The command nope has not been found' }
          : { class: 'DeviceNotFound', desc: "Device 'x' not found" };
      peer.write(`${JSON.stringify({ id: req.id, error })}\r\n`);
    };
    const client = await connect();
    const err = await client.execute('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toMatchObject({
      command: 'nope',
      errorClass: 'CommandNotFound',
      desc: 'The command nope has not been found',
      code: ErrorCode.InvalidRequest,
      name: 'QmpCommandError',
    });
    await expect(client.execute('device_del', { id: 'x' })).rejects.toMatchObject({
      errorClass: 'DeviceNotFound',
      code: ErrorCode.NotFound,
    });
  });

  it('delivers events interleaved with replies to named and * listeners and to waitForEvent', async () => {
    fake.onRequest = (req, peer) =>
      peer.write(
        [event('STOP'), JSON.stringify({ return: {}, id: req.id }), event('JOB', { id: 'j1', status: 'ready' })]
          .map((l) => `${l}\r\n`)
          .join(''),
      );
    const client = await connect();
    const stops: QmpEvent[] = [];
    const all: string[] = [];
    const offStop = client.on('STOP', (e) => stops.push(e));
    client.on('*', (e) => all.push(e.event));
    const stopped = client.waitForEvent('STOP');
    const ready = client.waitForEvent<{ id: string; status: string }>('JOB', (e) => e.data?.status === 'ready');
    await expect(client.execute('stop')).resolves.toEqual({});
    expect((await stopped).timestamp).toEqual({ seconds: 1, microseconds: 2 });
    expect((await ready).data).toEqual({ id: 'j1', status: 'ready' });
    expect(stops).toHaveLength(1);
    expect(all).toEqual(['STOP', 'JOB']);
    offStop();
    await client.execute('stop');
    expect(stops).toHaveLength(1);
    expect(all).toEqual(['STOP', 'JOB', 'STOP', 'JOB']);
  });

  it('reassembles lines split across chunks, even inside a multi-byte character', async () => {
    fake.onRequest = (req, peer) => {
      const bytes = Buffer.from(
        `${event('NOTE', { text: 'héllo ✓' })}\r\n${JSON.stringify({ return: { s: 'ünï' }, id: req.id })}\r\n`,
      );
      void (async () => {
        for (let i = 0; i < bytes.length; i += 3) {
          peer.write(bytes.subarray(i, i + 3));
          await sleep(1);
        }
      })();
    };
    const client = await connect();
    const note = client.waitForEvent('NOTE');
    await expect(client.execute('x')).resolves.toEqual({ s: 'ünï' });
    expect((await note).data).toEqual({ text: 'héllo ✓' });
  });

  it('rejects pending requests and event waits with QmpClosedError when the server closes', async () => {
    fake.onRequest = (_req, peer) => setTimeout(() => peer.destroy(), 20);
    const client = await connect();
    const waiting = client.waitForEvent('NEVER', undefined, 5000);
    const results = await Promise.allSettled([client.execute('a'), client.execute('b'), waiting]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(QmpClosedError);
    }
    const err = (results[0] as PromiseRejectedResult).reason as QmpClosedError;
    expect(err.code).toBe(ErrorCode.Unavailable);
    expect(err.message).toContain(path);
    expect(await client.closed).toBe(err);
    expect(client.isOpen).toBe(false);
    await expect(client.execute('c')).rejects.toBe(err);
  });

  it('times out a command with QmpTimeoutError, ignores its late reply and stays usable', async () => {
    let first: Request | undefined;
    fake.onRequest = (req, peer) => {
      if (req.execute === 'slow') first = req;
      else {
        reply(peer, first!, 'late');
        reply(peer, req, 'fast');
      }
    };
    const client = await connect();
    const err = await client.execute('slow', undefined, { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect(err).toMatchObject({ command: 'slow', timeoutMs: 50, code: ErrorCode.Unavailable });
    await expect(client.execute('next')).resolves.toBe('fast');
    await expect(client.waitForEvent('NEVER', undefined, 30)).rejects.toBeInstanceOf(QmpTimeoutError);
  });

  it('fails to connect with QmpConnectError naming the socket when nothing listens there', async () => {
    const missing = join(dir, 'missing.sock');
    const err = await QmpClient.connect(missing, { timeoutMs: 500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpConnectError);
    expect(err).toMatchObject({ code: ErrorCode.Unavailable, errno: 'ENOENT', socketPath: missing });
    expect((err as Error).message).toContain(missing);
  });

  it('times out a server that never greets, and refuses one that does not speak QMP', async () => {
    fake.greeting = undefined;
    await expect(QmpClient.connect(path, { timeoutMs: 100 })).rejects.toMatchObject({
      name: 'QmpTimeoutError',
      awaited: 'greeting',
    });
    fake.greeting = '{"hello": "world"}';
    const err = await QmpClient.connect(path, { timeoutMs: 500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpProtocolError);
    expect((err as Error).message).toContain('expected the QMP greeting');
  });
});
