import { mkdtemp, rm } from 'node:fs/promises';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@wanmig/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskMirrorError, DiskMirrorFailure, startDiskMirror } from './qemu.disk-mirror.js';
import { QmpClient } from './qmp.client.js';
import { QmpCommandError } from './qmp.errors.js';

interface Request {
  execute: string;
  arguments?: Record<string, unknown>;
  id: number;
}
type Handler = (req: Request) => void;

const JOB = 'wanmig-mirror-disk0';
const NODE = `${JOB}-nbd`;

/** A QMP peer on a unix socket: greets, accepts qmp_capabilities, answers each command with its handler. */
class FakeQemu {
  readonly requests: Request[] = [];
  readonly handlers = new Map<string, Handler>();
  private peer?: Socket;

  private constructor(private readonly server: Server) {}

  static async start(path: string): Promise<FakeQemu> {
    const server = createServer();
    const fake = new FakeQemu(server);
    server.on('connection', (peer) => fake.accept(peer));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return fake;
  }

  reply(req: Request, value: unknown = {}): void {
    this.send({ return: value, id: req.id });
  }
  error(req: Request, errorClass: string, desc: string): void {
    this.send({ error: { class: errorClass, desc }, id: req.id });
  }
  event(name: string, data: Record<string, unknown> = {}): void {
    this.send({
      event: name,
      data: { device: JOB, type: 'mirror', ...data },
      timestamp: { seconds: 1, microseconds: 0 },
    });
  }
  commands(): string[] {
    return this.requests.map((r) => r.execute);
  }
  dropConnection(): void {
    this.peer?.destroy();
  }

  async stop(): Promise<void> {
    this.peer?.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private send(message: object): void {
    this.peer?.write(`${JSON.stringify(message)}\r\n`);
  }

  private accept(peer: Socket): void {
    this.peer = peer;
    peer.on('error', () => undefined);
    peer.write(
      `${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 } }, capabilities: [] } })}\n`,
    );
    let partial = '';
    peer.setEncoding('utf8');
    peer.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const req = JSON.parse(line) as Request;
        if (req.execute === 'qmp_capabilities') {
          this.reply(req);
          continue;
        }
        this.requests.push(req);
        (this.handlers.get(req.execute) ?? ((r: Request) => this.reply(r)))(req);
      }
    });
  }
}

/** QEMU 7.2's behaviour: ready at once (its events come before the reply); a soft cancel completes the job. */
function behaveLikeQemu(fake: FakeQemu): void {
  fake.handlers.set('blockdev-mirror', (req) => {
    fake.event('BLOCK_JOB_READY', { device: req.arguments?.['job-id'] });
    fake.reply(req);
  });
  fake.handlers.set('block-job-cancel', (req) => {
    fake.reply(req);
    fake.event(req.arguments?.force ? 'BLOCK_JOB_CANCELLED' : 'BLOCK_JOB_COMPLETED', { device: req.arguments?.device });
  });
}

describe('startDiskMirror', () => {
  let dir: string;
  let fake: FakeQemu;
  let qmp: QmpClient;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-mirror-spec-'));
    fake = await FakeQemu.start(join(dir, 'qmp.sock'));
    qmp = await QmpClient.connect(join(dir, 'qmp.sock'), { timeoutMs: 2000, commandTimeoutMs: 2000 });
    behaveLikeQemu(fake);
  });
  afterEach(async () => {
    await qmp.close();
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('adds an NBD node for the export and mirrors the device into it (sync none, write-blocking)', async () => {
    const mirror = await startDiskMirror(qmp, {
      device: 'disk0',
      nbd: { host: '127.0.0.1', port: 10809 },
      exportName: 'guest-disk',
      granularity: 65536,
    });
    expect(fake.requests.map((r) => [r.execute, r.arguments])).toEqual([
      [
        'blockdev-add',
        {
          driver: 'nbd',
          'node-name': NODE,
          server: { type: 'inet', host: '127.0.0.1', port: '10809' },
          export: 'guest-disk',
        },
      ],
      [
        'blockdev-mirror',
        {
          'job-id': JOB,
          device: 'disk0',
          target: NODE,
          sync: 'none',
          'copy-mode': 'write-blocking',
          'on-source-error': 'report',
          'on-target-error': 'report',
          granularity: 65536,
        },
      ],
    ]);
    expect(mirror).toMatchObject({ jobId: JOB, device: 'disk0', targetNode: NODE, error: undefined });
  });

  it('reaches a unix socket export, with the job and node names asked for', async () => {
    const mirror = await startDiskMirror(qmp, {
      device: 'disk0',
      nbd: { path: '/run/wanmig/disk.sock' },
      exportName: 'd',
      jobId: 'job1',
      targetNode: 'n1',
    });
    // Another job's events are not this mirror's.
    fake.event('BLOCK_JOB_COMPLETED', { device: JOB, error: 'not mine' });
    await mirror.cancel();
    expect(mirror.error).toBeUndefined();
    expect(fake.requests[0].arguments).toMatchObject({ server: { type: 'unix', path: '/run/wanmig/disk.sock' } });
    expect(fake.requests[1].arguments).toMatchObject({ 'job-id': 'job1', target: 'n1' });
    expect(fake.requests.slice(2).map((r) => [r.execute, r.arguments])).toEqual([
      ['block-job-cancel', { device: 'job1', force: false }],
      ['blockdev-del', { 'node-name': 'n1' }],
    ]);
  });

  it('cancel: a soft block-job-cancel, the job completes, the node is deleted; a second cancel does nothing', async () => {
    const mirror = await startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd' });
    await mirror.cancel();
    await mirror.cancel();
    expect(fake.requests.slice(2).map((r) => [r.execute, r.arguments])).toEqual([
      ['block-job-cancel', { device: JOB, force: false }],
      ['blockdev-del', { 'node-name': NODE }],
    ]);
    expect(mirror.error).toBeUndefined();
  });

  it('cancel: forces the cancel when the soft one does not end the job in time', async () => {
    fake.handlers.set('block-job-cancel', (req) => {
      fake.reply(req);
      if (req.arguments?.force) fake.event('BLOCK_JOB_CANCELLED');
    });
    const mirror = await startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd' });
    await mirror.cancel({ timeoutMs: 100 });
    expect(fake.commands().slice(2)).toEqual(['block-job-cancel', 'block-job-cancel', 'blockdev-del']);
    expect(fake.requests[3].arguments).toEqual({ device: JOB, force: true });
  });

  it('a job error while mirroring is a typed failure: error set, failed resolves; cancel still cleans up', async () => {
    const mirror = await startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd' });
    fake.event('BLOCK_JOB_ERROR', { operation: 'write', action: 'report' });
    fake.event('BLOCK_JOB_COMPLETED', { error: 'Input/output error' });
    const err = await mirror.failed;
    expect(err).toBeInstanceOf(DiskMirrorError);
    expect(err).toMatchObject({ failure: DiskMirrorFailure.JobError, jobId: JOB, qemuError: 'write' });
    expect(err.code).toBe(ErrorCode.Unavailable);
    expect(mirror.error).toBe(err);
    // The job is gone: no cancel is sent, only the node is deleted.
    await mirror.cancel();
    expect(fake.commands().slice(2)).toEqual(['blockdev-del']);
  });

  it('a job that ends without being asked to is a failure too', async () => {
    const mirror = await startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd' });
    fake.event('BLOCK_JOB_CANCELLED');
    await expect(mirror.failed).resolves.toMatchObject({ failure: DiskMirrorFailure.JobEnded });
  });

  it('QEMU refusing the mirror: its QmpCommandError passes through, and the NBD node is deleted', async () => {
    fake.handlers.set('blockdev-mirror', (req) => fake.error(req, 'GenericError', "Cannot find device='nope'"));
    fake.handlers.set('block-job-cancel', (req) => fake.error(req, 'DeviceNotActive', `Block job '${JOB}' not found`));
    const err = await startDiskMirror(qmp, { device: 'nope', nbd: { path: '/x' }, exportName: 'd' }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toMatchObject({ command: 'blockdev-mirror', errorClass: 'GenericError' });
    expect(fake.commands()).toEqual(['blockdev-add', 'blockdev-mirror', 'block-job-cancel', 'blockdev-del']);
  });

  it('QEMU refusing the NBD node (export unreachable): its error, and nothing else is tried', async () => {
    fake.handlers.set('blockdev-add', (req) => fake.error(req, 'GenericError', 'Failed to connect to /x'));
    await expect(startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd' })).rejects.toThrow(
      QmpCommandError,
    );
    expect(fake.commands()).toEqual(['blockdev-add']);
  });

  it('a job that never becomes ready times out, and is cancelled', async () => {
    fake.handlers.set('blockdev-mirror', (req) => fake.reply(req));
    const err = await startDiskMirror(qmp, {
      device: 'disk0',
      nbd: { path: '/x' },
      exportName: 'd',
      readyTimeoutMs: 100,
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'DiskMirrorError', failure: DiskMirrorFailure.Timeout });
    expect(fake.commands()).toEqual(['blockdev-add', 'blockdev-mirror', 'block-job-cancel', 'blockdev-del']);
  });

  it('a job that fails before it is ready rejects the start with the failure', async () => {
    fake.handlers.set('blockdev-mirror', (req) => {
      fake.reply(req);
      fake.event('BLOCK_JOB_COMPLETED', { error: 'Source and target image have different sizes' });
    });
    await expect(startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd' })).rejects.toMatchObject(
      { failure: DiskMirrorFailure.JobEnded, qemuError: expect.stringMatching(/sizes/) as unknown },
    );
  });

  it('losing the QMP connection while mirroring is a failure', async () => {
    const mirror = await startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd' });
    fake.dropConnection();
    await expect(mirror.failed).resolves.toMatchObject({ failure: DiskMirrorFailure.QmpClosed });
  });

  it('refuses a granularity QEMU would refuse, before sending anything', async () => {
    for (const granularity of [1000, 256, 128 * 2 ** 20]) {
      await expect(
        startDiskMirror(qmp, { device: 'disk0', nbd: { path: '/x' }, exportName: 'd', granularity }),
      ).rejects.toMatchObject({ failure: DiskMirrorFailure.InvalidOptions, code: ErrorCode.InvalidRequest });
    }
    expect(fake.requests).toEqual([]);
  });
});
