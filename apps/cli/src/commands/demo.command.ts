import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  callControl,
  controlSubject,
  GUEST_SERVICE_PORT,
  MigrationVerb,
  NetRedirectVerb,
  ServiceName,
  Subjects,
  VmVerb,
  type MigrationView,
  type VmNicStatus,
  type VmView,
} from '@wanmig/protocol';
import { formatBytes, parseBitRate, parseDuration, parseSize } from '@wanmig/service';
import {
  LocalBed,
  NetBed,
  netAvailable,
  netRedirectEnv,
  netUnavailableMessage,
  openNsPort,
  Site,
  type NetnsProcess,
} from '@wanmig/testing';
import { OrchestratorClient } from '../api/orchestrator.client.js';
import { UsageError } from '../errors.js';
import { ProgressDisplay } from '../progress.display.js';
import { GuestProber, type ProbeReport } from '../vm/guest.prober.js';
import { followMigration, phaseTimeline } from './migration.follower.js';

export const DEMO_USAGE = `  wanmig demo [--workload idle|web|db|write-heavy] [--ram 256MiB] [--disk 256MiB] [--wan-delay 50ms]
              [--wan-bandwidth 200mbit] [--downtime 300ms] [--driver sim|qemu] [--no-net] [--json]
                       --driver qemu: the QEMU test guest (512 MiB RAM by default, its own 2 GiB disk and workload)`;

/** The QEMU test guest's RAM unless --ram says otherwise. */
const QEMU_DEMO_RAM = '512MiB';

const WORKLOADS = ['idle', 'web', 'db', 'write-heavy'];

export interface DemoReport {
  verified: boolean;
  /** The longest gap between two answers a client of the VM saw. */
  downtimeMs: number;
  /** The VM paused at the source until it ran at the destination (the engine's view). */
  pausedMs: number;
  /** Of the pause: held before the destination's resume while the orchestrator moved the route. */
  holdMs: number;
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
  client: { answers: number; answersAfterSwitch: number; counterContinued: boolean; reconnects: number };
  /**
   * Network redirection (VM with an address, network namespaces): the client holds one connection to the VM's own
   * address across the move. `skipped` says why not.
   */
  redirect: RedirectReport;
  answersMatch: boolean;
  driver: 'sim' | 'qemu';
  migrationId: string;
  phase: string;
}

/** Creating a QEMU VM boots it (TCG on hosts whose KVM does not run guests): allow for a slow machine. */
const QEMU_CREATE_TIMEOUT_MS = 300_000;

export type RedirectReport =
  | {
      skipped?: undefined;
      /** The VM's address, where the client reached it the whole time. */
      address: string;
      /** From the pause to the first answer the client got from the new site (the first after the VM ran there). */
      firstAnswerMs: number;
      /** Connections the old site's NIC carried to the new one (the client's, open since before the move). */
      relayedConnections: number;
      /** From the pause until the router's /32 pointed at the destination. */
      routeMovedMs: number;
      /** A connection opened after the move reached the new site's NIC directly and was answered. */
      newConnectionAtDestination: boolean;
      /** The client never had to connect again. */
      sameConnection: boolean;
    }
  | { skipped: string };

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
      ram: { type: 'string' },
      disk: { type: 'string', default: '256MiB' },
      'wan-delay': { type: 'string', default: '50ms' },
      'wan-bandwidth': { type: 'string', default: '200mbit' },
      downtime: { type: 'string', default: '300ms' },
      driver: { type: 'string', default: 'sim' },
      'no-net': { type: 'boolean' },
      json: { type: 'boolean' },
    },
  });
  if (!WORKLOADS.includes(values.workload)) throw new UsageError(`--workload is one of ${WORKLOADS.join(', ')}`);
  if (values.driver !== 'sim' && values.driver !== 'qemu') throw new UsageError('--driver is sim or qemu');
  const qemu = values.driver === 'qemu';
  const delayMs = parseDuration(values['wan-delay'], '--wan-delay');
  const bandwidthBps = parseBitRate(values['wan-bandwidth'], '--wan-bandwidth');
  const ramBytes = parseSize(values.ram ?? (qemu ? QEMU_DEMO_RAM : '256MiB'), '--ram');
  const diskBytes = parseSize(values.disk, '--disk');
  const downtimeMs = parseDuration(values.downtime, '--downtime');
  const log = (line: string) => process.stderr.write(`${line}\n`);

  const skipped = values['no-net']
    ? 'not asked (--no-net)'
    : qemu
      ? 'QEMU VMs get no address yet (a tap on the site network comes next)'
      : netUnavailableMessage(await netAvailable());
  log(`starting two sites joined by a ${delayMs} ms / ${formatBytes(bandwidthBps / 8)}/s WAN ...`);
  const netBed = skipped ? undefined : await NetBed.create();
  let bed: LocalBed | undefined;
  let client: OrchestratorClient | undefined;
  let prober: GuestProber | undefined;
  let door: NetnsProcess | undefined;
  const doorDir = await mkdtemp(join(tmpdir(), 'wanmig-demo-'));
  try {
    bed = await LocalBed.start({
      delayMs,
      bandwidthBps,
      orchestrator: true,
      ...(netBed ? { net: { env: netRedirectEnv(netBed) } } : {}),
    });
    client = await OrchestratorClient.connect({ nats: bed.sites.a.url });
    const vmId = 'demo-vm';
    const address = netBed?.vmAddress(1);
    const vm = qemu
      ? await client.call<VmView>(
          Site.A,
          VmVerb.Create,
          { vmId, driver: 'qemu', guest: 'test', ramBytes },
          QEMU_CREATE_TIMEOUT_MS,
        )
      : await client.call<VmView>(
          Site.A,
          VmVerb.Create,
          { vmId, ramBytes, diskBytes, workload: values.workload, seed: 1, ...(address ? { addresses: [address] } : {}) },
          120_000,
        );
    log(
      qemu
        ? `${vmId} runs at ${Site.A}: QEMU, the test guest (${formatBytes(ramBytes)} RAM, ${formatBytes(vm.diskBytes)} disk, its own workload)`
        : `${vmId} runs at ${Site.A} (${formatBytes(ramBytes)} RAM, ${formatBytes(diskBytes)} disk, ${values.workload})`,
    );
    if (netBed && address) {
      // The client lives in its own namespace, behind the router: it knows only the VM's address.
      const path = join(doorDir, 'client.sock');
      door = await openNsPort(netBed, 'client', { path, host: address, port: GUEST_SERVICE_PORT, lifetimeMs: 900_000 });
      prober = new GuestProber(`unix:${path}`);
      log(`a client in its own namespace talks to ${address}:${GUEST_SERVICE_PORT} through the router`);
    } else {
      prober = new GuestProber(vm.serviceAddress!, qemu ? 20 : 5, 600, qemu ? 'counter' : 'ping');
      log(`network redirection: ${skipped}; the client follows the VM to its new host port itself`);
    }
    prober.start();
    await new Promise((resolve) => setTimeout(resolve, 1500));

    bed.sites.wan.resetStats();
    const created = await client.call<MigrationView>(Site.A, MigrationVerb.Create, {
      vmId,
      toSite: Site.B,
      downtimeMs,
    });
    log(`migration ${created.id}: ${vmId} ${Site.A} → ${Site.B}`);
    const p = prober;
    // Without an address, the client is told where the VM runs once it does.
    const resumed = address
      ? undefined
      : client.nc.subscribe(Subjects.memoryEvents(created.id), {
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
      resumed?.unsubscribe();
    }
    const wan = bed.sites.wan.stats();
    if (!address && done.figures?.serviceAddress && !prober.switched) prober.switchTo(done.figures.serviceAddress);
    const pausedAt = pauseTime(done);
    const deadline = Date.now() + 5000;
    const enough = () => (address ? prober!.around(pausedAt).answersAfter : prober!.answersAfterSwitch) >= 20;
    while (Date.now() < deadline && !enough()) await new Promise((r) => setTimeout(r, 50));
    let redirect: RedirectReport = { skipped: skipped ?? 'the VM has no address' };
    if (netBed && address && done.phase === 'COMMITTED') {
      redirect = await measureRedirect(bed, netBed, prober, done, address, join(doorDir, 'new.sock'));
    }
    const probe = prober.stop();
    const report = buildReport(
      done,
      probe,
      { delayMs, bandwidthBps, aToB: wan.aToB, bToA: wan.bToA },
      qemu ? 'qemu test guest' : values.workload,
      redirect,
      address ? prober.around(pausedAt) : undefined,
      qemu,
    );
    out(formatDemo(report));
    if (values.json) out(JSON.stringify(report));
    return report.verified ? 0 : 1;
  } finally {
    prober?.stop();
    await door?.stop();
    await client?.close();
    await bed?.stop();
    await netBed?.destroy();
    await rm(doorDir, { recursive: true, force: true });
  }
}

/** When the VM paused at the source (the engine's clock; every site is on this host). */
function pauseTime(m: MigrationView): number {
  const f = m.figures ?? {};
  if (f.pausedAt !== undefined) return f.pausedAt;
  const stop = m.history.find((h) => h.phase === 'STOP_AND_COPY');
  return stop ? Date.parse(stop.at) : Date.parse(m.updatedAt);
}

/**
 * What the client saw of the redirection, and what the sites' NICs counted: the old site's relayed connections, and a
 * fresh connection from the client's namespace, which must now be answered at the new site without any relay.
 */
async function measureRedirect(
  bed: LocalBed,
  netBed: NetBed,
  prober: GuestProber,
  m: MigrationView,
  address: string,
  path: string,
): Promise<RedirectReport> {
  const pausedAt = pauseTime(m);
  const nic = (site: Site) =>
    callControl<VmNicStatus>(bed.nc, controlSubject(site, ServiceName.NetRedirect, NetRedirectVerb.VmStatus), {
      vmId: m.vmId,
    });
  const atB = (await nic(Site.B)).connections.accepted;
  const door = await openNsPort(netBed, 'client', {
    path,
    host: address,
    port: GUEST_SERVICE_PORT,
    lifetimeMs: 30_000,
  });
  let answered = false;
  try {
    const once = new GuestProber(`unix:${path}`);
    once.start();
    const until = Date.now() + 5000;
    while (Date.now() < until && !answered) {
      await new Promise((r) => setTimeout(r, 50));
      answered = once.around(0).answersAfter > 0;
    }
    once.stop();
  } finally {
    await door.stop();
  }
  const reachedB = (await nic(Site.B)).connections.accepted > atB;
  const relayed = (await nic(Site.A)).connections.relayed;
  const around = prober.around(pausedAt, m.figures?.resumedAt ?? pausedAt);
  return {
    address,
    firstAnswerMs: around.firstAnswerMs ?? -1,
    relayedConnections: relayed,
    routeMovedMs: m.figures?.routeMovedAt !== undefined ? m.figures.routeMovedAt - pausedAt : -1,
    newConnectionAtDestination: answered && reachedB,
    sameConnection: prober.reconnects === 0,
  };
}

function buildReport(
  m: MigrationView,
  probe: ProbeReport,
  wan: DemoReport['wan'],
  workload: string,
  redirect: RedirectReport,
  around?: ReturnType<GuestProber['around']>,
  qemu = false,
): DemoReport {
  const f = m.figures ?? {};
  // A client on the VM's address never switched: the pause splits its answers into before and after.
  const after = around ? around.answersAfter : probe.answersAfterSwitch;
  const [before, first] = around
    ? [around.lastCounterBefore, around.firstCounterAfter]
    : [probe.lastCounterBefore, probe.firstCounterAfter];
  const counterContinued = !probe.counterWentBack && after > 0 && first >= before;
  const committed = m.phase === 'COMMITTED';
  const redirected =
    redirect.skipped !== undefined ||
    (redirect.sameConnection && redirect.newConnectionAtDestination && redirect.firstAnswerMs >= 0);
  return {
    verified:
      committed &&
      f.diskVerified === true &&
      f.ramVerified === true &&
      // A QEMU VM's RAM is checked whole by its stream's digests; the sim guest's answers are sampled besides.
      (qemu || f.answersMatch === true) &&
      counterContinued &&
      redirected,
    downtimeMs: Math.round(probe.maxGapMs),
    pausedMs: f.downtimeMs ?? 0,
    holdMs: f.holdMs ?? 0,
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
    client: { answers: probe.answers, answersAfterSwitch: after, counterContinued, reconnects: probe.reconnects },
    redirect,
    answersMatch: f.answersMatch === true,
    driver: qemu ? 'qemu' : 'sim',
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
        `of which disk finalize ${r.disk.finalDrainMs} ms (verify ${r.disk.verifyMs} ms), RAM check ${r.memory.checkMs} ms, ` +
        `held for the route move ${r.holdMs} ms`,
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
      `disk ${r.disk.verified ? 'equal (sha256 per region)' : 'NOT VERIFIED'}; ` +
        (r.driver === 'qemu'
          ? `RAM and device state ${r.memory.verified ? "equal (QEMU's stream, sha256 per segment)" : 'NOT VERIFIED'}; `
          : `RAM ${r.memory.verified ? 'equal (sha256)' : 'NOT VERIFIED'}; answers ${r.answersMatch ? 'same at both ends' : 'DIFFER'}; `) +
        `counter ${r.client.counterContinued ? 'continued' : 'DID NOT CONTINUE'}`,
    ],
    [
      'network',
      r.redirect.skipped !== undefined
        ? `redirection skipped: ${r.redirect.skipped}`
        : `${r.redirect.address} kept: first answer ${r.redirect.firstAnswerMs} ms after the pause, route moved at ` +
          `+${r.redirect.routeMovedMs} ms, ${r.redirect.relayedConnections} connection(s) relayed by ${Site.A}, ` +
          `client ${r.redirect.sameConnection ? 'on the same connection' : 'RECONNECTED'}, a new connection ` +
          `${r.redirect.newConnectionAtDestination ? `answered at ${Site.B}` : `NOT ANSWERED AT ${Site.B}`}`,
    ],
    ['verified', r.verified ? 'yes' : 'NO'],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return `phases\n${timeline}\n${rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')}`;
}
