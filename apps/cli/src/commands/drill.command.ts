import { parseArgs } from 'node:util';
import { MigrationVerb, VmVerb, type MigrationView, type VmView } from '@wanmig/protocol';
import { formatBytes, parseBitRate, parseDuration, parseSize } from '@wanmig/service';
import { LocalBed, Site } from '@wanmig/testing';
import { OrchestratorClient } from '../api/orchestrator.client.js';
import { readStackFile } from '../api/stack.file.js';
import { UsageError } from '../errors.js';
import { followMigration } from './migration.follower.js';
import { table } from './table.js';

export const DRILL_USAGE = `  wanmig drill [--vms A,B,...|--create 4] [--to site-b] [--concurrency 2] [--bandwidth 200mbit] [--back]
               [--ram 128MiB|256MiB] [--disk 128MiB] [--workload web] [--driver sim|qemu] [--downtime 300ms] [--json]
               [--nats URL | (no stack running:) --wan-delay 50ms --wan-bandwidth 200mbit]
               moves a group of VMs (at most --concurrency at once, the --bandwidth budget shared among those
               in flight), verifies each, optionally moves them back; one report. --driver qemu creates
               QEMU VMs of the test guest (--ram at least 256MiB; their disk is the guest's own)`;

export interface DrillMove {
  vmId: string;
  from: string;
  to: string;
  migrationId: string;
  phase: string;
  verified: boolean;
  seconds: number;
  downtimeMs: number | null;
  rawBytes: number;
  frameBytes: number;
  bandwidthBps: number;
  /** Epoch milliseconds: when the move was asked for and when it ended. */
  startedAt: number;
  endedAt: number;
  error?: string;
}

export interface DrillReport {
  verified: boolean;
  moves: DrillMove[];
  totals: { moves: number; verified: number; seconds: number; rawBytes: number; frameBytes: number; wanBytes?: number };
  concurrency: number;
  bandwidthBps: number;
}

export async function drill(argv: string[], out: (text: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      vms: { type: 'string' },
      create: { type: 'string' },
      to: { type: 'string', default: Site.B },
      concurrency: { type: 'string', default: '2' },
      bandwidth: { type: 'string', default: '200mbit' },
      back: { type: 'boolean' },
      ram: { type: 'string' },
      disk: { type: 'string', default: '128MiB' },
      workload: { type: 'string', default: 'web' },
      driver: { type: 'string', default: 'sim' },
      downtime: { type: 'string', default: '300ms' },
      nats: { type: 'string' },
      'wan-delay': { type: 'string', default: '50ms' },
      'wan-bandwidth': { type: 'string', default: '200mbit' },
      json: { type: 'boolean' },
    },
  });
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64)
    throw new UsageError('--concurrency is a whole number from 1 to 64');
  const budgetBps = parseBitRate(values.bandwidth, '--bandwidth');
  const downtimeMs = parseDuration(values.downtime, '--downtime');
  if (values.vms && values.create) throw new UsageError('give either --vms or --create, not both');
  if (values.driver !== 'sim' && values.driver !== 'qemu') throw new UsageError('--driver is sim or qemu');
  const qemu = values.driver === 'qemu';
  const ram = values.ram ?? (qemu ? '256MiB' : '128MiB');
  const log = (line: string) => process.stderr.write(`${line}\n`);

  // Against the running stack when there is one; otherwise an embedded one for the drill's length.
  const stack = values.nats ?? process.env.WANMIG_NATS_URL ?? (await readStackFile())?.sites[Site.A]?.natsUrl;
  let bed: LocalBed | undefined;
  if (!stack) {
    const delayMs = parseDuration(values['wan-delay'], '--wan-delay');
    const linkBps = parseBitRate(values['wan-bandwidth'], '--wan-bandwidth');
    log(`no stack running: starting two sites joined by a ${delayMs} ms / ${formatBytes(linkBps / 8)}/s WAN`);
    bed = await LocalBed.start({ delayMs, bandwidthBps: linkBps, orchestrator: true });
  }
  const client = await OrchestratorClient.connect({ nats: stack ?? bed!.sites.a.url });
  const made: VmView[] = [];
  try {
    let vms: VmView[];
    if (values.vms) {
      vms = [];
      for (const vmId of values.vms.split(',').filter(Boolean)) vms.push(await client.findVm(vmId));
    } else {
      const count = Number(values.create ?? '4');
      if (!Number.isInteger(count) || count < 1 || count > 64)
        throw new UsageError('--create is a number from 1 to 64');
      const source = values.to === Site.A ? Site.B : Site.A;
      for (let i = 1; i <= count; i++) {
        const vm = await client.call<VmView>(
          source,
          VmVerb.Create,
          qemu
            ? { vmId: `drill-${i}`, driver: 'qemu', guest: 'test', ramBytes: parseSize(ram, '--ram') }
            : {
                vmId: `drill-${i}`,
                ramBytes: parseSize(ram, '--ram'),
                diskBytes: parseSize(values.disk, '--disk'),
                workload: values.workload,
                seed: i,
              },
          // A QEMU VM boots before it answers (TCG where KVM does not run guests).
          qemu ? 300_000 : 120_000,
        );
        made.push(vm);
        log(`created ${vm.vmId} at ${vm.site}`);
      }
      vms = made;
    }
    if (vms.length === 0) throw new UsageError('no VMs to move');
    const wanBefore = bed?.sites.wan.stats();
    const started = performance.now();
    const moves: DrillMove[] = [];
    const perMigrationBps = Math.floor(budgetBps / Math.min(concurrency, vms.length));
    log(
      `moving ${vms.length} VMs to ${values.to}, ${concurrency} at a time, ${formatBytes(perMigrationBps / 8)}/s each ` +
        `(${formatBytes(budgetBps / 8)}/s shared)`,
    );
    moves.push(
      ...(await runAll(
        vms.map((vm) => () => moveOne(client, vm.vmId, vm.site, values.to, perMigrationBps, downtimeMs, log)),
        concurrency,
      )),
    );
    if (values.back) {
      const arrived = moves.filter((m) => m.phase === 'COMMITTED');
      log(`moving ${arrived.length} VMs back`);
      moves.push(
        ...(await runAll(
          arrived.map((m) => () => moveOne(client, m.vmId, m.to, m.from, perMigrationBps, downtimeMs, log)),
          concurrency,
        )),
      );
    }
    const wanAfter = bed?.sites.wan.stats();
    const report: DrillReport = {
      verified: moves.every((m) => m.verified),
      moves,
      totals: {
        moves: moves.length,
        verified: moves.filter((m) => m.verified).length,
        seconds: (performance.now() - started) / 1000,
        rawBytes: moves.reduce((sum, m) => sum + m.rawBytes, 0),
        frameBytes: moves.reduce((sum, m) => sum + m.frameBytes, 0),
        ...(wanBefore && wanAfter ? { wanBytes: wanAfter.aToB + wanAfter.bToA - wanBefore.aToB - wanBefore.bToA } : {}),
      },
      concurrency,
      bandwidthBps: budgetBps,
    };
    out(formatDrill(report));
    if (values.json) out(JSON.stringify(report));
    return report.verified ? 0 : 1;
  } finally {
    if (!bed) {
      for (const vm of made) {
        const where = await client.findVm(vm.vmId).catch(() => undefined);
        if (where) await client.call(where.site, VmVerb.Remove, { vmId: vm.vmId }, 60_000).catch(() => undefined);
      }
    }
    await client.close();
    await bed?.stop();
  }
}

async function moveOne(
  client: OrchestratorClient,
  vmId: string,
  from: string,
  to: string,
  bandwidthBps: number,
  downtimeMs: number,
  log: (line: string) => void,
): Promise<DrillMove> {
  const t0 = performance.now();
  const startedAt = Date.now();
  let m: MigrationView;
  try {
    const created = await client.call<MigrationView>(from, MigrationVerb.Create, {
      vmId,
      toSite: to,
      bandwidthBps,
      downtimeMs,
    });
    log(`${vmId}: migration ${created.id} ${from} → ${to}`);
    m = await followMigration(client, from, created.id, { log: (line) => log(`${vmId}: ${line.trim()}`) });
  } catch (err) {
    return {
      vmId,
      from,
      to,
      migrationId: '',
      phase: 'NOT_STARTED',
      verified: false,
      seconds: (performance.now() - t0) / 1000,
      downtimeMs: null,
      rawBytes: 0,
      frameBytes: 0,
      bandwidthBps,
      startedAt,
      endedAt: Date.now(),
      error: err instanceof Error ? err.message : String(err),
    };
  }
  const f = m.figures ?? {};
  let running = false;
  let qemu = false;
  if (m.phase === 'COMMITTED') {
    const vm = await client.call<VmView>(to, VmVerb.Get, { vmId }).catch(() => undefined);
    running = vm?.state === 'running';
    qemu = vm?.driver === 'qemu';
  }
  return {
    vmId,
    from,
    to,
    migrationId: m.id,
    phase: m.phase,
    verified:
      m.phase === 'COMMITTED' &&
      running &&
      f.diskVerified === true &&
      f.ramVerified === true &&
      // A QEMU VM's RAM is checked whole by its stream's digests; the sim guest's answers are sampled besides.
      (qemu || f.answersMatch === true),
    seconds: (performance.now() - t0) / 1000,
    downtimeMs: f.downtimeMs ?? null,
    rawBytes: (f.diskRawBytes ?? 0) + (f.memoryRawBytes ?? 0),
    frameBytes: (f.diskWireBytes ?? 0) + (f.memoryWireBytes ?? 0),
    bandwidthBps,
    startedAt,
    endedAt: Date.now(),
    ...(m.error ? { error: `${m.error.code}: ${m.error.message}` } : {}),
  };
}

/** Runs the tasks with at most `limit` in flight; results in the tasks' order. */
async function runAll<T>(tasks: Array<() => Promise<T>>, limit: number): Promise<T[]> {
  const results: T[] = new Array<T>(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

export function formatDrill(r: DrillReport): string {
  const rows = r.moves.map((m) => [
    m.vmId,
    `${m.from} → ${m.to}`,
    m.phase,
    `${m.seconds.toFixed(1)} s`,
    m.downtimeMs === null ? '-' : `${m.downtimeMs} ms`,
    formatBytes(m.rawBytes),
    formatBytes(m.frameBytes),
    m.verified ? 'yes' : `NO${m.error ? ` (${m.error})` : ''}`,
  ]);
  const t = r.totals;
  return [
    table(['VM', 'MOVE', 'OUTCOME', 'TIME', 'DOWNTIME', 'RAW', 'FRAMES', 'VERIFIED'], rows),
    '',
    `totals: ${t.verified}/${t.moves} moves verified in ${t.seconds.toFixed(1)} s; ${formatBytes(t.rawBytes)} of disk and ` +
      `memory sent as ${formatBytes(t.frameBytes)} of frames` +
      (t.wanBytes !== undefined ? `; ${formatBytes(t.wanBytes)} crossed the WAN` : '') +
      `; ${r.concurrency} at a time sharing ${formatBytes(r.bandwidthBps / 8)}/s`,
  ].join('\n');
}
