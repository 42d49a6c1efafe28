import { randomUUID } from 'node:crypto';
import { SimDriver, type SimSourceVm } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  MemoryPrecopyVerb,
  MemoryVerb,
  ServiceName,
  Subjects,
  type MemoryMigrationReport,
  type MemoryProgress,
} from '@wanmig/protocol';
import { Site, type LocalBed } from '@wanmig/testing';
import { GuestProber, type ProbeReport } from './guest.prober.js';

export type MemoryReport = MemoryMigrationReport;
export type MemoryProgressEvent = MemoryProgress & { type: 'progress' };

export interface VmRunOptions {
  ramBytes: number;
  workload: 'idle' | 'web' | 'db' | 'write-heavy';
  seed?: number;
  policy: 'smart' | 'kvm';
  codec: boolean;
  downtimeMs: number;
  budgetBps?: number;
  verifyRam: boolean;
  /** Let the workload run this long before the migration starts. */
  warmupMs?: number;
  onProgress?: (event: MemoryProgressEvent) => void;
  log?: (line: string) => void;
}

export interface VmRunResult {
  vmId: string;
  report: MemoryReport;
  probe: ProbeReport;
  wire: { aToB: number; bToA: number };
  /** The same queries, answered by the source at pause and by the destination before it ran. */
  answersMatch: boolean;
  counterContinued: boolean;
}

/** The questions asked of the VM on both sides: its counter, key-value entries and a few pages. */
export const PROBE_QUERIES = ['COUNTER', 'GET k0', 'GET k3', 'GET k42', 'GET k255', 'PAGE 1', 'PAGE 100', 'PAGE 4000'];

/**
 * Launches a sim guest at site A with a workload and a client probing its service, migrates it to
 * site B through memory-precopy and delta-apply, and reports what the client saw.
 */
export async function runVmMigration(bed: LocalBed, o: VmRunOptions): Promise<VmRunResult> {
  const log = o.log ?? (() => undefined);
  const vmId = `vm-${randomUUID().slice(0, 8)}`;
  const driver = new SimDriver({ runtimeDir: bed.runtimeDirA });
  log(`launching ${vmId}: ${o.ramBytes} bytes of RAM, ${o.workload} workload`);
  const vm: SimSourceVm = await driver.launch({ vmId, ramBytes: o.ramBytes, workload: o.workload, seed: o.seed ?? 1 });
  const prober = new GuestProber(vm.serviceAddress);
  const migrationId = randomUUID();
  try {
    prober.start();
    await new Promise((resolve) => setTimeout(resolve, o.warmupMs ?? 1500));
    const events = bed.nc.subscribe(Subjects.memoryEvents(migrationId));
    bed.sites.wan.resetStats();
    await callControl(bed.nc, controlSubject(Site.A, ServiceName.MemoryPrecopy, MemoryPrecopyVerb.Migrate), {
      migrationId,
      vmId,
      toSite: Site.B,
      policy: o.policy,
      codec: o.codec,
      downtimeMs: o.downtimeMs,
      bandwidthBps: o.budgetBps,
      verifyRam: o.verifyRam,
      queriesAtPause: PROBE_QUERIES.filter((q) => !q.startsWith('PAGE') || Number(q.split(' ')[1]) * 4096 < o.ramBytes),
    });
    let report: MemoryReport | undefined;
    try {
      for await (const msg of events) {
        const event = msg.json<{ type: string; report?: MemoryReport; error?: { message: string } }>();
        if (event.type === 'progress') o.onProgress?.(event as unknown as MemoryProgressEvent);
        // The client follows the VM to its new address as soon as it runs there (network
        // redirection will make this transparent).
        else if (event.type === 'resumed')
          prober.switchTo((event as unknown as { serviceAddress: string }).serviceAddress);
        else if (event.type === 'completed') {
          report = event.report!;
          break;
        } else if (event.type === 'failed') {
          throw new Error(`memory migration failed: ${event.error?.message ?? 'unknown error'}`);
        }
      }
    } finally {
      events.unsubscribe();
    }
    if (!report) throw new Error('memory migration events ended without an outcome');
    if (!prober.switched) prober.switchTo(report.destination.serviceAddress);
    // Keep probing until the client has had a good run of answers from the new place.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && prober.answersAfterSwitch < 20) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const probe = prober.stop();
    const wire = bed.sites.wan.stats();
    const pause = report.answersAtPause;
    const dest = report.answersAtDestination;
    const answersMatch = Object.keys(pause).length > 0 && Object.keys(pause).every((q) => pause[q] === dest[q]);
    const counterAtPause = Number(pause.COUNTER);
    return {
      vmId,
      report,
      probe,
      wire: { aToB: wire.aToB, bToA: wire.bToA },
      answersMatch,
      counterContinued:
        !probe.counterWentBack && probe.firstCounterAfter >= counterAtPause && probe.answersAfterSwitch > 0,
    };
  } finally {
    prober.stop();
    // The destination guest was started detached by delta-apply: stop it with the migration's RAM.
    await callControl(bed.nc, controlSubject(Site.B, ServiceName.DeltaApply, MemoryVerb.Release), {
      migrationId,
      deleteRam: true,
    }).catch(() => undefined);
    await vm.stop().catch(() => undefined);
  }
}
