import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { onLastWords, trackDir, untrackDir } from './child-process.registry.js';
import { ServiceProcess } from './service.process.js';
import { Site, startTwoSites, type TwoSites } from './two-site.topology.js';

export interface LocalBedOptions {
  delayMs: number;
  bandwidthBps: number;
  /** Also run memory-precopy at site A (and give each site its own sim runtime dir). */
  memory?: boolean;
  /**
   * The whole stack at both sites: disk-transfer, memory-precopy, delta-apply and the orchestrator at each, so VMs
   * can be created at either site and moved either way through the orchestrators' API.
   */
  orchestrator?: boolean;
  /** With `orchestrator`: serve each orchestrator's HTTP API on a free port. */
  http?: boolean;
  /** With `orchestrator`: added to a site's orchestrator environment (e.g. `WANMIG_NET_MOVED_CONTROLLERS`). */
  orchestratorEnv?: Partial<Record<Site, Record<string, string>>>;
  /**
   * Also run net-redirect at both sites (`netRedirect(site)`); `env` adds to a site's environment, e.g. its route
   * agent's `WANMIG_ROUTE_NETNS` and `WANMIG_ROUTE_VIA`.
   */
  net?: boolean | { env?: Partial<Record<Site, Record<string, string>>> };
  log?: (line: string) => void;
}

/** A service of a site's stack, as `SiteStack` names it. */
export type StackService = 'diskTransfer' | 'memoryPrecopy' | 'deltaApply' | 'orchestrator';
const STACK_SERVICE_NAMES: Record<StackService, string> = {
  diskTransfer: 'disk-transfer',
  memoryPrecopy: 'memory-precopy',
  deltaApply: 'delta-apply',
  orchestrator: 'orchestrator',
};

/** The services of the stack, per site (`orchestrator` mode). */
export interface SiteStack {
  site: Site;
  url: string;
  diskTransfer: ServiceProcess;
  memoryPrecopy: ServiceProcess;
  deltaApply: ServiceProcess;
  orchestrator: ServiceProcess;
}

/**
 * The local two-site bed: site A runs disk-transfer (and memory-precopy), site B runs
 * delta-apply, each service its own process, the sites joined by the WAN emulator. Each site has
 * its own sim runtime dir, as two hosts would: the same VM id lives on both during a move.
 */
export class LocalBed {
  private constructor(
    readonly sites: TwoSites,
    readonly nc: NatsConnection,
    readonly dir: string,
    public deltaApply: ServiceProcess,
    public diskTransfer: ServiceProcess,
    public memoryPrecopy: ServiceProcess | undefined,
    private readonly log?: (line: string) => void,
    /** Services beyond the three above (orchestrator mode): site A's delta-apply, site B's sources, orchestrators. */
    private readonly extra: Map<string, ServiceProcess> = new Map(),
    private readonly options?: LocalBedOptions,
  ) {
    // Killed by a signal, the process never reaches stop(): its detached guests must not outlive it all the same.
    this.forgetLastWords = onLastWords(() => killGuestsSync(this.simDirs()));
  }

  private readonly forgetLastWords: () => void;

  private simDirs(): string[] {
    return [join(this.dir, Site.A, 'sim'), join(this.dir, Site.B, 'sim')];
  }

  /** Orchestrator mode: the services of one site. */
  stack(site: Site): SiteStack {
    const url = site === Site.A ? this.sites.a.url : this.sites.b.url;
    const get = (name: string) => {
      const proc = this.extra.get(`${name}@${site}`);
      if (!proc) throw new Error(`no ${name} at ${site}: start the bed with { orchestrator: true }`);
      return proc;
    };
    return {
      site,
      url,
      diskTransfer: site === Site.A ? this.diskTransfer : get('disk-transfer'),
      memoryPrecopy: site === Site.A && this.memoryPrecopy ? this.memoryPrecopy : get('memory-precopy'),
      deltaApply: site === Site.B ? this.deltaApply : get('delta-apply'),
      orchestrator: get('orchestrator'),
    };
  }

  /** The net-redirect of a site (bed started with `net`). */
  netRedirect(site: Site): ServiceProcess {
    const proc = this.extra.get(`net-redirect@${site}`);
    if (!proc) throw new Error(`no net-redirect at ${site}: start the bed with { net: true }`);
    return proc;
  }

  /** Kill -9 a site's orchestrator (as a crash would) and start it again; it resumes what it was driving. */
  async crashAndRestartOrchestrator(site: Site, pauseMs = 0): Promise<void> {
    await this.crashAndRestart(site, 'orchestrator', pauseMs);
  }

  /**
   * Kill -9 one service of a site (orchestrator mode), as a crash would, and start it again `pauseMs` later with the
   * same arguments and environment, as a supervisor would. Resolves once it is ready again.
   */
  async crashAndRestart(site: Site, service: StackService, pauseMs = 0): Promise<void> {
    await this.crash(site, service);
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    await this.restart(site, service);
  }

  /** Kill -9 one service of a site (orchestrator mode); `restart` starts it again. */
  async crash(site: Site, service: StackService): Promise<void> {
    await this.stack(site)[service].kill9();
  }

  /** Starts a service of a site again with the arguments and environment it had (after `crash`). */
  async restart(site: Site, service: StackService): Promise<void> {
    const proc = this.stack(site)[service];
    const again = await ServiceProcess.start(proc.options);
    if (proc === this.deltaApply) this.deltaApply = again;
    else if (proc === this.diskTransfer) this.diskTransfer = again;
    else if (proc === this.memoryPrecopy) this.memoryPrecopy = again;
    else this.extra.set(`${STACK_SERVICE_NAMES[service]}@${site}`, again);
  }

  static startOrchestrator(
    sites: TwoSites,
    dir: string,
    site: Site,
    options?: LocalBedOptions,
  ): Promise<ServiceProcess> {
    const other = site === Site.A ? Site.B : Site.A;
    return ServiceProcess.start({
      service: 'orchestrator',
      args: [
        '--nats',
        site === Site.A ? sites.a.url : sites.b.url,
        '--site',
        site,
        '--peers',
        other,
        '--data-dir',
        join(dir, site, 'vms'),
        '--sim-runtime-dir',
        join(dir, site, 'sim'),
        `--http-port=${options?.http ? 0 : -1}`,
      ],
      readyPattern: /orchestrator ready/,
      env: options?.orchestratorEnv?.[site],
      log: options?.log,
    });
  }

  /** The HTTP API base URL of a site's orchestrator (bed started with `http`), from its ready line. */
  httpUrl(site: Site): string | undefined {
    return /http=(\S+)/.exec(this.stack(site).orchestrator.logTail())?.[1];
  }

  /** Sim runtime dir of each site (guests' control sockets and default RAM files). */
  get runtimeDirA(): string {
    return join(this.dir, 'site-a', 'sim');
  }
  get runtimeDirB(): string {
    return join(this.dir, 'site-b', 'sim');
  }

  static async start(options: LocalBedOptions): Promise<LocalBed> {
    const dir = await mkdtemp(join(tmpdir(), 'wanmig-bed-'));
    trackDir(dir);
    await mkdir(join(dir, 'site-a', 'sim'), { recursive: true });
    await mkdir(join(dir, 'site-b', 'sim'), { recursive: true });
    const sites = await startTwoSites({ delayMs: options.delayMs, bandwidthBps: options.bandwidthBps });
    const started: ServiceProcess[] = [];
    try {
      const deltaApply = await LocalBed.startDeltaApply(sites, dir, options.log);
      started.push(deltaApply);
      const diskTransfer = await LocalBed.startDiskTransfer(sites, dir, Site.A, options.log);
      started.push(diskTransfer);
      let memoryPrecopy: ServiceProcess | undefined;
      if (options.memory || options.orchestrator) {
        memoryPrecopy = await ServiceProcess.start({
          service: 'memory-precopy',
          args: ['--nats', sites.a.url, '--site', Site.A, '--runtime-dir', join(dir, 'site-a', 'sim')],
          readyPattern: /memory-precopy ready/,
          log: options.log,
        });
        started.push(memoryPrecopy);
      }
      const extra = new Map<string, ServiceProcess>();
      if (options.orchestrator) {
        if (!memoryPrecopy) throw new Error('orchestrator mode needs memory-precopy');
        // Site A's receiving side and site B's sending side, so VMs can move back, then both orchestrators.
        const more: Array<[string, () => Promise<ServiceProcess>]> = [
          ['delta-apply@site-a', () => LocalBed.startDeltaApply(sites, dir, options.log, Site.A)],
          ['disk-transfer@site-b', () => LocalBed.startDiskTransfer(sites, dir, Site.B, options.log)],
          [
            'memory-precopy@site-b',
            () =>
              ServiceProcess.start({
                service: 'memory-precopy',
                args: ['--nats', sites.b.url, '--site', Site.B, '--runtime-dir', join(dir, Site.B, 'sim')],
                readyPattern: /memory-precopy ready/,
                log: options.log,
              }),
          ],
          ['orchestrator@site-a', () => LocalBed.startOrchestrator(sites, dir, Site.A, options)],
          ['orchestrator@site-b', () => LocalBed.startOrchestrator(sites, dir, Site.B, options)],
        ];
        for (const [name, start] of more) {
          const proc = await start();
          started.push(proc);
          extra.set(name, proc);
        }
      }
      if (options.net) {
        const env = typeof options.net === 'object' ? options.net.env : undefined;
        for (const site of [Site.A, Site.B]) {
          const proc = await ServiceProcess.start({
            service: 'net-redirect',
            args: ['--nats', site === Site.A ? sites.a.url : sites.b.url, '--site', site],
            env: env?.[site],
            readyPattern: /net-redirect ready/,
            log: options.log,
          });
          started.push(proc);
          extra.set(`net-redirect@${site}`, proc);
        }
      }
      const nc = await connect({ servers: sites.a.url, maxReconnectAttempts: -1 });
      return new LocalBed(sites, nc, dir, deltaApply, diskTransfer, memoryPrecopy, options.log, extra, options);
    } catch (err) {
      for (const proc of started) await proc.stop();
      await sites.stop();
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
      throw err;
    }
  }

  /** A site's disk-transfer, keeping its exports, migrations and activity logs under the bed's dir. */
  static startDiskTransfer(
    sites: TwoSites,
    dir: string,
    site: Site,
    log?: (line: string) => void,
  ): Promise<ServiceProcess> {
    return ServiceProcess.start({
      service: 'disk-transfer',
      args: [
        '--nats',
        site === Site.A ? sites.a.url : sites.b.url,
        '--site',
        site,
        '--data-dir',
        join(dir, site, 'disk-transfer'),
      ],
      readyPattern: /disk-transfer ready/,
      log,
    });
  }

  static startDeltaApply(
    sites: TwoSites,
    dir: string,
    log?: (line: string) => void,
    site: Site = Site.B,
  ): Promise<ServiceProcess> {
    return ServiceProcess.start({
      service: 'delta-apply',
      args: [
        '--nats',
        site === Site.B ? sites.b.url : sites.a.url,
        '--site',
        site,
        '--data-dir',
        join(dir, site, 'data'),
        '--sim-runtime-dir',
        join(dir, site, 'sim'),
      ],
      readyPattern: /delta-apply ready/,
      log,
    });
  }

  /** Kill -9 the destination service and start it again (tests of resume); `whileDown` runs while it is down. */
  async crashAndRestartDeltaApply(pauseMs = 0, whileDown?: () => Promise<void>): Promise<void> {
    await this.deltaApply.kill9();
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    await whileDown?.();
    this.deltaApply = await LocalBed.startDeltaApply(this.sites, this.dir, this.log);
  }

  async stop(): Promise<void> {
    await this.nc.close().catch(() => undefined);
    // Orchestrators first (nothing new starts), then the guests they launched detached, then the services.
    for (const [name, proc] of this.extra) if (name.startsWith('orchestrator')) await proc.stop();
    await stopGuests(this.simDirs());
    for (const [name, proc] of this.extra) if (!name.startsWith('orchestrator')) await proc.stop();
    await this.memoryPrecopy?.stop();
    await this.diskTransfer.stop();
    await this.deltaApply.stop();
    await this.sites.stop();
    await rm(this.dir, { recursive: true, force: true });
    untrackDir(this.dir);
    this.forgetLastWords();
  }
}

/**
 * The QEMUs a site runs under its runtime dir: VMs the orchestrator launched or adopted (`qemu-vms/<vmId>/qemu.pid`)
 * and destination QEMUs delta-apply started (`qemu/<migrationId>/destination.json`). Each is checked to be a QEMU
 * still (a pid may have been reused).
 */
function qemuPidsSync(dirs: string[]): number[] {
  const pids: number[] = [];
  const add = (pid: unknown) => {
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 1 || pids.includes(pid)) return;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('qemu-system')) pids.push(pid);
    } catch {
      // Gone.
    }
  };
  const list = (dir: string) => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  for (const dir of dirs) {
    for (const vm of list(join(dir, 'qemu-vms'))) {
      try {
        add(Number.parseInt(readFileSync(join(dir, 'qemu-vms', vm, 'qemu.pid'), 'utf8').trim(), 10));
      } catch {
        // No pid file: nothing runs.
      }
    }
    for (const run of list(join(dir, 'qemu'))) {
      try {
        add((JSON.parse(readFileSync(join(dir, 'qemu', run, 'destination.json'), 'utf8')) as { pid?: unknown }).pid);
      } catch {
        // No record: not a destination QEMU.
      }
    }
  }
  return pids;
}

/** Ends every guest whose runtime info sits in these dirs (guests started detached outlive their launcher). */
async function stopGuests(dirs: string[]): Promise<void> {
  const pids: number[] = qemuPidsSync(dirs);
  for (const dir of dirs) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      try {
        const info = JSON.parse(await readFile(join(dir, name), 'utf8')) as { pid?: unknown };
        if (typeof info.pid === 'number' && info.pid > 1 && (await isSimGuest(info.pid))) pids.push(info.pid);
      } catch {
        // A half-written or foreign file: not a guest of ours.
      }
    }
  }
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && pids.some(alive)) await new Promise((resolve) => setTimeout(resolve, 50));
  for (const pid of pids) if (alive(pid)) signal(pid, 'SIGKILL');
}

/** A stale info file may name a pid the system has reused: only a live sim guest process is ours to stop. */
async function isSimGuest(pid: number): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.includes('sim-guest');
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The same as stopGuests, synchronously and at once (SIGKILL): for the last moment of a process. */
function killGuestsSync(dirs: string[]): void {
  for (const pid of qemuPidsSync(dirs)) signal(pid, 'SIGKILL');
  for (const dir of dirs) {
    let names: string[] = [];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.json'));
    } catch {
      continue;
    }
    for (const name of names) {
      try {
        const info = JSON.parse(readFileSync(join(dir, name), 'utf8')) as { pid?: unknown };
        const pid = info.pid;
        if (typeof pid !== 'number' || pid <= 1) continue;
        if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('sim-guest')) continue;
        signal(pid, 'SIGKILL');
      } catch {
        // Gone, half-written or not ours.
      }
    }
  }
}
