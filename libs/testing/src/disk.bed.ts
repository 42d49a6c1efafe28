import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { trackDir, untrackDir } from './child-process.registry.js';
import { ServiceProcess } from './service.process.js';
import { Site, startTwoSites, type TwoSites } from './two-site.topology.js';

/**
 * The local two-site bed for storage: site A runs disk-transfer, site B runs delta-apply, each as
 * its own process, the sites joined by the WAN emulator.
 */
export class DiskBed {
  private constructor(
    readonly sites: TwoSites,
    readonly nc: NatsConnection,
    readonly dir: string,
    public deltaApply: ServiceProcess,
    readonly diskTransfer: ServiceProcess,
  ) {}

  static async start(options: {
    delayMs: number;
    bandwidthBps: number;
    log?: (line: string) => void;
  }): Promise<DiskBed> {
    const dir = await mkdtemp(join(tmpdir(), 'wanmig-disk-'));
    trackDir(dir);
    const sites = await startTwoSites({ delayMs: options.delayMs, bandwidthBps: options.bandwidthBps });
    const started: ServiceProcess[] = [];
    try {
      const deltaApply = await DiskBed.startDeltaApply(sites, dir, options.log);
      started.push(deltaApply);
      const diskTransfer = await ServiceProcess.start({
        service: 'disk-transfer',
        args: ['--nats', sites.a.url, '--site', Site.A],
        readyPattern: /disk-transfer ready/,
        log: options.log,
      });
      started.push(diskTransfer);
      const nc = await connect({ servers: sites.a.url, maxReconnectAttempts: -1 });
      return new DiskBed(sites, nc, dir, deltaApply, diskTransfer);
    } catch (err) {
      for (const proc of started) await proc.stop();
      await sites.stop();
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  static startDeltaApply(sites: TwoSites, dir: string, log?: (line: string) => void): Promise<ServiceProcess> {
    return ServiceProcess.start({
      service: 'delta-apply',
      args: ['--nats', sites.b.url, '--site', Site.B, '--data-dir', join(dir, 'site-b')],
      readyPattern: /delta-apply ready/,
      log,
    });
  }

  /** Kill -9 the destination service and start it again (tests of resume). */
  async crashAndRestartDeltaApply(pauseMs = 0, log?: (line: string) => void): Promise<void> {
    await this.deltaApply.kill9();
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    this.deltaApply = await DiskBed.startDeltaApply(this.sites, this.dir, log);
  }

  async stop(): Promise<void> {
    await this.nc.close().catch(() => undefined);
    await this.diskTransfer.stop();
    await this.deltaApply.stop();
    await this.sites.stop();
    await rm(this.dir, { recursive: true, force: true });
    untrackDir(this.dir);
  }
}
