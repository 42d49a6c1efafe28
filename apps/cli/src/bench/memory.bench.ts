import { LocalBed } from '@wanmig/testing';
import { runVmMigration, type VmRunResult } from '../vm/vm-migration.runner.js';

export interface MemoryBenchOptions {
  ramBytes: number;
  workload: 'idle' | 'web' | 'db' | 'write-heavy';
  delayMs: number;
  bandwidthBps: number;
  downtimeMs: number;
}

export interface MemoryBenchRun {
  label: string;
  seconds: number;
  wireBytes: number;
  downtimeMs: number;
  pausedMs: number;
  rounds: number;
  stopReason: string;
  verified: boolean;
}

export interface MemoryBenchResult {
  options: MemoryBenchOptions;
  plain: MemoryBenchRun;
  wanmig: MemoryBenchRun;
  ratios: { wireBytes: number; downtime: number; seconds: number };
  detail: { plain: VmRunResult; wanmig: VmRunResult };
}

/**
 * Plain pre-copy against wanmig's, same guest, same workload, same emulated WAN, one run: the
 * baseline is the same engine with the codec off (zero pages still skipped, as QEMU does) and
 * KVM-style termination (30 rounds or two rounds of growth, no throttling).
 */
export async function runMemoryBench(o: MemoryBenchOptions, log: (line: string) => void): Promise<MemoryBenchResult> {
  const once = async (
    label: string,
    policy: 'kvm' | 'smart',
    codec: boolean,
  ): Promise<[MemoryBenchRun, VmRunResult]> => {
    log(`${label}: ${policy} policy, codec ${codec ? 'on' : 'off'}`);
    const bed = await LocalBed.start({ delayMs: o.delayMs, bandwidthBps: o.bandwidthBps, memory: true });
    try {
      const r = await runVmMigration(bed, {
        ramBytes: o.ramBytes,
        workload: o.workload,
        policy,
        codec,
        downtimeMs: o.downtimeMs,
        // Hashing 1 GiB at the destination would sit inside the downtime being compared; the
        // answers and the counter are checked instead (the test suite checks RAM sha256).
        verifyRam: false,
        warmupMs: 2000,
        log,
      });
      const run: MemoryBenchRun = {
        label,
        seconds: r.report.totalSeconds,
        wireBytes: r.wire.aToB + r.wire.bToA,
        downtimeMs: r.probe.maxGapMs,
        pausedMs: r.report.pausedMs,
        rounds: r.report.rounds.length,
        stopReason: r.report.stopReason,
        verified: r.answersMatch && r.counterContinued,
      };
      log(`${label}: ${run.seconds.toFixed(1)} s, ${run.wireBytes} bytes on the wire, downtime ${run.downtimeMs} ms`);
      return [run, r];
    } finally {
      await bed.stop();
    }
  };
  const [plain, plainDetail] = await once('plain pre-copy', 'kvm', false);
  const [wanmig, wanmigDetail] = await once('wanmig', 'smart', true);
  return {
    options: o,
    plain,
    wanmig,
    ratios: {
      wireBytes: wanmig.wireBytes / plain.wireBytes,
      downtime: wanmig.downtimeMs / plain.downtimeMs,
      seconds: wanmig.seconds / plain.seconds,
    },
    detail: { plain: plainDetail, wanmig: wanmigDetail },
  };
}

export function formatMemoryBench(r: MemoryBenchResult): string {
  const o = r.options;
  const row = (x: MemoryBenchRun) =>
    `${x.label.padEnd(16)} ${x.seconds.toFixed(2).padStart(8)} ${String(x.wireBytes).padStart(13)} ${String(x.downtimeMs).padStart(9)} ${String(x.rounds).padStart(7)}  ${x.stopReason.padEnd(16)} ${x.verified ? 'yes' : 'NO'}`;
  return [
    `guest ${(o.ramBytes / 2 ** 20).toFixed(0)} MiB, ${o.workload} workload; WAN ${o.delayMs} ms one-way, ${(o.bandwidthBps / 1e6).toFixed(0)} Mbit/s; downtime budget ${o.downtimeMs} ms`,
    '',
    `${'run'.padEnd(16)} ${'seconds'.padStart(8)} ${'wire bytes'.padStart(13)} ${'downtime'.padStart(9)} ${'rounds'.padStart(7)}  ${'stopped'.padEnd(16)} verified`,
    row(r.plain),
    row(r.wanmig),
    '',
    `ratios wanmig / plain: wire bytes ${r.ratios.wireBytes.toFixed(3)}, downtime ${r.ratios.downtime.toFixed(3)}, time ${r.ratios.seconds.toFixed(3)}`,
    '(downtime: the longest gap between answers a client of the guest saw; verified: same answers from RAM at both ends, counter continues)',
  ].join('\n');
}
