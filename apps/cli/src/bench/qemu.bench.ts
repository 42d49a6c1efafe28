import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, type QmpStatus } from '@wanmig/hypervisor';
import {
  bootGuest,
  ensureGuestImage,
  LocalBed,
  sleep,
  trackDir,
  untrackDir,
  type GuestHandle,
  type GuestImage,
} from '@wanmig/testing';
import { runWanmigQemuMigration, type QemuDestination } from '../qemu/qemu-migration.runner.js';
import {
  compareDiskImages,
  counterWentOn,
  failedRun,
  QemuBaselineVariant,
  runQemuBaseline,
  snapshotDestinationDisk,
} from './qemu-baseline.run.js';
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
  const wanmig = wanted('wanmig') ? await runWanmigRun(options, image, log) : skipped('wanmig');
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
 * (c): a fresh source guest on the two-site bed (one WAN emulator between the sites' NATS servers, with the same
 * delay and rate), moved by runWanmigQemuMigration with its defaults (downtime 300 ms, no bandwidth budget: the
 * link's own pace, as for the baselines). Its client-seen downtime comes from the runner's CounterProber, the same
 * client the baselines use (a question every 20 ms, one at a time, switched to the destination once it runs).
 */
async function runWanmigRun(
  o: QemuBenchOptions,
  image: GuestImage,
  log: (line: string) => void,
): Promise<QemuRunResult> {
  const say = (line: string) => log(`wanmig: ${line}`);
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'wanmig-qbench-wanmig-'));
  trackDir(dir);
  let bed: LocalBed | undefined;
  let source: GuestHandle | undefined;
  let destination: QemuDestination | undefined;
  try {
    say('starting the two-site bed');
    bed = await LocalBed.start({ delayMs: o.delayMs, bandwidthBps: o.bandwidthBps, memory: true });
    say(`booting the source guest (${o.ramMiB} MiB, TCG)`);
    await mkdir(join(dir, 'src'));
    source = await bootGuest({
      disk: image.disk,
      workDir: join(dir, 'src'),
      ramMiB: o.ramMiB,
      qmpSocket: join(dir, 'src.qmp'),
    });
    say(`source ready after ${source.readyAfterMs} ms; warming up ${o.warmupMs} ms`);
    await sleep(o.warmupMs);
    // The destination disk at the switch is kept by a snapshot taken just before `cont`, as for the baselines (the
    // source stays `postmigrate`, its image as it was at the pause, until both are compared).
    let snapshotMs: number | undefined;
    const r = await runWanmigQemuMigration(bed, source, {
      verifyDiskInPause: o.verifyWanmigInPause,
      stopSource: false,
      beforeCont: o.verifyWanmigInPause
        ? undefined
        : async (qmp) => {
            snapshotMs = (await snapshotDestinationDisk(qmp, join(dir, 'dest-overlay.qcow2'))).ms;
          },
      log: say,
    });
    destination = r.destination;

    const qmp = await QmpClient.connect(destination.qmpSocket);
    const status = await qmp.execute<QmpStatus>('query-status').finally(() => qmp.close());
    const running = status.status === 'running';
    const { lastSourceCounter, firstDestinationCounter } = r.probe;
    const counterContinued = await counterWentOn(destination.servicePort, r.probe);
    const p = r.pause;
    notes.push(
      `wire: ${r.wan.aToB} bytes A→B, ${r.wan.bToA} back (NATS control traffic included)`,
      `disk holds in step after ${r.disk.holdingAfterSeconds.toFixed(1)} s; disk stream ${r.disk.report.rawBytesSent} ` +
        `bytes as ${r.disk.report.frameBytesSent} in frames (${r.disk.report.rounds.length} catch-up rounds)`,
      `memory stream: QEMU's ${r.memory.relay.qemuBytes} bytes as ${r.memory.relay.frameBytes} in frames ` +
        `(${r.memory.resentBytes} re-sent)`,
      `pause: mirror cancel ${Math.round(p.mirrorCancelMs)} ms, then side by side disk finalize ` +
        `${Math.round(p.finalizeMs)} ms and QEMU completion ${Math.round(p.completionMs)} ms, destination loaded ` +
        `${Math.round(p.loadedMs)} ms; activate ${Math.round(p.activateMs)} ms (QMP side ${Math.round(p.totalMs)} ms)`,
      `counter: source last ${lastSourceCounter}, destination first ${firstDestinationCounter}`,
      `QEMU ram: transferred ${r.qemu.ramTransferred}, dirty syncs ${r.qemu.dirtySyncCount}`,
      ...r.warnings.map((w) => `warning: ${w}`),
    );
    if (!running) notes.push(`destination status: ${status.status}`);
    if (!counterContinued) notes.push('the counter did not go on past the source at the destination');
    // The disk at the switch is checked from inside the runner (QEMU serves one QMP client per socket): by the
    // snapshot taken before `cont` (beforeCont), or by hashing both images in the pause (--verify-in-pause).
    let diskEqual = r.diskEqualAtPause;
    if (diskEqual === undefined && snapshotMs !== undefined) {
      diskEqual = (await compareDiskImages(source.disk, destination.disk)).equal;
      notes.push(
        `disk sha256 at the switch ${diskEqual ? 'equal' : 'DIFFERENT'} (destination snapshot before cont: ` +
          `${Math.round(snapshotMs)} ms of the pause)`,
      );
    } else if (diskEqual === undefined) notes.push('disk not checked at the switch: not verified');
    else {
      notes.push(
        `disk sha256 at the pause ${diskEqual ? 'equal' : 'DIFFERENT'}, hashed inside the pause ` +
          `(${Math.round(p.verifyMs)} ms of it: the downtime above includes them)`,
      );
    }
    const result: QemuRunResult = {
      name: 'wanmig',
      totalSeconds: r.totalSeconds,
      downtimeMs: Math.round(r.clientPauseMs),
      wireBytes: r.wan.total,
      verified: running && counterContinued && diskEqual === true,
      checks: { running, counter: counterContinued, disk: diskEqual ?? null },
      qemu: { totalTimeMs: r.qemu.totalTimeMs, downtimeMs: r.qemu.downtimeMs, ramTransferred: r.qemu.ramTransferred },
      outcome: QemuRunOutcome.Completed,
      notes,
    };
    say(
      `${result.totalSeconds.toFixed(1)} s, client-seen downtime ${result.downtimeMs} ms, ${result.wireBytes} bytes ` +
        `on the wire, verified ${result.verified}`,
    );
    return result;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    say(`FAILED: ${message.split('\n')[0]}`);
    return failedRun('wanmig', [...notes, `failed: ${message}`]);
  } finally {
    await destination?.stop();
    await source?.stop();
    await bed?.stop();
    await rm(dir, { recursive: true, force: true });
    untrackDir(dir);
  }
}
