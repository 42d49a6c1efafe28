import { afterEach, describe, expect, it, vi } from 'vitest';
import type { QmpEventListener } from './qmp.types.js';
import {
  DEFAULT_QEMU_DOWNTIME_LIMIT_MS,
  UNPACED_QEMU_MAX_BANDWIDTH,
  configureQemuMigration,
  startQemuMigration,
  waitForQemuMigration,
  type QemuMigrationInfo,
} from './qemu.migration-control.js';
import { QemuMigrationFailedError, QemuMigrationUnsafeError } from './qemu.errors.js';

/** Records commands; `query-migrate` answers from `statuses`, one per call (the last one repeats). */
class FakeQmp {
  readonly commands: Array<{ command: string; args?: Record<string, unknown> }> = [];
  readonly listeners = new Map<string, QmpEventListener>();
  /** What `query-version` and `query-kvm` answer (not recorded in `commands`). */
  version = { major: 10, minor: 0, micro: 2 };
  kvm = false;
  constructor(private readonly statuses: QemuMigrationInfo[] = []) {}

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (command === 'query-version') return Promise.resolve({ qemu: this.version, package: '' } as T);
    if (command === 'query-kvm') return Promise.resolve({ enabled: this.kvm, present: this.kvm } as T);
    this.commands.push({ command, args });
    if (command !== 'query-migrate') return Promise.resolve({} as T);
    const info = this.statuses.length > 1 ? this.statuses.shift()! : this.statuses[0];
    return Promise.resolve(info as T);
  }

  on(event: string, listener: QmpEventListener): () => void {
    this.listeners.set(event, listener);
    return () => this.listeners.delete(event);
  }
}

describe('QEMU migration control over QMP', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('refuses to configure a TCG source under a QEMU that loses writes in migration (before 9.0); KVM is fine', async () => {
    const qmp = new FakeQmp();
    qmp.version = { major: 7, minor: 2, micro: 22 };
    const err = await configureQemuMigration(qmp).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuMigrationUnsafeError);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', version: '7.2.22', message: /TCG guest.*03bfc2188f/ });
    expect(qmp.commands).toEqual([]);
    qmp.kvm = true;
    await configureQemuMigration(qmp);
    qmp.kvm = false;
    qmp.version = { major: 9, minor: 0, micro: 0 };
    await configureQemuMigration(qmp);
    expect(qmp.commands.map((c) => c.command)).toEqual(
      Array(2).fill(['migrate-set-capabilities', 'migrate-set-parameters']).flat(),
    );
  });

  it('turns events on, return-path and postcopy off, and sets downtime-limit and an unbounded max-bandwidth', async () => {
    const qmp = new FakeQmp();
    await configureQemuMigration(qmp);
    expect(qmp.commands).toEqual([
      {
        command: 'migrate-set-capabilities',
        args: {
          capabilities: [
            { capability: 'events', state: true },
            { capability: 'return-path', state: false },
            { capability: 'postcopy-ram', state: false },
            { capability: 'auto-converge', state: false },
            { capability: 'xbzrle', state: false },
          ],
        },
      },
      {
        command: 'migrate-set-parameters',
        args: { 'downtime-limit': DEFAULT_QEMU_DOWNTIME_LIMIT_MS, 'max-bandwidth': UNPACED_QEMU_MAX_BANDWIDTH },
      },
    ]);
    await configureQemuMigration(qmp, { downtimeLimitMs: 100, maxBandwidth: 1e6, autoConverge: true });
    expect(qmp.commands[2].args).toMatchObject({
      capabilities: expect.arrayContaining([{ capability: 'auto-converge', state: true }]) as unknown,
    });
    expect(qmp.commands[3].args).toEqual({ 'downtime-limit': 100, 'max-bandwidth': 1e6 });
    await configureQemuMigration(qmp, { xbzrleCacheBytes: 64 * 2 ** 20 });
    expect(qmp.commands[4].args).toMatchObject({
      capabilities: expect.arrayContaining([{ capability: 'xbzrle', state: true }]) as unknown,
    });
    expect(qmp.commands[5].args).toMatchObject({ 'xbzrle-cache-size': 64 * 2 ** 20 });
  });

  it('migrates to the unix socket', async () => {
    const qmp = new FakeQmp();
    await startQemuMigration(qmp, '/run/wanmig/m.sock');
    expect(qmp.commands).toEqual([{ command: 'migrate', args: { uri: 'unix:/run/wanmig/m.sock' } }]);
  });

  it('waits through active to completed, woken by MIGRATION events', async () => {
    const qmp = new FakeQmp([
      { status: 'active' },
      { status: 'active' },
      { status: 'completed', downtime: 42, 'total-time': 900 },
    ]);
    vi.useFakeTimers(); // no poll's timer can fire: only the events can wake the wait
    const waiting = waitForQemuMigration(qmp, { migrationId: 'm', timeoutMs: 5000 });
    for (let i = 1; i <= 2; i++) {
      await vi.advanceTimersByTimeAsync(0); // the wait asks query-migrate, then sleeps
      expect(qmp.commands).toHaveLength(i);
      qmp.listeners.get('MIGRATION')?.({ event: 'MIGRATION', timestamp: { seconds: 0, microseconds: 0 } });
    }
    await expect(waiting).resolves.toEqual({ status: 'completed', downtime: 42, 'total-time': 900 });
    expect(qmp.listeners.size).toBe(0);
  });

  it('rejects on failed (with QEMU error-desc) and when time runs out', async () => {
    const failed = new FakeQmp([{ status: 'failed', 'error-desc': 'Unable to write to socket: Broken pipe' }]);
    const err = await waitForQemuMigration(failed, { migrationId: 'm', timeoutMs: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuMigrationFailedError);
    expect(err).toMatchObject({ status: 'failed', migrationId: 'm', message: /Broken pipe/ });
    const stuck = new FakeQmp([{ status: 'active' }]);
    await expect(waitForQemuMigration(stuck, { migrationId: 'm', timeoutMs: 300 })).rejects.toMatchObject({
      status: 'still active after 300 ms (waiting for completed)',
    });
  });
});
