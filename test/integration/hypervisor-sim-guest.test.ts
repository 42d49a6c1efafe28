import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_SIM_RUNTIME_DIR,
  GuestDiedError,
  GuestExistsError,
  GuestConfigError,
  GuestNotFoundError,
  GuestStartError,
  GuestStateError,
  SimDriver,
  SimServiceClient,
  type SimLaunchSpec,
  type SimSourceVm,
  type SimWorkload,
  simGuestEntry,
  WORKLOAD_PROFILES,
} from '@wanmig/hypervisor';
import { waitUntil } from '@wanmig/testing';

const MiB = 2 ** 20;
const PAGE = 4096;
/** The guest's main loop ticks every 1 ms unthrottled (BASE_TICK_MS), every 10 ms at a 90 % throttle. */
const UNTHROTTLED_TICKS_PER_SECOND = 1000;
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

describe('sim guest (built guest process)', () => {
  let dir: string;
  let driver: SimDriver;
  const vms: SimSourceVm[] = [];
  const clients: SimServiceClient[] = [];

  const launch = async (vmId: string, workload: SimWorkload, extra: Partial<SimLaunchSpec> = {}) => {
    const vm = await driver.launch({ vmId, ramBytes: 64 * MiB, workload, seed: 3, ...extra });
    vms.push(vm);
    return vm;
  };
  const serviceOf = async (vm: SimSourceVm) => {
    const client = await SimServiceClient.connect(vm.serviceAddress);
    clients.push(client);
    return client;
  };
  /** Page writes per second and distinct dirty pages per second over `ms`. */
  const measure = async (vm: SimSourceVm, ms: number) => {
    const mem = vm.memory();
    await mem.drainDirty();
    const before = await vm.stats();
    const t0 = performance.now();
    await sleep(ms);
    const dirty = await mem.drainDirty();
    const after = await vm.stats();
    const seconds = (performance.now() - t0) / 1000;
    return {
      bytesPerSecond: (after.ramBytesWritten - before.ramBytesWritten) / seconds,
      dirtyPagesPerSecond: dirty.count / seconds,
      ticksPerSecond: (after.counter - before.counter) / seconds,
    };
  };

  beforeAll(async () => {
    simGuestEntry(); // fails with "... is missing: build first (npm run build)" when dist is missing
    dir = await mkdtemp(join(tmpdir(), 'wanmig-hv-guest-'));
    driver = new SimDriver({ runtimeDir: join(dir, 'run') });
  });

  afterAll(async () => {
    clients.forEach((c) => c.close());
    await Promise.all(vms.map((vm) => vm.stop()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('boots with its RAM in a file; the counter advances; the service answers from RAM', async () => {
    const vm = await launch('idle-1', 'idle');
    const d = await vm.describe();
    expect(d).toMatchObject({ vmId: 'idle-1', ramBytes: 64 * MiB, pageSize: PAGE, state: 'running', diskBytes: 0 });
    expect(d.serviceAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    expect((await stat(vm.ramFile)).size).toBe(64 * MiB);
    expect(driver.runtimeDir).not.toBe(DEFAULT_SIM_RUNTIME_DIR);

    const client = await serviceOf(vm);
    const c1 = await client.ping();
    // Its main loop ticks every 1 ms at best: waited for, as a loaded machine lets it tick far less often.
    await waitUntil(async () => (await client.ping()) > c1 + 50, { what: 'the counter to advance', timeoutMs: 30_000 });
    // The RAM holds the live counter: between what the service answered just before and just after it was read.
    const c2 = await client.ping();
    const counterInRam = Number((await vm.memory().read(0, PAGE)).readBigUInt64LE(32));
    const c3 = await client.ping();
    expect(counterInRam).toBeGreaterThanOrEqual(c2);
    expect(counterInRam).toBeLessThanOrEqual(c3);

    expect(await client.request('GET k0')).toMatch(/^boot-k0-v0-[0-9a-f]{8}$/);
    expect(await client.request('GET k999')).toBe('ERR NOT_FOUND no key k999');
    expect(await client.request('PAGE 100')).toBe(sha256(await vm.memory().read(100 * PAGE, PAGE)));
    expect(await client.request(`PAGE ${(64 * MiB) / PAGE}`)).toMatch(/^ERR INVALID_REQUEST/);
    expect(await client.request('DISK 0')).toBe('ERR NOT_FOUND this guest has no disk');
    const state = JSON.parse(await client.request('STATE')) as { workload: string; state: string; counter: number };
    expect(state).toMatchObject({ workload: 'idle', state: 'running' });
  });

  it('is found by vm id from another driver; unknown ids and duplicates are refused', async () => {
    const other = new SimDriver({ runtimeDir: join(dir, 'run') });
    const vm = await other.attach('idle-1');
    expect((await vm.describe()).pid).toBe(vms[0].pid);
    await vm.detach();
    await expect(other.attach('nobody')).rejects.toBeInstanceOf(GuestNotFoundError);
    await expect(launch('idle-1', 'idle')).rejects.toBeInstanceOf(GuestExistsError);
    await expect(vms[0].deviceState()).rejects.toBeInstanceOf(GuestStateError);
  });

  it('pause stops the counter and holds a PING until resume, which answers it as of the pause', async () => {
    const vm = vms[0];
    const client = await serviceOf(vm);
    await vm.pause();
    expect((await vm.describe()).state).toBe('paused');
    const read = async () => Number((await vm.memory().read(0, PAGE)).readBigUInt64LE(32));
    const atPause = await read();
    await sleep(150);
    expect(await read()).toBe(atPause);

    let answered = false;
    const sent = performance.now();
    const pong = client.request('PING').then((r) => ((answered = true), r));
    await sleep(300);
    expect(answered).toBe(false);
    await vm.resume();
    expect(await pong).toBe(`PONG ${atPause}`);
    expect(performance.now() - sent).toBeGreaterThanOrEqual(300);
    await sleep(50);
    expect(await client.ping()).toBeGreaterThan(atPause);
  });

  it.each(['db', 'write-heavy'] as const)(
    '%s: every page that changed between two reads of the RAM file is in the dirty log',
    async (workload) => {
      const vm = await launch(`dirty-${workload}`, workload);
      const mem = vm.memory();
      await mem.drainDirty();
      const before = await mem.read(0, 64 * MiB);
      await sleep(300);
      await vm.pause();
      const dirty = await mem.drainDirty();
      const after = await mem.read(0, 64 * MiB);
      let changed = 0;
      for (let n = 0; n < (64 * MiB) / PAGE; n++) {
        const a = before.subarray(n * PAGE, (n + 1) * PAGE);
        const b = after.subarray(n * PAGE, (n + 1) * PAGE);
        if (a.equals(b)) continue;
        changed++;
        expect(dirty.has(n), `page ${n} changed but is not dirty`).toBe(true);
      }
      expect(changed).toBeGreaterThan(100);
      expect(dirty.count).toBeGreaterThanOrEqual(changed);
      // The file holds what the guest itself sees.
      for (const n of dirty.toArray().filter((_, i) => i % 97 === 0)) {
        expect(await vm.monitor(`PAGE ${n}`)).toBe(sha256(after.subarray(n * PAGE, (n + 1) * PAGE)));
      }
      await vm.resume();
      await vm.stop();
    },
  );

  it('writes at its profile rates; throttle 90 % slows writes and ticks', async () => {
    const [web, db] = await Promise.all([launch('rate-web', 'web'), launch('rate-db', 'db')]);
    const idle = vms[0];
    const [rIdle, rWeb, rDb] = await Promise.all([measure(idle, 1000), measure(web, 1000), measure(db, 1000)]);
    console.log(
      `dirty rates (64 MiB): ${JSON.stringify({ idle: rIdle, web: rWeb, db: rDb }, (_k, v: unknown) =>
        typeof v === 'number' ? Math.round(v) : v,
      )}`,
    );
    expect(rIdle.dirtyPagesPerSecond).toBeLessThan(2);
    expect(rWeb.bytesPerSecond).toBeGreaterThan(0.7 * 4e6);
    expect(rDb.bytesPerSecond).toBeGreaterThan(0.7 * 8e6);

    await db.throttle(90);
    await sleep(50);
    const throttled = await measure(db, 1000);
    await db.throttle(0);
    console.log(`db at 90 % throttle: ${JSON.stringify(throttled)}`);
    // Bytes and ticks against the nominal rates, not the unthrottled figures just measured: a loaded machine slows
    // the unthrottled guest's 1 ms ticks (446/s at load 7: a quarter is 111, the throttled guest ticked 89/s).
    expect(throttled.bytesPerSecond).toBeLessThan(0.25 * WORKLOAD_PROFILES.db.ramBytesPerSecond);
    expect(throttled.dirtyPagesPerSecond).toBeLessThan(0.5 * rDb.dirtyPagesPerSecond);
    expect(throttled.ticksPerSecond).toBeLessThan(0.25 * UNTHROTTLED_TICKS_PER_SECOND);
    await Promise.all([web.stop(), db.stop()]);
  });

  // The rate is printed, not asserted (38 MB/s of the profile's 48 at load 7, with the other core busy): a speed is the
  // benchmarks' to measure. What is checked is that it writes, and mostly to pages not yet dirty in the window.
  it('write-heavy dirties RAM, mostly fresh pages, while the other core is busy', async () => {
    let busy: ChildProcess | undefined;
    try {
      busy = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
      const vm = await launch('heavy', 'write-heavy', { ramBytes: 128 * MiB });
      await sleep(200);
      const r = await measure(vm, 2000);
      console.log(`write-heavy (128 MiB, one core busy): ${JSON.stringify(r)}`);
      expect(r.bytesPerSecond).toBeGreaterThan(0);
      expect(r.dirtyPagesPerSecond * PAGE).toBeGreaterThan(0.5 * r.bytesPerSecond);
      await vm.stop();
    } finally {
      if (busy?.pid !== undefined && busy.exitCode === null) {
        const exited = new Promise((resolve) => busy!.once('exit', resolve));
        busy.kill('SIGKILL');
        await exited;
      }
    }
  });

  it('refuses bad options before starting, and reports a guest that cannot start with its log', async () => {
    await expect(launch('tiny', 'idle', { ramBytes: 8 * MiB })).rejects.toBeInstanceOf(GuestConfigError);
    await expect(launch('bad id/x', 'idle')).rejects.toBeInstanceOf(GuestConfigError);
    const err = await launch('no-disk', 'db', { diskUri: 'nbd://127.0.0.1:1/nothing' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GuestStartError);
    expect((err as GuestStartError).stderrTail).toMatch(/cannot start: .*ECONNREFUSED/);
    await expect(driver.attach('no-disk')).rejects.toBeInstanceOf(GuestNotFoundError);
  });

  it('reports a guest that died with its exit and the tail of its log', async () => {
    const vm = await launch('doomed', 'idle');
    await vm.process!.kill();
    const err = await vm.describe().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GuestDiedError);
    expect((err as GuestDiedError).signal).toBe('SIGKILL');
    expect((err as GuestDiedError).stderrTail).toMatch(/running: service 127\.0\.0\.1:\d+/);
    expect((err as GuestDiedError).code).toBe('UNAVAILABLE');
  });
});
