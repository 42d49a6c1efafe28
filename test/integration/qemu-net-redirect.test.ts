/**
 * Issue 7, acceptance 2: a client holding one TCP connection to a QEMU guest's service keeps it while the guest
 * moves from site A to site B — the stream pauses for about the downtime and goes on, no reconnect.
 *
 * The network is the NetBed's (client, router, site A, site B namespaces). Each site has a bridge `br0` with the same
 * gateway address and the same MAC (an anycast gateway, as EVPN data centres have: the guest keeps its ARP entry for
 * the gateway after the move) and a tap on it. The source QEMU runs inside site A's namespace on its tap, the
 * destination QEMU — started by delta-apply — inside site B's on its own; the guest's address is on no link but its
 * NIC, and the router's /32 for it points at site A until net-redirect's route agent moves it to B right after the
 * destination runs (QEMU's `announce-self` there refreshes B's bridge). Everything else is the QEMU path as usual:
 * disk through disk-transfer (the mirror into a unix-socket export: the namespace has its own loopback) and
 * delta-apply, RAM and devices through QEMU's stream relayed over NATS, across the WAN emulator.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findQemuBinary, guestArgs, QemuProcess, type QemuGuestLaunch, type QemuTapNetwork } from '@wanmig/hypervisor';
import { callControl, controlSubject, NetRedirectVerb, ServiceName, type RouteMoveReply } from '@wanmig/protocol';
import {
  ensureGuestImage,
  GUEST_FAILED_MARKER,
  GUEST_READY_MARKER,
  GUEST_SERVICE_PORT,
  LocalBed,
  netAvailable,
  netRedirectEnv,
  netUnavailableMessage,
  NetBed,
  Site,
  startProbeClient,
  trackDir,
  untrackDir,
  waitUntil,
  type GuestHandle,
  type GuestImage,
  type ProbeClient,
  type ProbeEvent,
} from '@wanmig/testing';
import { runWanmigQemuMigration, type QemuWanmigResult } from '../../apps/cli/src/qemu/qemu-migration.runner.js';

const net = await netAvailable();
const skipped = netUnavailableMessage(net);
if (skipped) console.warn(`qemu-net-redirect: ${skipped}`);

const run = promisify(execFile);
// The first guest build debootstraps Debian; later runs find it cached.
const BUILD_TIMEOUT_MS = 15 * 60_000;
const BOOT_TIMEOUT_MS = 120_000;
const TEST_TIMEOUT_MS = 300_000;
/** The client gives up by itself after this long, whatever happens to the test. */
const CLIENT_LIMIT_MS = 240_000;
const STREAM_PORT = 7778;
const RAM_MIB = 256;
/** Both sites' gateway: the same address and MAC on each br0 (locally administered MACs). */
const GATEWAY_MAC = '02:77:6d:00:00:fe';
const GUEST_MAC = '52:54:00:77:6d:01';
const TAP = 'tap0';
/** Lines the client must still get after the route moved; at 50 ms a line, a couple of seconds. */
const LINES_AFTER_MOVE = 20;
/** Loose: the client's longest silence. The figure itself is printed beside QEMU's downtime. */
const MAX_GAP_BOUND_MS = 10_000;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** `COUNTER <n>` lines the client got, with their arrival time. */
function counterLines(events: readonly ProbeEvent[]): Array<{ at: number; counter: number }> {
  return events
    .filter((e) => e.event === 'line')
    .map((e) => ({ at: e.at, counter: Number(/^COUNTER (\d+)$/.exec(e.text ?? '')?.[1] ?? NaN) }));
}

describe.skipIf(!net.ok)(
  `qemu guest on a bridged tap keeps its client's TCP connection across the migration${skipped ? ` (skipped: ${skipped})` : ''}`,
  () => {
    let image: GuestImage;
    let nb: NetBed | undefined;
    let bed: LocalBed | undefined;
    let dir: string | undefined;
    let source: QemuProcess | undefined;
    let client: ProbeClient | undefined;
    let result: QemuWanmigResult | undefined;

    beforeAll(async () => {
      await findQemuBinary(); // QemuNotFoundError: install qemu-system-x86 (deploy/bootstrap.sh does)
      image = await ensureGuestImage();
      dir = await mkdtemp(join(tmpdir(), 'wanmig-qnet-'));
      trackDir(dir);
      nb = await NetBed.create();
      const gateway = `${nb.vmAddress(254)}/24`;
      for (const site of ['siteA', 'siteB'] as const) {
        await nb.addBridge(site, { address: gateway, mac: GATEWAY_MAC });
        await nb.addTap(site, TAP);
      }
      bed = await LocalBed.start({ delayMs: 20, bandwidthBps: 200e6, memory: true, net: { env: netRedirectEnv(nb) } });
    }, BUILD_TIMEOUT_MS);

    afterAll(async () => {
      await client?.stop().catch(() => undefined);
      await result?.destination
        .stop()
        .catch((err: unknown) => console.warn(`stopping the destination: ${String(err)}`));
      await source?.stop().catch(() => undefined);
      await bed?.stop();
      // Kills whatever is still inside its namespaces (a destination QEMU delta-apply could not stop) and deletes them.
      await nb?.destroy();
      if (dir) {
        await rm(dir, { recursive: true, force: true });
        untrackDir(dir);
      }
    }, 90_000);

    it(
      'one connection to the guest stream pauses for about the downtime and goes on at site B, never reconnected',
      async () => {
        const vm = nb!.vmAddress(1);
        const gateway = nb!.vmAddress(254);
        const network = (site: 'siteA' | 'siteB'): QemuTapNetwork => ({
          netns: nb!.namespace(site),
          tap: TAP,
          mac: GUEST_MAC,
        });
        // The guest takes its address from the kernel command line (test/guest/build-guest.sh).
        const append = `console=ttyS0 quiet panic=-1 wanmig.ip=${vm}/24 wanmig.gw=${gateway}`;
        const disk = join(dir!, 'disk.img');
        await run('cp', ['--sparse=always', image.disk, disk], { timeout: 120_000 });
        const launch: QemuGuestLaunch = {
          kernel: image.kernel,
          initrd: image.initrd,
          append,
          diskPath: disk,
          ramMiB: RAM_MIB,
          machine: 'q35',
          accel: 'tcg',
          network: network('siteA'),
        };
        const serialLog = join(dir!, 'serial.log');
        const qmpSocket = join(dir!, 'source.qmp');
        const bootedAt = Date.now();
        source = await QemuProcess.start({
          name: 'wanmig-net-src',
          args: guestArgs(launch, serialLog, 0),
          qmpSocket,
          logFile: join(dir!, 'qemu.log'),
          netns: launch.network!.netns,
        });
        const src = source;
        const serial = () => {
          try {
            return readFileSync(serialLog, 'utf8');
          } catch {
            return '';
          }
        };
        await waitUntil(
          () => {
            const text = serial();
            if (text.includes(GUEST_FAILED_MARKER) || src.exit) {
              throw new Error(`the source guest failed to boot:\n${text.slice(-2_000)}\n${src.stderrTail()}`);
            }
            return text.includes(GUEST_READY_MARKER);
          },
          { what: 'the source guest to be ready', timeoutMs: BOOT_TIMEOUT_MS, intervalMs: 200 },
        );
        console.log(
          `source guest pid ${src.pid} in ${launch.network!.netns} ready after ${Date.now() - bootedAt} ms: ` +
            serial()
              .split('\n')
              .find((line) => line.includes(GUEST_READY_MARKER)),
        );

        // The router sends the VM's /32 to site A, whose br0 subnet holds the guest.
        await nb!.routeVm(vm, 'siteA');
        client = startProbeClient(nb!, { address: vm, port: STREAM_PORT, durationMs: CLIENT_LIMIT_MS });
        await client.waitForLines(10, { timeoutMs: 15_000 });

        // The runner wants a GuestHandle; this one's QEMU is the QemuProcess above (its QMP connection is lent).
        const handle: GuestHandle = {
          pid: src.pid,
          disk,
          serialLog,
          qemuLog: join(dir!, 'qemu.log'),
          servicePort: 0,
          qmpSocket,
          workDir: dir!,
          get running() {
            return src.exit === undefined;
          },
          serialText: serial,
          stop: async () => {
            await src.stop();
          },
        };
        const migrationId = randomUUID();
        let movedAt: number | undefined;
        let moved: RouteMoveReply | undefined;
        result = await runWanmigQemuMigration(bed!, handle, {
          migrationId,
          sourceQmp: src.qmp,
          // The guest's port is on the bridge, not forwarded to this host: the client in the namespace measures.
          probeCounter: false,
          destination: { accel: 'tcg', machine: 'q35', append, network: network('siteB') },
          // The route agent moves the VM's /32 to site B inside the pause, just before the guest runs there: a
          // refusal would still roll back to A.
          beforeResume: async () => {
            moved = await callControl<RouteMoveReply>(
              bed!.nc,
              controlSubject(Site.A, ServiceName.NetRedirect, NetRedirectVerb.RouteMove),
              { migrationId, addresses: [vm], toSite: Site.B },
            );
            movedAt = Date.now();
          },
          log: (line) => console.log(line),
        });
        const r = result;
        expect(r.warnings).toEqual([]);
        expect(moved?.routes[0]).toMatchObject({ address: vm, via: nb!.nextHop('siteB') });
        expect(movedAt).toBeDefined();

        // The stream goes on, from site B, on the same connection.
        await client.waitForLines(LINES_AFTER_MOVE, { since: movedAt, timeoutMs: 30_000 });
        const report = await client.stop();
        const events = client.events();
        const lines = counterLines(events);
        const gaps = lines.slice(1).map((line, i) => ({ ms: line.at - lines[i].at, at: lines[i].at }));
        const widest = gaps.reduce((a, b) => (b.ms > a.ms ? b : a), { ms: 0, at: 0 });
        const after = lines.filter((line) => line.at >= movedAt!);
        console.log(
          [
            `client: one connection, ${report.lines} lines (${after.length} after the route moved), ` +
              `counter ${lines[0]?.counter} -> ${lines.at(-1)?.counter}, outcome ${report.outcome}`,
            `client's longest silence ${widest.ms} ms (from ${widest.at - bootedAt} ms after boot) | QEMU downtime ` +
              `${r.qemu.downtimeMs} ms | pause (source stopped -> destination cont) ${r.pause.totalMs.toFixed(0)} ms | ` +
              `route moved ${movedAt! - (widest.at + widest.ms) > 0 ? 'after' : 'before'} the stream resumed ` +
              `(${(movedAt! - widest.at).toFixed(0)} ms into the silence)`,
            `migration: total ${r.totalSeconds.toFixed(1)} s, QEMU total-time ${r.qemu.totalTimeMs} ms, ` +
              `WAN ${(r.wan.aToB / 2 ** 20).toFixed(1)} MiB A->B`,
          ].join('\n'),
        );

        // Never closed, reset or errored: only our own stop ended it, and it connected once.
        expect(report.connected).toBe(true);
        expect(report.outcome).toBe('stopped');
        expect(report.error).toBeUndefined();
        expect(events.filter((e) => e.event === 'connected')).toHaveLength(1);
        expect(events.some((e) => e.event === 'end' || e.event === 'error')).toBe(false);
        // The counter goes on from where the source left it: never back, never reset, and it moved.
        expect(lines.every((line) => Number.isInteger(line.counter))).toBe(true);
        for (let i = 1; i < lines.length; i++) expect(lines[i].counter).toBeGreaterThanOrEqual(lines[i - 1].counter);
        expect(after.length).toBeGreaterThanOrEqual(LINES_AFTER_MOVE);
        expect(after.at(-1)!.counter).toBeGreaterThan(lines[0].counter);
        expect(widest.ms).toBeLessThan(MAX_GAP_BOUND_MS);
        expect(r.qemu.downtimeMs).toBeGreaterThan(0);

        // Site B served it: the source QEMU is gone, the router sends the VM's address to B.
        expect(r.sourceStopped).toBe(true);
        expect(alive(src.pid)).toBe(false);
        expect(await nb!.routedTo(vm)).toBe('siteB');
        expect(r.destination.servicePort).toBe(0);
        expect(alive(r.destination.pid)).toBe(true);
        // ... and a new connection from the client reaches the guest there (its counter service: one line, then end).
        const fresh = await startProbeClient(nb!, {
          address: vm,
          port: GUEST_SERVICE_PORT,
          durationMs: 10_000,
        }).finished();
        expect(fresh).toMatchObject({ connected: true, lines: 1, outcome: 'peer-closed' });
      },
      TEST_TIMEOUT_MS,
    );
  },
);
