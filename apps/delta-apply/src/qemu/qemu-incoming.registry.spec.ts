import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QEMU_EXITED, type QemuAnnounce, type QemuExit, type QemuIncomingSpec } from '@wanmig/hypervisor';
import { ErrorCode, WanmigError } from '@wanmig/protocol';
import { MigrationNotFoundError } from '../errors.js';
import {
  QemuIncomingRegistry,
  type DestinationQemu,
  type DestinationSink,
  type QemuIncomingDeps,
} from './qemu-incoming.registry.js';
import type { QemuMigrationSinkOptions, QemuSinkProgress, QemuSinkReport } from './qemu-migration.sink.js';

const RUNTIME = '/run/wanmig/sim';
const DISK = '/srv/wanmig/b/disk.img';
const LAUNCH = { ramMiB: 256, kernel: '/k/vmlinuz', initrd: '/k/initrd' };

/** A destination QEMU whose run state (and incoming migration status) the test sets; records resume and stop. */
class FakeVm implements DestinationQemu {
  readonly pid = 777;
  readonly servicePort = 40001;
  readonly incomingSocket = '/run/in.sock';
  readonly monitorSocket = '/run/monitor.qmp';
  state = 'inmigrate';
  /** `query-migrate`'s status; by default `completed` once paused, `active` before. */
  migration: string | undefined;
  exit: QemuExit | undefined;
  resumes: Array<QemuAnnounce | false> = [];
  stops = 0;
  private resolveExit!: (exit: QemuExit) => void;
  readonly exited = new Promise<QemuExit>((resolve) => (this.resolveExit = resolve));
  readonly qmp = {
    execute: <T>(command: string): Promise<T> =>
      Promise.resolve(
        (command === 'query-migrate'
          ? { status: this.migration ?? (this.state === 'paused' ? 'completed' : 'active') }
          : {}) as T,
      ),
  };

  status() {
    return Promise.resolve({ status: this.exit ? QEMU_EXITED : this.state, running: this.state === 'running' });
  }
  resume(announce: QemuAnnounce | false = false) {
    this.resumes.push(announce);
    this.state = 'running';
    return Promise.resolve({ status: 'running', warnings: ['announce-self: no'] });
  }
  stop(): Promise<QemuExit> {
    this.stops++;
    this.die({ code: 0, signal: null });
    return Promise.resolve(this.exit!);
  }
  die(exit: QemuExit): void {
    this.exit ??= exit;
    this.resolveExit(this.exit);
  }
  stderrTail(): string {
    return 'qemu: load of migration failed';
  }
}

class FakeSink implements DestinationSink {
  stops = 0;
  private settle!: { resolve: (report: QemuSinkReport) => void; reject: (err: unknown) => void };
  readonly done = new Promise<QemuSinkReport>((resolve, reject) => (this.settle = { resolve, reject }));
  readonly progress = {
    bytesWritten: 5,
    frames: 1,
    payloadBytes: 3,
    connected: true,
    ended: false,
    bytesFromQemu: 0,
    returnBytes: 0,
    verifiedBytes: 0,
    endVerified: false,
    streamSha256: '',
  } as QemuSinkProgress;

  constructor(readonly options: QemuMigrationSinkOptions) {
    this.done.catch(() => undefined);
  }

  /** The End came with its digest, which matched. */
  finish(): void {
    Object.assign(this.progress, { ended: true, endVerified: true, verifiedBytes: this.progress.bytesWritten });
    this.settle.resolve({} as QemuSinkReport);
  }

  fail(err: unknown): void {
    this.settle.reject(err);
  }

  stop(): Promise<void> {
    this.stops++;
    return Promise.resolve();
  }
}

describe('QemuIncomingRegistry', () => {
  let registry: QemuIncomingRegistry;
  let specs: QemuIncomingSpec[];
  let vms: FakeVm[];
  let sinks: FakeSink[];
  let disks: Map<string, string>;
  let migrationId: string;

  beforeEach(() => {
    specs = [];
    vms = [];
    sinks = [];
    migrationId = randomUUID();
    disks = new Map([[migrationId, DISK]]);
    const deps: QemuIncomingDeps = {
      startQemu: (spec) => {
        specs.push(spec);
        const vm = new FakeVm();
        vms.push(vm);
        return Promise.resolve(vm);
      },
      startSink: (options) => {
        const sink = new FakeSink(options);
        sinks.push(sink);
        return Promise.resolve(sink);
      },
      diskPathOf: (id) => {
        const path = disks.get(id);
        if (!path) throw new MigrationNotFoundError(id);
        return path;
      },
      nc: () => ({}) as NatsConnection,
    };
    registry = new QemuIncomingRegistry(RUNTIME, deps, 50);
  });

  afterEach(async () => {
    await registry.beforeApplicationShutdown();
  });

  const codeOf = (promise: Promise<unknown>) =>
    promise.then(
      () => 'resolved',
      (err: unknown) => (err instanceof WanmigError ? err.code : String(err)),
    );

  it('starts QEMU on the image delta-apply holds for the migration, under <runtimeDir>/qemu/<id>', async () => {
    const reply = await registry.start({ migrationId, ...LAUNCH, append: 'console=ttyS0' });
    expect(reply).toEqual({
      migrationId,
      diskPath: DISK,
      servicePort: 40001,
      pid: 777,
      status: 'inmigrate',
      monitorSocket: '/run/monitor.qmp',
    });
    expect(specs).toEqual([
      {
        name: `wanmig-in-${migrationId.slice(0, 8)}`,
        diskPath: DISK,
        runDir: `${RUNTIME}/qemu/${migrationId}`,
        ...LAUNCH,
        append: 'console=ttyS0',
        machine: 'q35',
        accel: 'tcg',
        cpus: 1,
        servicePort: undefined,
        guestPort: 7777,
        postcopy: false,
      },
    ]);
    expect(sinks[0].options).toMatchObject({ migrationId, socketPath: '/run/in.sock', returnPath: false });
    // A repeat (its keys in another order, the disk path spelled out) is the same request; another is not.
    await expect(registry.start({ append: 'console=ttyS0', diskPath: DISK, migrationId, ...LAUNCH })).resolves.toEqual(
      reply,
    );
    expect(specs).toHaveLength(1);
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH, ramMiB: 512 }))).toBe(ErrorCode.Conflict);
    // postcopy is part of the request: false is the default, true another request.
    await expect(registry.start({ migrationId, ...LAUNCH, append: 'console=ttyS0', postcopy: false })).resolves.toEqual(
      reply,
    );
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH, append: 'console=ttyS0', postcopy: true }))).toBe(
      ErrorCode.Conflict,
    );
  });

  it('passes a tap network on to QEMU; it is part of the request', async () => {
    const network = { netns: 'wm123456-b', tap: 'tap0', mac: '52:54:00:77:6d:01' };
    await registry.start({ migrationId, ...LAUNCH, network });
    expect(specs[0].network).toEqual(network);
    await expect(
      registry.start({ migrationId, ...LAUNCH, network: { ...network, mac: '52:54:00:77:6D:01' } }),
    ).resolves.toMatchObject({ migrationId });
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH }))).toBe(ErrorCode.Conflict);
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH, network: { ...network, tap: 'tap1' } }))).toBe(
      ErrorCode.Conflict,
    );
    expect(specs).toHaveLength(1);
    // Names QEMU could not take, or a network that is not an object, are bad input.
    const other = randomUUID();
    for (const bad of [{ ...network, tap: 'x'.repeat(16) }, { ...network, mac: 'nope' }, 'tap0']) {
      expect(await codeOf(registry.start({ migrationId: other, ...LAUNCH, network: bad }))).toBe(
        ErrorCode.InvalidRequest,
      );
    }
  });

  it('refuses bad input, a disk it does not hold, and a path that is not the migration’s image', async () => {
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH, kernel: 'vmlinuz' }))).toBe(ErrorCode.InvalidRequest);
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH, accel: 'hvf' }))).toBe(ErrorCode.InvalidRequest);
    expect(await codeOf(registry.start({ migrationId: randomUUID(), ...LAUNCH }))).toBe(ErrorCode.NotFound);
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH, diskPath: '/etc/passwd' }))).toBe(ErrorCode.Conflict);
    expect(specs).toHaveLength(0);
    for (const verb of ['status', 'resume'] as const) {
      expect(await codeOf(registry[verb]({ migrationId }))).toBe(ErrorCode.NotFound);
    }
  });

  it('status follows the load; resume waits for it, then cont + announce-self; a repeat gets the same reply', async () => {
    await registry.start({ migrationId, ...LAUNCH });
    const vm = vms[0];
    expect(await registry.status({ migrationId })).toMatchObject({
      status: 'inmigrate',
      migrationStatus: 'active',
      monitorSocket: '/run/monitor.qmp',
      postcopy: false,
      loaded: false,
      resumed: false,
      sink: {
        bytesWritten: 5,
        frames: 1,
        payloadBytes: 3,
        connected: true,
        ended: false,
        returnBytes: 0,
        done: false,
        verifiedBytes: 0,
        endVerified: false,
      },
    });
    const resuming = registry.resume({ migrationId, announceRounds: 3 });
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(vm.resumes).toHaveLength(0);
    vm.state = 'paused';
    // Loaded, but the stream's end and its last digest are not in yet: no `cont` before they are.
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(vm.resumes).toHaveLength(0);
    sinks[0].finish();
    const reply = await resuming;
    expect(reply).toMatchObject({ migrationId, status: 'running', warnings: ['announce-self: no'] });
    expect(reply.loadWaitMs).toBeGreaterThanOrEqual(50);
    expect(vm.resumes).toEqual([{ initial: 50, max: 550, rounds: 3, step: 100 }]);
    expect(await registry.resume({ migrationId })).toEqual(reply);
    expect(vm.resumes).toHaveLength(1);
    expect(await registry.status({ migrationId })).toMatchObject({
      status: 'running',
      running: true,
      loaded: true,
      resumed: true,
      resumedAt: reply.resumedAt,
    });
  });

  it('post-copy: postcopy-ram at the destination, its return path sent back, loaded once paused in postcopy-active', async () => {
    const reply = await registry.start({ migrationId, ...LAUNCH, postcopy: true });
    expect(reply.status).toBe('inmigrate');
    expect(specs[0].postcopy).toBe(true);
    expect(sinks[0].options).toMatchObject({ migrationId, returnPath: true });
    await expect(registry.start({ migrationId, ...LAUNCH, postcopy: true })).resolves.toEqual(reply);
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH }))).toBe(ErrorCode.Conflict);

    // The source switched to post-copy: the destination loads the device state (still inmigrate), then pauses.
    const vm = vms[0];
    vm.migration = 'postcopy-active';
    expect(await registry.status({ migrationId })).toMatchObject({
      status: 'inmigrate',
      migrationStatus: 'postcopy-active',
      postcopy: true,
      loaded: false,
    });
    const resuming = registry.resume({ migrationId, announceRounds: 0 });
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(vm.resumes).toHaveLength(0);
    vm.state = 'paused';
    (sinks[0].progress as { returnBytes: number }).returnBytes = 8192;
    expect(await registry.status({ migrationId })).toMatchObject({
      status: 'paused',
      migrationStatus: 'postcopy-active',
      loaded: true,
      sink: { returnBytes: 8192, done: false },
    });
    expect(await resuming).toMatchObject({ migrationId, status: 'running' });
    expect(vm.resumes).toEqual([false]);
  });

  it('without postcopy, a destination paused in postcopy-active is not loaded: a resume refuses it', async () => {
    await registry.start({ migrationId, ...LAUNCH });
    vms[0].state = 'paused';
    vms[0].migration = 'postcopy-active';
    expect(await registry.status({ migrationId })).toMatchObject({ postcopy: false, loaded: false });
    const err = await registry.resume({ migrationId }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: ErrorCode.Conflict,
      message: /is paused \(incoming migration postcopy-active\)/,
    });
    expect(vms[0].resumes).toHaveLength(0);
  });

  it('never runs a destination whose stream failed its digest check, nor one whose stream ended unchecked', async () => {
    await registry.start({ migrationId, ...LAUNCH });
    const resuming = registry.resume({ migrationId }).catch((e: unknown) => e);
    vms[0].state = 'paused';
    const mismatch = new WanmigError(ErrorCode.DigestMismatch, "QEMU's migration stream differs in bytes [0, 5)");
    sinks[0].fail(mismatch);
    const err = await resuming;
    expect(err).toMatchObject({ code: ErrorCode.DigestMismatch, message: /is not run: .*differs in bytes \[0, 5\)/ });
    expect(vms[0].resumes).toHaveLength(0);
    expect(await registry.status({ migrationId })).toMatchObject({
      resumed: false,
      sink: { done: true, error: { code: ErrorCode.DigestMismatch } },
    });

    // A feed whose End never comes: the resume gives up with the time, and says how much was checked.
    const other = randomUUID();
    disks.set(other, DISK);
    await registry.start({ migrationId: other, ...LAUNCH });
    vms[1].state = 'paused';
    const late = await registry.resume({ migrationId: other, loadTimeoutMs: 50 }).catch((e: unknown) => e);
    expect(late).toMatchObject({ code: ErrorCode.StreamTimeout, message: /0 of 5 bytes checked/ });
    expect(vms[1].resumes).toHaveLength(0);
  });

  it('a resume gives up when QEMU exits, or when the load does not finish in time', async () => {
    await registry.start({ migrationId, ...LAUNCH });
    expect(await codeOf(registry.resume({ migrationId, loadTimeoutMs: 30 }))).toBe(ErrorCode.StreamTimeout);
    vms[0].die({ code: 1, signal: null });
    const err = await registry.resume({ migrationId }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.Unavailable, message: /exited 1: qemu: load of migration failed/ });
  });

  it('abort stops the feed and QEMU, even under a waiting resume; the destination never runs after it', async () => {
    await registry.start({ migrationId, ...LAUNCH });
    const resuming = codeOf(registry.resume({ migrationId }));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const aborted = await registry.abort({ migrationId });
    expect(await resuming).toBe(ErrorCode.Conflict);
    expect(aborted).toEqual({ migrationId, stopped: true, wasRunning: false });
    expect([vms[0].stops, sinks[0].stops, vms[0].resumes.length]).toEqual([1, 1, 0]);
    // Idempotent; and nothing brings it back.
    expect(await registry.abort({ migrationId })).toEqual({ ...aborted, stopped: false });
    expect(vms[0].stops).toBe(1);
    expect(await codeOf(registry.resume({ migrationId }))).toBe(ErrorCode.Conflict);
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH }))).toBe(ErrorCode.Conflict);
    expect(await registry.status({ migrationId })).toMatchObject({ status: 'aborted', aborted: true, running: false });
  });

  it('an abort of an unknown migration is NOT_FOUND, and a start after it is refused', async () => {
    expect(await codeOf(registry.abort({ migrationId }))).toBe(ErrorCode.NotFound);
    expect(await codeOf(registry.start({ migrationId, ...LAUNCH }))).toBe(ErrorCode.Conflict);
    expect(specs).toHaveLength(0);
  });

  it('a destination that runs is only stopped by an abort that says stopRunning', async () => {
    await registry.start({ migrationId, ...LAUNCH });
    vms[0].state = 'paused';
    sinks[0].finish();
    await registry.resume({ migrationId });
    expect(await codeOf(registry.abort({ migrationId }))).toBe(ErrorCode.Conflict);
    expect(vms[0].stops).toBe(0);
    expect(await registry.abort({ migrationId, stopRunning: true })).toEqual({
      migrationId,
      stopped: true,
      wasRunning: true,
    });
    expect(vms[0].stops).toBe(1);
  });

  it('at shutdown a running post-copy destination keeps its feed until its RAM has arrived (or for a while)', async () => {
    const other = randomUUID();
    disks.set(other, '/srv/wanmig/b/other.img');
    await registry.start({ migrationId, ...LAUNCH, postcopy: true });
    await registry.start({ migrationId: other, ...LAUNCH, postcopy: true });
    for (const vm of vms) [vm.state, vm.migration] = ['paused', 'postcopy-active'];
    await registry.resume({ migrationId });
    await registry.resume({ migrationId: other });
    setTimeout(() => sinks[0].finish(), 10);
    const t0 = performance.now();
    await registry.beforeApplicationShutdown();
    // The first feed finished and was stopped then; the second never did, and was stopped after the wait (50 ms).
    expect(performance.now() - t0).toBeGreaterThanOrEqual(45);
    expect(sinks.map((sink) => sink.stops)).toEqual([1, 1]);
    expect(vms.map((vm) => vm.stops)).toEqual([0, 0]);
  });

  it('at shutdown stops the destinations that never ran and leaves the running ones', async () => {
    const other = randomUUID();
    disks.set(other, '/srv/wanmig/b/other.img');
    await registry.start({ migrationId, ...LAUNCH });
    await registry.start({ migrationId: other, ...LAUNCH });
    vms[1].state = 'paused';
    sinks[1].finish();
    await registry.resume({ migrationId: other });
    await registry.beforeApplicationShutdown();
    expect(vms.map((vm) => vm.stops)).toEqual([1, 0]);
    expect(sinks.map((sink) => sink.stops)).toEqual([1, 1]);
    expect(await codeOf(registry.start({ migrationId: randomUUID(), ...LAUNCH }))).toBe(ErrorCode.Unavailable);
  });
});
