import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestRam } from './guest.ram.js';
import { KvArea } from './kv.area.js';
import { fillRam } from './ram.filler.js';
import { RESERVED_PAGES } from './ram.layout.js';
import { type SimWorkload } from './sim.constants.js';
import { WRITE_SET_GROUP_PAGES, WorkloadEngine, buildWriteSet } from './workload.engine.js';
import { WORKLOAD_PROFILES } from './workload.profile.js';

const RAM = 16 * 2 ** 20;

describe('workload engine', () => {
  let dir: string;
  const opened: GuestRam[] = [];
  const open = (name: string): GuestRam => {
    const ram = GuestRam.open(join(dir, name), RAM, RAM);
    opened.push(ram);
    return ram;
  };
  const engineOn = (
    ram: GuestRam,
    workload: SimWorkload,
    extra: Partial<ConstructorParameters<typeof WorkloadEngine>[0]> = {},
  ) => new WorkloadEngine({ workload, seed: 5, ram, kv: new KvArea(ram), ...extra });
  /** Simulated time: one tick per `tickMs` for `ms`. */
  const run = (engine: WorkloadEngine, fromMs: number, ms: number, tickMs = 1) => {
    for (let t = fromMs; t <= fromMs + ms; t += tickMs) engine.tick(t);
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'wanmig-workload-'));
  });
  afterEach(() => {
    opened.splice(0).forEach((r) => r.close());
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(['web', 'db', 'write-heavy'] as const)('writes RAM at the %s profile rate', (workload) => {
    const ram = open('vm.ram');
    fillRam(ram, 5);
    ram.stats.bytesWritten = 0;
    const engine = engineOn(ram, workload);
    run(engine, 0, 2000);
    const kvBytes = engine.snapshot().kvUpdates * 256;
    const rate = (ram.stats.bytesWritten - kvBytes) / 2;
    expect(rate / WORKLOAD_PROFILES[workload].ramBytesPerSecond).toBeGreaterThan(0.95);
    expect(rate / WORKLOAD_PROFILES[workload].ramBytesPerSecond).toBeLessThan(1.05);
    expect(engine.snapshot().kvUpdates / 2 / WORKLOAD_PROFILES[workload].kvUpdatesPerSecond).toBeCloseTo(1, 1);
  });

  it('writes nothing when idle', () => {
    const ram = open('vm.ram');
    run(engineOn(ram, 'idle'), 0, 500);
    expect(ram.stats.bytesWritten).toBe(0);
  });

  it('slows to a tenth at 90 % throttle', () => {
    const ram = open('vm.ram');
    const engine = engineOn(ram, 'write-heavy', { throttlePercent: 90 });
    run(engine, 0, 2000, 10);
    const rate = ram.stats.bytesWritten / 2;
    expect(rate / WORKLOAD_PROFILES['write-heavy'].ramBytesPerSecond).toBeCloseTo(0.1, 1);
  });

  it('keeps writes within its write set and the key-value pages', () => {
    const ram = open('vm.ram');
    fillRam(ram, 5);
    const engine = engineOn(ram, 'db');
    ram.drainDirty();
    run(engine, 0, 500);
    const allowed = new Set(engine.writeSet);
    const dirty = ram.drainDirty().toArray();
    expect(dirty.length).toBeGreaterThan(50);
    for (const page of dirty) expect(page < RESERVED_PAGES || allowed.has(page), `page ${page}`).toBe(true);
  });

  it('makes write sets of the profile fraction, in aligned groups, the same for a seed', () => {
    const pages = 2 ** 18;
    const set = buildWriteSet(9, pages, 0.1)!;
    expect(set.length / pages).toBeGreaterThan(0.09);
    expect(set.length / pages).toBeLessThan(0.11);
    expect(set[0] % WRITE_SET_GROUP_PAGES).toBe(0);
    expect(set[0]).toBeGreaterThanOrEqual(RESERVED_PAGES);
    expect(buildWriteSet(9, pages, 0.1)).toEqual(set);
    expect(buildWriteSet(9, 2 ** 14, 0.0001)!.length).toBe(WRITE_SET_GROUP_PAGES);
    expect(buildWriteSet(9, pages, 1)).toBeUndefined();
  });

  it.each(['db', 'write-heavy'] as const)(
    '%s: a guest restored from a snapshot writes exactly what the original writes',
    (workload) => {
      const a = open('a.ram');
      fillRam(a, 5);
      const original = engineOn(a, workload);
      run(original, 0, 300);
      const cursor = original.snapshot();
      copyFileSync(join(dir, 'a.ram'), join(dir, 'b.ram'));
      const b = open('b.ram');
      const restored = engineOn(b, workload, { cursor });
      restored.restartClock(300);
      run(original, 301, 300);
      run(restored, 301, 300);
      expect(restored.snapshot()).toEqual(original.snapshot());
      expect(readFileSync(join(dir, 'a.ram')).equals(readFileSync(join(dir, 'b.ram')))).toBe(true);
    },
  );
});
