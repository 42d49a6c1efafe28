import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  parseStat,
  QEMU_RECORD_FILE,
  QemuDestinationRecords,
  type ProcessInfo,
  type ProcessTable,
  type QemuDestinationRecord,
} from './qemu-destination.record.js';
import { QEMU_RUN_SUBDIR } from './qemu-incoming.registry.js';
import { decideOrphan, OrphanAction, QemuOrphanReaper } from './qemu-orphans.reaper.js';

const RUN_DIR = '/run/wanmig/sim/qemu/m1';
const record = (over: Partial<QemuDestinationRecord> = {}): QemuDestinationRecord => ({
  migrationId: 'm1',
  pid: 4242,
  startTime: '9001',
  runDir: RUN_DIR,
  resumed: false,
  startedAt: 1,
  ...over,
});
const qemu = (over: Partial<ProcessInfo> = {}): ProcessInfo => ({
  startTime: '9001',
  zombie: false,
  cmdline: `qemu-system-x86_64 -qmp unix:${RUN_DIR}/qmp.sock,server=on`,
  ...over,
});

/** Processes by pid; records signals; a process `stubborn` to SIGTERM only dies on SIGKILL. */
class FakeProcessTable implements ProcessTable {
  readonly procs = new Map<number, ProcessInfo>();
  readonly signals: Array<[number, NodeJS.Signals]> = [];
  readonly stubborn = new Set<number>();
  readonly immortal = new Set<number>();

  inspect(pid: number) {
    return Promise.resolve(this.procs.get(pid));
  }
  signal(pid: number, signal: NodeJS.Signals) {
    this.signals.push([pid, signal]);
    if (this.immortal.has(pid)) return;
    if (signal === 'SIGKILL' || !this.stubborn.has(pid)) this.procs.delete(pid);
  }
}

describe('decideOrphan', () => {
  it('stops a live destination that was never resumed, keeps a resumed one', () => {
    expect(decideOrphan(record(), RUN_DIR, qemu())).toBe(OrphanAction.Stop);
    expect(decideOrphan(record({ resumed: true }), RUN_DIR, qemu())).toBe(OrphanAction.Keep);
  });

  it('only cleans up when the pid is gone, a zombie, or another process (start time or command line)', () => {
    expect(decideOrphan(record(), RUN_DIR, undefined)).toBe(OrphanAction.Clean);
    expect(decideOrphan(record(), RUN_DIR, qemu({ zombie: true }))).toBe(OrphanAction.Clean);
    expect(decideOrphan(record(), RUN_DIR, qemu({ startTime: '12' }))).toBe(OrphanAction.Clean);
    expect(decideOrphan(record({ resumed: true }), RUN_DIR, qemu({ cmdline: 'bash' }))).toBe(OrphanAction.Clean);
  });

  it('leaves a run dir without a record alone', () => {
    expect(decideOrphan(undefined, RUN_DIR, undefined)).toBe(OrphanAction.Skip);
  });
});

describe('parseStat', () => {
  it('reads the state and field 22 past a command name with spaces and parentheses', () => {
    const tail = Array.from({ length: 19 }, (_, i) => String(i + 4)); // fields 4..22
    tail[18] = '777123';
    expect(parseStat(`55 (qemu (x) y) S ${tail.join(' ')} 0 0`)).toEqual({ startTime: '777123', zombie: false });
    expect(parseStat(`55 (q) Z ${tail.join(' ')}`)).toEqual({ startTime: '777123', zombie: true });
    expect(parseStat('55 (q) S 1 2')).toBeUndefined();
  });
});

describe('QemuOrphanReaper', () => {
  let runtime: string;
  let procs: FakeProcessTable;
  let reaper: QemuOrphanReaper;
  const runDirOf = (id: string) => join(runtime, QEMU_RUN_SUBDIR, id);
  const exists = (path: string) =>
    access(path).then(
      () => true,
      () => false,
    );

  /** A run dir with a record, and (unless `dead`) its QEMU in the process table. */
  async function destination(id: string, pid: number, resumed: boolean, dead = false): Promise<string> {
    const runDir = runDirOf(id);
    await mkdir(runDir, { recursive: true });
    if (!dead) procs.procs.set(pid, qemu({ startTime: String(pid * 10), cmdline: `qemu -S ${runDir}/qmp.sock` }));
    const records = new QemuDestinationRecords({
      inspect: () => Promise.resolve(qemu({ startTime: String(pid * 10) })),
      signal: () => undefined,
    });
    await records.started(id, runDir, pid);
    if (resumed) await records.resumed(runDir, 5);
    return runDir;
  }

  beforeEach(async () => {
    runtime = await mkdtemp(join(tmpdir(), 'wanmig-reaper-'));
    procs = new FakeProcessTable();
    reaper = new QemuOrphanReaper(runtime, procs, 100, 100);
  });
  afterEach(async () => {
    await rm(runtime, { recursive: true, force: true });
  });

  it('finds nothing to do without a qemu dir', async () => {
    expect(await reaper.reap()).toEqual([]);
  });

  it('stops a waiting destination by pid and removes its run dir; keeps a resumed one; cleans a dead one', async () => {
    const waiting = await destination('waiting', 101, false);
    const running = await destination('running', 102, true);
    const dead = await destination('dead', 103, false, true);
    const bare = runDirOf('bare');
    await mkdir(bare, { recursive: true });

    const outcomes = await reaper.reap();
    expect(new Map(outcomes.map((o) => [o.migrationId ?? 'bare', o.action]))).toEqual(
      new Map([
        ['waiting', OrphanAction.Stop],
        ['running', OrphanAction.Keep],
        ['dead', OrphanAction.Clean],
        ['bare', OrphanAction.Skip],
      ]),
    );
    expect(procs.signals).toEqual([[101, 'SIGTERM']]);
    expect(await exists(waiting)).toBe(false);
    expect(await exists(dead)).toBe(false);
    expect(await exists(bare)).toBe(true);
    expect(procs.procs.has(102)).toBe(true);
    const kept = JSON.parse(await readFile(join(running, QEMU_RECORD_FILE), 'utf8')) as QemuDestinationRecord;
    expect(kept).toMatchObject({ migrationId: 'running', pid: 102, startTime: '1020', resumed: true, resumedAt: 5 });
  });

  it('sends SIGKILL when SIGTERM is not enough', async () => {
    const runDir = await destination('m', 201, false);
    procs.stubborn.add(201);
    const [outcome] = await reaper.reap();
    expect(outcome).toMatchObject({ action: OrphanAction.Stop, survived: false });
    expect(procs.signals).toEqual([
      [201, 'SIGTERM'],
      [201, 'SIGKILL'],
    ]);
    expect(await exists(runDir)).toBe(false);
  });

  it('keeps the run dir of a QEMU that survives SIGKILL', async () => {
    const runDir = await destination('m', 301, false);
    procs.immortal.add(301);
    const [outcome] = await reaper.reap();
    expect(outcome).toMatchObject({ action: OrphanAction.Stop, survived: true });
    expect(await exists(runDir)).toBe(true);
  });

  it('never signals a recycled pid: another start time means the QEMU is gone', async () => {
    const runDir = await destination('m', 401, false);
    procs.procs.set(401, qemu({ startTime: '1', cmdline: `qemu -S ${runDir}/qmp.sock` }));
    const [outcome] = await reaper.reap();
    expect(outcome.action).toBe(OrphanAction.Clean);
    expect(procs.signals).toEqual([]);
    expect(await exists(runDir)).toBe(false);
  });

  it('ignores a record that does not parse', async () => {
    const runDir = runDirOf('junk');
    await mkdir(runDir, { recursive: true });
    await writeFile(join(runDir, QEMU_RECORD_FILE), '{"pid": "1"}');
    expect(await reaper.reap()).toEqual([{ runDir, action: OrphanAction.Skip }]);
    expect(await exists(runDir)).toBe(true);
  });
});
