import { parseArgs } from 'node:util';
import { MigrationVerb, Subjects, VmVerb, type MigrationView, type VmView } from '@wanmig/protocol';
import { formatBytes, parseBitRate, parseDuration, parseSize } from '@wanmig/service';
import { LocalBed, Site } from '@wanmig/testing';
import { OrchestratorClient } from '../api/orchestrator.client.js';
import { UsageError } from '../errors.js';
import { ProgressDisplay } from '../progress.display.js';
import { GuestProber, type ProbeReport } from '../vm/guest.prober.js';
import { followMigration, phaseTimeline } from './migration.follower.js';

export const DEMO_USAGE = `  wanmig demo [--workload idle|web|db|write-heavy] [--ram 256MiB] [--disk 256MiB] [--wan-delay 50ms]
              [--wan-bandwidth 200mbit] [--downtime 300ms] [--driver sim] [--json]`;

const WORKLOADS = ['idle', 'web', 'db', 'write-heavy'];

export interface DemoReport {
  verified: boolean;
  /** The longest gap between two answers a client of the VM saw. */
  downtimeMs: number;
  /** The VM paused at the source until it ran at the destination (the engine's view). */
  pausedMs: number;
  /** Bytes the WAN emulator carried, both directions, during the migration. */
  wireBytes: number;
  /** Disk and memory bytes the migration sent, before the codec. */
  rawBytes: number;
  totalSeconds: number;
  phases: Array<{ name: string; start: string; end: string }>;
  vm: { vmId: string; ramBytes: number; diskBytes: number; workload: string };
  wan: { delayMs: number; bandwidthBps: number; aToB: number; bToA: number };
  disk: { rawBytes: number; frameBytes: number; verified: boolean; finalDrainMs: number; verifyMs: number };
  memory: { rawBytes: number; frameBytes: number; rounds: number; verified: boolean; checkMs: number };
  client: { answers: number; answersAfterSwitch: number; counterContinued: boolean };
  answersMatch: boolean;
  migrationId: string;
  phase: string;
}

/**
 * The whole story on one machine: two sites across an emulated WAN, a running guest with a workload and a client
 * probing its service, a live migration through the orchestrator, and a report that holds only if the destination's
 * disk and memory equal the source's at pause and the client's counter carried on.
 */
export async function demo(argv: string[], out: (text: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      workload: { type: 'string', default: 'web' },
      ram: { type: 'string', default: '256MiB' },
      disk: { type: 'string', default: '256MiB' },
      'wan-delay': { type: 'string', default: '50ms' },
      'wan-bandwidth': { type: 'string', default: '200mbit' },
      downtime: { type: 'string', default: '300ms' },
      driver: { type: 'string', default: 'sim' },
      json: { type: 'boolean' },
    },
  });
  if (!WORKLOADS.includes(values.workload)) throw new UsageError(`--workload is one of ${WORKLOADS.join(', ')}`);
  if (values.driver !== 'sim')
    throw new UsageError('--driver: only sim is available so far (qemu comes with the QEMU driver)');
  const delayMs = parseDuration(values['wan-delay'], '--wan-delay');
  const bandwidthBps = parseBitRate(values['wan-bandwidth'], '--wan-bandwidth');
  const ramBytes = parseSize(values.ram, '--ram');
  const diskBytes = parseSize(values.disk, '--disk');
  const downtimeMs = parseDuration(values.downtime, '--downtime');
  const log = (line: string) => process.stderr.write(`${line}\n`);

  log(`starting two sites joined by a ${delayMs} ms / ${formatBytes(bandwidthBps / 8)}/s WAN ...`);
  const bed = await LocalBed.start({ delayMs, bandwidthBps, orchestrator: true });
  let client: OrchestratorClient | undefined;
  let prober: GuestProber | undefined;
  try {
    client = await OrchestratorClient.connect({ nats: bed.sites.a.url });
    const vmId = 'demo-vm';
    const vm = await client.call<VmView>(
      Site.A,
      VmVerb.Create,
      { vmId, ramBytes, diskBytes, workload: values.workload, seed: 1 },
      120_000,
    );
    log(`${vmId} runs at ${Site.A} (${formatBytes(ramBytes)} RAM, ${formatBytes(diskBytes)} disk, ${values.workload})`);
    prober = new GuestProber(vm.serviceAddress!);
    prober.start();
    await new Promise((resolve) => setTimeout(resolve, 1500));

    bed.sites.wan.resetStats();
    const created = await client.call<MigrationView>(Site.A, MigrationVerb.Create, {
      vmId,
      toSite: Site.B,
      downtimeMs,
    });
    log(`migration ${created.id}: ${vmId} ${Site.A} → ${Site.B}`);
    // The client follows the VM the moment it runs at the destination (net-redirect will make this transparent).
    const p = prober;
    const resumed = client.nc.subscribe(Subjects.memoryEvents(created.id), {
      callback: (err, msg) => {
        if (err) return;
        const event = msg.json<{ type: string; serviceAddress?: string }>();
        if (event.type === 'resumed' && event.serviceAddress) p.switchTo(event.serviceAddress);
      },
    });
    let done: MigrationView;
    try {
      done = await followMigration(client, Site.A, created.id, { display: new ProgressDisplay() });
    } finally {
      resumed.unsubscribe();
    }
    const wan = bed.sites.wan.stats();
    if (done.figures?.serviceAddress && !prober.switched) prober.switchTo(done.figures.serviceAddress);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && prober.answersAfterSwitch < 20) await new Promise((r) => setTimeout(r, 50));
    const probe = prober.stop();
    const report = buildReport(done, probe, { delayMs, bandwidthBps, aToB: wan.aToB, bToA: wan.bToA }, values.workload);
    out(formatDemo(report));
    if (values.json) out(JSON.stringify(report));
    return report.verified ? 0 : 1;
  } finally {
    prober?.stop();
    await client?.close();
    await bed.stop();
  }
}

function buildReport(m: MigrationView, probe: ProbeReport, wan: DemoReport['wan'], workload: string): DemoReport {
  const f = m.figures ?? {};
  const counterContinued =
    !probe.counterWentBack && probe.answersAfterSwitch > 0 && probe.firstCounterAfter >= probe.lastCounterBefore;
  const committed = m.phase === 'COMMITTED';
  return {
    verified:
      committed && f.diskVerified === true && f.ramVerified === true && f.answersMatch === true && counterContinued,
    downtimeMs: Math.round(probe.maxGapMs),
    pausedMs: f.downtimeMs ?? 0,
    wireBytes: wan.aToB + wan.bToA,
    rawBytes: (f.diskRawBytes ?? 0) + (f.memoryRawBytes ?? 0),
    totalSeconds: f.totalSeconds ?? (Date.parse(m.updatedAt) - Date.parse(m.createdAt)) / 1000,
    phases: phaseTimeline(m),
    vm: { vmId: m.vmId, ramBytes: f.ramBytes ?? 0, diskBytes: f.diskBytes ?? 0, workload },
    wan,
    disk: {
      rawBytes: f.diskRawBytes ?? 0,
      frameBytes: f.diskWireBytes ?? 0,
      verified: f.diskVerified === true,
      finalDrainMs: f.diskFinalizeMs ?? 0,
      verifyMs: f.diskVerifyMs ?? 0,
    },
    memory: {
      rawBytes: f.memoryRawBytes ?? 0,
      frameBytes: f.memoryWireBytes ?? 0,
      rounds: f.memoryRounds ?? 0,
      verified: f.ramVerified === true,
      checkMs: f.ramCheckMs ?? 0,
    },
    client: { answers: probe.answers, answersAfterSwitch: probe.answersAfterSwitch, counterContinued },
    answersMatch: f.answersMatch === true,
    migrationId: m.id,
    phase: m.phase,
  };
}

export function formatDemo(r: DemoReport): string {
  const start = Date.parse(r.phases[0]?.start ?? new Date().toISOString());
  const timeline = r.phases
    .map((p) => {
      const from = ((Date.parse(p.start) - start) / 1000).toFixed(2).padStart(7);
      const took = ((Date.parse(p.end) - Date.parse(p.start)) / 1000).toFixed(2);
      return `  ${from} s  ${p.name.padEnd(14)} ${took} s`;
    })
    .join('\n');
  const rows: Array<[string, string]> = [
    ['VM', `${r.vm.vmId}: ${formatBytes(r.vm.ramBytes)} RAM, ${formatBytes(r.vm.diskBytes)} disk, ${r.vm.workload}`],
    ['WAN', `${r.wan.delayMs} ms one way, ${formatBytes(r.wan.bandwidthBps / 8)}/s`],
    ['outcome', r.phase],
    [
      'downtime',
      `${r.downtimeMs} ms as the client saw it (longest gap between answers); paused ${r.pausedMs} ms at the source, ` +
        `of which disk finalize ${r.disk.finalDrainMs} ms (verify ${r.disk.verifyMs} ms), RAM check ${r.memory.checkMs} ms`,
    ],
    [
      'bytes',
      `${formatBytes(r.wireBytes)} on the wire for ${formatBytes(r.rawBytes)} of disk and memory ` +
        `(${r.rawBytes > 0 ? (r.wireBytes / r.rawBytes).toFixed(3) : '-'} wire/raw)`,
    ],
    ['disk', `${formatBytes(r.disk.rawBytes)} sent as ${formatBytes(r.disk.frameBytes)} of frames`],
    [
      'memory',
      `${formatBytes(r.memory.rawBytes)} sent as ${formatBytes(r.memory.frameBytes)} in ${r.memory.rounds} rounds`,
    ],
    ['total', `${r.totalSeconds.toFixed(2)} s`],
    [
      'verification',
      `disk ${r.disk.verified ? 'equal (sha256 per region)' : 'NOT VERIFIED'}; RAM ${r.memory.verified ? 'equal (sha256)' : 'NOT VERIFIED'}; ` +
        `answers ${r.answersMatch ? 'same at both ends' : 'DIFFER'}; counter ${r.client.counterContinued ? 'continued' : 'DID NOT CONTINUE'}`,
    ],
    ['verified', r.verified ? 'yes' : 'NO'],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return `phases\n${timeline}\n${rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')}`;
}
