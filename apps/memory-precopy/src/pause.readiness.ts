import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  DiskPhase,
  DiskTransferVerb,
  DiskVerb,
  ErrorCode,
  MemoryVerb,
  ServiceName,
  WanmigError,
  type DiskProgress,
  type DiskStatusReply,
  type MemoryStatusReply,
} from '@wanmig/protocol';
import { PauseHeldOffError } from './errors.js';

/** Each readiness question must come back quickly: a service that takes longer is as good as away. */
const READY_TIMEOUT_MS = 3000;
/**
 * A disk that holds in step but has more dirty than the budget drains (a backlog after a restart, a guest writing hard)
 * is waited for this long at most: its throttle brings it back in step; past that the pause starts anyway, as it would
 * have before, with a longer final drain.
 */
export const DISK_SETTLE_MAX_MS = 10_000;

/** Why the pause waits: `soft` reasons are waited for at most DISK_SETTLE_MAX_MS. */
interface NotReady {
  reason: string;
  soft?: boolean;
}

export interface PauseReadinessOptions {
  nc: NatsConnection;
  migrationId: string;
  /** This site (its disk-transfer holds the disk in step). */
  site: string;
  destSite: string;
  /** The disk migration finalized during the pause, if any. */
  diskMigrationId?: string;
  /** How long the pause may be held off before the migration gives up. */
  giveUpAfterMs: number;
  now?: () => number;
}

/**
 * Never pause the source while a service the switchover needs is not ready: a delta-apply that was killed and is not
 * back (the resume would wait on it, or fail, with the guest paused), a disk-transfer restarted and still re-sending
 * what its crash left unsure (the final drain would send it all inside the pause). `check` answers what is missing,
 * or undefined when the pause may start; a reason that lasts past `giveUpAfterMs` is a PauseHeldOffError.
 */
export class PauseReadiness {
  private notReadySince?: number;
  private outOfStepSince?: number;
  private readonly now: () => number;

  constructor(private readonly o: PauseReadinessOptions) {
    this.now = o.now ?? Date.now;
  }

  async check(): Promise<string | undefined> {
    const found = await Promise.all([
      this.destinationMemory(),
      this.o.diskMigrationId ? this.destinationDisk(this.o.diskMigrationId) : undefined,
      this.o.diskMigrationId ? this.localDisk(this.o.diskMigrationId) : undefined,
    ]);
    const now = this.now();
    const reasons = found.filter((r): r is NotReady => r !== undefined);
    const soft = reasons.filter((r) => r.soft);
    if (soft.length === 0) this.outOfStepSince = undefined;
    else this.outOfStepSince ??= now;
    const waiting = reasons.filter((r) => !r.soft || now - this.outOfStepSince! <= DISK_SETTLE_MAX_MS);
    if (waiting.length === 0) {
      this.notReadySince = undefined;
      return undefined;
    }
    const reason = [...new Set(waiting.map((r) => r.reason))].join('; ');
    this.notReadySince ??= now;
    if (now - this.notReadySince > this.o.giveUpAfterMs)
      throw new PauseHeldOffError(this.o.migrationId, reason, now - this.notReadySince);
    return reason;
  }

  private async destinationMemory(): Promise<NotReady | undefined> {
    const status = await this.ask<MemoryStatusReply>(
      `${ServiceName.DeltaApply} at ${this.o.destSite}`,
      controlSubject(this.o.destSite, ServiceName.DeltaApply, MemoryVerb.Status),
    );
    if (typeof status === 'string') return { reason: status };
    if (status.failure) return { reason: `${ServiceName.DeltaApply} at ${this.o.destSite}: ${status.failure.message}` };
    return undefined;
  }

  private async destinationDisk(migrationId: string): Promise<NotReady | undefined> {
    const status = await this.ask<DiskStatusReply>(
      `${ServiceName.DeltaApply} at ${this.o.destSite}`,
      controlSubject(this.o.destSite, ServiceName.DeltaApply, DiskVerb.Status),
      migrationId,
    );
    if (typeof status === 'string') return { reason: status };
    if (status.failure) return { reason: `${ServiceName.DeltaApply} at ${this.o.destSite}: ${status.failure.message}` };
    return undefined;
  }

  private async localDisk(migrationId: string): Promise<NotReady | undefined> {
    const who = `${ServiceName.DiskTransfer} at ${this.o.site}`;
    const progress = await this.ask<DiskProgress>(
      who,
      controlSubject(this.o.site, ServiceName.DiskTransfer, DiskTransferVerb.Progress),
      migrationId,
    );
    if (typeof progress === 'string') return { reason: progress };
    // Holding: the disk is in step and the final drain stays within the budget. Anything before: it is still
    // sending what a restart left unsure, which the final drain would otherwise send inside the pause.
    if (progress.phase !== DiskPhase.Holding)
      return { reason: `${who} is in ${progress.phase}, not holding the disk in step` };
    if (progress.inStep === false)
      return { reason: `${who} has ${progress.dirtyBytes} dirty bytes, more than the pause can drain`, soft: true };
    return undefined;
  }

  /** The reply, or why there is none (as a reason to wait): away, or restarted without the migration. */
  private async ask<T>(who: string, subject: string, migrationId = this.o.migrationId): Promise<T | string> {
    try {
      return await callControl<T>(this.o.nc, subject, { migrationId }, READY_TIMEOUT_MS);
    } catch (err) {
      if (err instanceof WanmigError && err.code === ErrorCode.Unavailable) return `${who} does not answer`;
      if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return `${who} does not know ${migrationId}`;
      throw err;
    }
  }
}
