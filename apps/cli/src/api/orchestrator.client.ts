import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  ErrorCode,
  ServiceName,
  SiteVerb,
  VmVerb,
  MigrationVerb,
  WanmigError,
  type ListSitesReply,
  type MigrationView,
  type VmView,
} from '@wanmig/protocol';
import { UsageError } from '../errors.js';
import { readStackFile } from './stack.file.js';

export interface ClientOptions {
  /** NATS server of any site (the sites share one subject space). */
  nats?: string;
}

/** The CLI's side of the orchestrator NATS API. */
export class OrchestratorClient {
  private constructor(readonly nc: NatsConnection) {}

  /** Connects to `--nats`, WANMIG_NATS_URL, or the stack `wanmig up` started, in that order. */
  static async connect(options: ClientOptions = {}): Promise<OrchestratorClient> {
    const url = options.nats ?? process.env.WANMIG_NATS_URL ?? (await readStackFile())?.sites['site-a']?.natsUrl;
    if (!url) throw new UsageError('no wanmig stack found: start one with `wanmig up`, or pass --nats URL');
    try {
      return new OrchestratorClient(await connect({ servers: url, timeout: 5000 }));
    } catch (cause) {
      throw new WanmigError(ErrorCode.Unavailable, `cannot reach NATS at ${url}`, { cause });
    }
  }

  call<T>(site: string, verb: string, body: object = {}, timeoutMs = 30_000): Promise<T> {
    return callControl<T>(this.nc, controlSubject(site, ServiceName.Orchestrator, verb), body, timeoutMs);
  }

  /** Every site the first answering orchestrator knows, reachable or not. */
  async sites(hint = 'site-a'): Promise<ListSitesReply['sites']> {
    try {
      return (await this.call<ListSitesReply>(hint, SiteVerb.List)).sites;
    } catch (err) {
      if (err instanceof WanmigError && err.code === ErrorCode.Unavailable) {
        throw new WanmigError(ErrorCode.Unavailable, `the orchestrator of ${hint} does not answer (is the stack up?)`);
      }
      throw err;
    }
  }

  async reachableSites(): Promise<string[]> {
    return (await this.sites()).filter((s) => s.reachable).map((s) => s.site);
  }

  /** The site that runs `vmId`. */
  async findVm(vmId: string): Promise<VmView> {
    for (const site of await this.reachableSites()) {
      try {
        return await this.call<VmView>(site, VmVerb.Get, { vmId });
      } catch (err) {
        if (!(err instanceof WanmigError && err.code === ErrorCode.NotFound)) throw err;
      }
    }
    throw new WanmigError(ErrorCode.NotFound, `no VM ${vmId} at any site`);
  }

  /** A migration and the site driving it (its source). */
  async findMigration(migrationId: string): Promise<{ site: string; migration: MigrationView }> {
    for (const site of await this.reachableSites()) {
      try {
        return { site, migration: await this.call<MigrationView>(site, MigrationVerb.Get, { migrationId }) };
      } catch (err) {
        if (!(err instanceof WanmigError && err.code === ErrorCode.NotFound)) throw err;
      }
    }
    throw new WanmigError(ErrorCode.NotFound, `no migration ${migrationId} at any site`);
  }

  async close(): Promise<void> {
    await this.nc.close().catch(() => undefined);
  }
}
