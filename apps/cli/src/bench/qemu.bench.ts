import {
  callControl,
  controlSubject,
  isTerminalPhase,
  MigrationPhase,
  MigrationVerb,
  ServiceName,
  Subjects,
  VmVerb,
  type MigrationView,
  type VmView,
} from '@wanmig/protocol';
import { ensureGuestImage, LocalBed, Site, sleep, waitUntil } from '@wanmig/testing';
import { CounterProber } from '../qemu/counter.prober.js';
import { counterWentOn, failedRun, QemuBaselineVariant, runQemuBaseline } from './qemu-baseline.run.js';
import { QemuRunOutcome, type QemuBenchOptions, type QemuBenchResult, type QemuRunResult } from './qemu-bench.types.js';

/**
 * Defaults for `wanmig bench qemu`, chosen so one bench (three runs, each booting its own guest) stays well under
 * ten minutes under TCG on two shared cores: 512 MiB of RAM, 5 s of workload before the move.
 */
export const DEFAULT_QEMU_BENCH_OPTIONS: QemuBenchOptions = {
  ramMiB: 512,
  delayMs: 50,
  bandwidthBps: 200e6,
  warmupMs: 5_000,
};

/** The runs of `wanmig bench qemu`, in the order they are made. */
export const QEMU_BENCH_RUNS = ['qemu', 'qemuTuned', 'wanmig'] as const;

/**
 * The same guest (test/guest: 2 GiB disk, counter service, RAM hot set and synced disk writes) and workload over
 * the same emulated WAN, moved three ways, each on its own fresh copy of the guest: (a) QEMU as libvirt drives it
 * with its defaults, (b) the same with multifd + zstd and XBZRLE, (c) wanmig's own path. Ratios are (c) over each.
 */
export async function runQemuBench(options: QemuBenchOptions, log: (line: string) => void): Promise<QemuBenchResult> {
  const image = await ensureGuestImage({ log });
  log(
    `bench qemu: ${options.ramMiB} MiB RAM, TCG; WAN ${options.delayMs} ms one-way, ` +
      `${(options.bandwidthBps / 1e6).toFixed(0)} Mbit/s; warm-up ${options.warmupMs} ms`,
  );
  const wanted = (name: QemuRunResult['name']) => options.runs === undefined || options.runs.includes(name);
  const skipped = (name: QemuRunResult['name']) => failedRun(name, ['not asked for (--runs)'], QemuRunOutcome.NotRun);
  const qemu = wanted('qemu')
    ? await runQemuBaseline(QemuBaselineVariant.Qemu, options, { image, log })
    : skipped('qemu');
  const qemuTuned = wanted('qemuTuned')
    ? await runQemuBaseline(QemuBaselineVariant.QemuTuned, options, { image, log })
    : skipped('qemuTuned');
  const wanmig = wanted('wanmig') ? await runWanmigRun(options, log) : skipped('wanmig');
  return {
    options,
    accel: 'tcg',
    runs: { qemu, qemuTuned, wanmig },
    ratios: { vsQemu: ratiosOf(wanmig, qemu), vsQemuTuned: ratiosOf(wanmig, qemuTuned) },
  };
}

/** c / baseline for each figure; NaN (JSON null) unless both runs completed. */
export function ratiosOf(c: QemuRunResult, baseline: QemuRunResult): QemuBenchResult['ratios']['vsQemu'] {
  const usable = completed(c) && completed(baseline);
  const ratio = (a: number, b: number) => (usable && b > 0 ? a / b : NaN);
  return {
    totalSeconds: ratio(c.totalSeconds, baseline.totalSeconds),
    downtimeMs: ratio(c.downtimeMs, baseline.downtimeMs),
    wireBytes: ratio(c.wireBytes, baseline.wireBytes),
  };
}

/** Every run completed and no check that was made found anything wrong (a check not made is not a failure). */
export function nothingWrong(result: QemuBenchResult): boolean {
  return Object.values(result.runs).every(
    (run) =>
      run.outcome === QemuRunOutcome.NotRun ||
      (completed(run) && (run.verified || (run.checks !== undefined && !Object.values(run.checks).includes(false)))),
  );
}

function completed(run: QemuRunResult): boolean {
  return (run.outcome ?? QemuRunOutcome.Completed) === QemuRunOutcome.Completed;
}

/**
 * (c): wanmig's product path: the two-site stack with both orchestrators (one WAN emulator between the sites'
 * NATS servers, with the same delay and rate), a QEMU VM of the same guest created with `vm.create` and moved with
 * `migration.create`, its defaults (downtime 300 ms, verification on: the disk's digests compared in the pause, QEMU's
 * stream checked by its digests before the destination runs; no bandwidth budget: the link's own pace, as for the
 * baselines). Its client is the baselines' (a question every 20 ms, one at a time); it turns to the destination's
 * port when the switchover starts, as a client whose packets follow the VM's address would.
 */
async function runWanmigRun(o: QemuBenchOptions, log: (line: string) => void): Promise<QemuRunResult> {
  const say = (line: string) => log(`wanmig: ${line}`);
  const notes: string[] = [];
  const tcg = { WANMIG_QEMU_ACCEL: 'tcg' };
  let bed: LocalBed | undefined;
  let prober: CounterProber | undefined;
  try {
    say('starting the two-site stack (orchestrators and services at both sites)');
    bed = await LocalBed.start({
      delayMs: o.delayMs,
      bandwidthBps: o.bandwidthBps,
      orchestrator: true,
      orchestratorEnv: { [Site.A]: tcg, [Site.B]: tcg },
    });
    const nc = bed.nc;
    const api = <T>(site: Site, verb: string, body: object, timeoutMs = 30_000) =>
      callControl<T>(nc, controlSubject(site, ServiceName.Orchestrator, verb), body, timeoutMs);
    say(`creating the VM (${o.ramMiB} MiB, TCG) with vm.create`);
    const vm = await api<VmView>(
      Site.A,
      VmVerb.Create,
      { vmId: BENCH_VM, driver: 'qemu', guest: 'test', ramBytes: o.ramMiB * MiB },
      VM_CREATE_TIMEOUT_MS,
    );
    prober = new CounterProber(portOf(vm.serviceAddress!));
    prober.start();
    say(`VM runs at ${vm.serviceAddress}; warming up ${o.warmupMs} ms`);
    await sleep(o.warmupMs);

    const wanBefore = bed.sites.wan.stats();
    const created = await api<MigrationView>(Site.A, MigrationVerb.Create, {
      vmId: BENCH_VM,
      toSite: Site.B,
      verify: !o.noVerify,
    });
    // The client follows the VM to the destination's port once it runs there.
    const followed = followAtResume(bed, created.id, prober);
    const done = await waitFinished(api, created.id);
    await followed.catch(() => undefined);
    const wanAfter = bed.sites.wan.stats();
    const wireBytes = wanAfter.aToB - wanBefore.aToB + (wanAfter.bToA - wanBefore.bToA);
    if (done.phase !== MigrationPhase.Committed) {
      throw new Error(`the migration ended ${done.phase}: ${done.error?.message ?? 'no error recorded'}`);
    }
    const f = done.figures ?? {};
    const moved = await api<VmView>(Site.B, VmVerb.Get, { vmId: BENCH_VM });
    const destinationPort = portOf(moved.serviceAddress!);
    await waitUntil(() => prober!.answersAfterSwitch > 0, {
      what: 'the guest to answer at the destination',
      timeoutMs: 30_000,
      intervalMs: 10,
    }).catch(() => undefined);
    const probe = await prober.stop();
    prober = undefined;
    const running = moved.state === 'running';
    const counterContinued = await counterWentOn(destinationPort, probe);
    const totalSeconds = ((f.resumedAt ?? Date.now()) - Date.parse(done.createdAt)) / 1000;
    notes.push(
      `wire: ${wanAfter.aToB - wanBefore.aToB} bytes A→B, ${wanAfter.bToA - wanBefore.bToA} back (NATS control traffic included)`,
      `disk stream ${f.diskRawBytes ?? 0} bytes as ${f.diskWireBytes ?? 0} in frames; memory stream: QEMU's ` +
        `${f.memoryRawBytes ?? 0} bytes as ${f.memoryWireBytes ?? 0} in frames`,
      `pause (source's view) ${f.downtimeMs ?? '?'} ms: disk finalize ${f.diskFinalizeMs ?? '?'} ms of which its ` +
        `digests compared ${f.diskVerifyMs ?? '?'} ms; held for the go ${f.holdMs ?? '?'} ms`,
      `phases: ${done.history.map((h) => h.phase).join(' → ')}`,
      `counter: source last ${probe.lastSourceCounter}, destination first ${probe.firstDestinationCounter}`,
    );
    if (!running) notes.push(`destination state: ${moved.state}`);
    if (!counterContinued) notes.push('the counter did not go on past the source at the destination');
    const diskEqual = f.diskVerified === true;
    const ramEqual = f.ramVerified === true;
    notes.push(
      `disk digests at the pause ${diskEqual ? 'equal' : 'NOT checked equal'}; QEMU's stream ` +
        `${ramEqual ? 'matched its digests at the destination' : 'NOT checked'} before it ran`,
    );
    const result: QemuRunResult = {
      name: 'wanmig',
      totalSeconds,
      downtimeMs: Math.round(probe.maxGapMs),
      wireBytes,
      verified: running && counterContinued && diskEqual && ramEqual,
      checks: { running, counter: counterContinued, disk: diskEqual, stream: ramEqual },
      outcome: QemuRunOutcome.Completed,
      notes,
    };
    say(
      `${result.totalSeconds.toFixed(1)} s, client-seen downtime ${result.downtimeMs} ms, ${result.wireBytes} bytes ` +
        `on the wire, verified ${result.verified}`,
    );
    await api(Site.B, VmVerb.Remove, { vmId: BENCH_VM }).catch(() => undefined);
    return result;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    say(`FAILED: ${message.split('\n')[0]}`);
    return failedRun('wanmig', [...notes, `failed: ${message}`]);
  } finally {
    await prober?.stop();
    await bed?.stop();
  }
}

const BENCH_VM = 'bench-qemu';
const MiB = 2 ** 20;
/** Creating the VM boots it under TCG: allow for a slow, shared machine. */
const VM_CREATE_TIMEOUT_MS = 300_000;
const MIGRATION_TIMEOUT_MS = 600_000;

function portOf(address: string): number {
  return Number(address.split(':').pop());
}

/** Polls `migration.get` until the migration has ended (bounded). */
async function waitFinished(
  api: <T>(site: Site, verb: string, body: object) => Promise<T>,
  migrationId: string,
): Promise<MigrationView> {
  const deadline = Date.now() + MIGRATION_TIMEOUT_MS;
  for (;;) {
    const m = await api<MigrationView>(Site.A, MigrationVerb.Get, { migrationId });
    if (isTerminalPhase(m.phase)) return m;
    if (Date.now() > deadline) throw new Error(`migration ${migrationId} still ${m.phase} after ${MIGRATION_TIMEOUT_MS} ms`);
    await sleep(200);
  }
}

/**
 * Turns the client to the destination's port the moment it runs there (memory-precopy's `resumed`, as `wanmig demo`
 * does): a query sent to a destination still paused would wait on QEMU's user-mode network retrying its connection
 * to the guest, seconds the VM did not pause.
 */
async function followAtResume(bed: LocalBed, migrationId: string, prober: CounterProber): Promise<void> {
  const sub = bed.nc.subscribe(Subjects.memoryEvents(migrationId));
  try {
    for await (const msg of sub) {
      const event = msg.json<{ type?: string; serviceAddress?: string }>();
      if (event.type === 'resumed' && event.serviceAddress) {
        prober.switchTo(portOf(event.serviceAddress));
        return;
      }
      if (event.type === 'failed' || event.type === 'completed') return;
    }
  } finally {
    sub.unsubscribe();
  }
}
