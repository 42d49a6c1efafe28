import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { trackDir, untrackDir } from './child-process.registry.js';
import { ServiceProcess } from './service.process.js';
import { Site, startTwoSites, type TwoSites } from './two-site.topology.js';

export interface LocalBedOptions {
  delayMs: number;
  bandwidthBps: number;
  /** Also run memory-precopy at site A (and give each site its own sim runtime dir). */
  memory?: boolean;
  log?: (line: string) => void;
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
    readonly diskTransfer: ServiceProcess,
    readonly memoryPrecopy: ServiceProcess | undefined,
    private readonly log?: (line: string) => void,
  ) {}

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
      const diskTransfer = await ServiceProcess.start({
        service: 'disk-transfer',
        args: ['--nats', sites.a.url, '--site', Site.A],
        readyPattern: /disk-transfer ready/,
        log: options.log,
      });
      started.push(diskTransfer);
      let memoryPrecopy: ServiceProcess | undefined;
      if (options.memory) {
        memoryPrecopy = await ServiceProcess.start({
          service: 'memory-precopy',
          args: ['--nats', sites.a.url, '--site', Site.A, '--runtime-dir', join(dir, 'site-a', 'sim')],
          readyPattern: /memory-precopy ready/,
          log: options.log,
        });
        started.push(memoryPrecopy);
      }
      const nc = await connect({ servers: sites.a.url, maxReconnectAttempts: -1 });
      return new LocalBed(sites, nc, dir, deltaApply, diskTransfer, memoryPrecopy, options.log);
    } catch (err) {
      for (const proc of started) await proc.stop();
      await sites.stop();
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
      throw err;
    }
  }

  static startDeltaApply(sites: TwoSites, dir: string, log?: (line: string) => void): Promise<ServiceProcess> {
    return ServiceProcess.start({
      service: 'delta-apply',
      args: [
        '--nats',
        sites.b.url,
        '--site',
        Site.B,
        '--data-dir',
        join(dir, 'site-b', 'data'),
        '--sim-runtime-dir',
        join(dir, 'site-b', 'sim'),
      ],
      readyPattern: /delta-apply ready/,
      log,
    });
  }

  /** Kill -9 the destination service and start it again (tests of resume). */
  async crashAndRestartDeltaApply(pauseMs = 0): Promise<void> {
    await this.deltaApply.kill9();
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    this.deltaApply = await LocalBed.startDeltaApply(this.sites, this.dir, this.log);
  }

  async stop(): Promise<void> {
    await this.nc.close().catch(() => undefined);
    await this.memoryPrecopy?.stop();
    await this.diskTransfer.stop();
    await this.deltaApply.stop();
    await this.sites.stop();
    await rm(this.dir, { recursive: true, force: true });
    untrackDir(this.dir);
  }
}
