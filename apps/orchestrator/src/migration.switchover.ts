/**
 * The switchover of one migration around its point of no return, the destination's resume. Before it, inside the
 * pause, while memory-precopy holds with everything checked at the destination: the VM's NIC there made sure of, the
 * route move recorded, the route moved, then the go (`mem.proceed`). After it (REDIRECT, forward only): the source's
 * NIC turns relay and `net.moved` goes out. And the question to ask before undoing anything from STOP_AND_COPY on:
 * does the destination run the VM?
 */
import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  ErrorCode,
  MemoryPrecopyVerb,
  MemoryVerb,
  MigrationPhase,
  QemuIncomingVerb,
  ServiceName,
  toWireError,
  VmVerb,
  WanmigError,
  type MemoryMigrationReport,
  type MemoryProgress,
  type MemoryStatusReply,
  type QemuIncomingStatusReply,
  type VmDriver,
  type VmNicStatus,
  type WireError,
} from '@wanmig/protocol';
import type { MigrationRecord } from './migration.state-machine.js';
import type { VmInventory } from './vm.inventory.js';

/** Requests that cross the WAN, or create files, get more time than local calls. */
const REMOTE_TIMEOUT_MS = 30_000;

/** Whether the destination has run the VM, as far as anyone can tell now. */
export const ResumeState = {
  Resumed: 'resumed',
  NotResumed: 'not-resumed',
  /** The go is given and the destination's answer awaited: no abort any more, that answer decides. */
  Resuming: 'resuming',
  /** Nobody who knows answers: nothing may be undone (the source stays paused), ask again later. */
  Unknown: 'unknown',
} as const;
export type ResumeState = (typeof ResumeState)[keyof typeof ResumeState];

/** Controllers that must confirm a move on the `net.moved` hook (0: the event only informs). */
export interface NetMovedPolicy {
  controllers: number;
  timeoutMs: number;
}

export interface SwitchoverDeps {
  nc: NatsConnection;
  site: string;
  inventory: VmInventory;
  netMoved: NetMovedPolicy;
  /** Read-modify-write of the record's non-transition fields. */
  update: (change: (record: MigrationRecord) => MigrationRecord) => Promise<MigrationRecord>;
  warn: (line: string) => void;
}

type MemoryState = MemoryProgress & { report?: MemoryMigrationReport; error?: WireError };
/** What the switchover asks of the destination: does the VM run, and where. */
export type DestinationRuns = Pick<MemoryStatusReply, 'running' | 'serviceAddress' | 'resumedAt'>;

/** Who knows whether the destination runs the VM; each call fails with a coded WanmigError (the seam specs use). */
export interface SwitchoverWitnesses {
  /** memory-precopy's `mem.abort`: stops the engine unless the destination is resuming or runs the VM. */
  stopMemory(): Promise<unknown>;
  memoryProgress(): Promise<MemoryState>;
  /** delta-apply's `mem.status` at the destination (for a QEMU VM, what its `mem.qemu.incoming.status` says). */
  destinationStatus(): Promise<DestinationRuns>;
}

/** The witnesses of one migration, over NATS. */
export function natsWitnesses(
  nc: NatsConnection,
  site: string,
  record: Pick<MigrationRecord, 'id' | 'toSite'>,
  driver: VmDriver = 'sim',
): SwitchoverWitnesses {
  const ref = { migrationId: record.id };
  const local = (verb: MemoryPrecopyVerb) => controlSubject(site, ServiceName.MemoryPrecopy, verb);
  const remote = (verb: string) => controlSubject(record.toSite, ServiceName.DeltaApply, verb);
  return {
    stopMemory: () => callControl(nc, local(MemoryPrecopyVerb.Abort), ref),
    memoryProgress: () => callControl<MemoryState>(nc, local(MemoryPrecopyVerb.Progress), ref),
    destinationStatus:
      driver === 'qemu'
        ? async () => {
            // A QEMU VM runs at the destination once delta-apply's `cont` went through.
            const s = await callControl<QemuIncomingStatusReply>(
              nc,
              remote(QemuIncomingVerb.Status),
              ref,
              REMOTE_TIMEOUT_MS,
            );
            return {
              running: s.resumed,
              ...(s.servicePort ? { serviceAddress: `127.0.0.1:${s.servicePort}` } : {}),
              ...(s.resumedAt !== undefined ? { resumedAt: s.resumedAt } : {}),
            };
          }
        : () => callControl<MemoryStatusReply>(nc, remote(MemoryVerb.Status), ref, REMOTE_TIMEOUT_MS),
  };
}

/**
 * From pre-copy on, before a rollback: stops memory-precopy if it still can stop, and says whether the destination
 * runs the VM. An abort memory-precopy accepts means it will never resume it (or has rolled back already). One it
 * refuses means it is resuming or did: its report decides. One it does not know (restarted) in STOP_AND_COPY leaves
 * the word to the destination's delta-apply (the go is only given there, so earlier nothing can run). Anyone who
 * should answer and does not: Unknown.
 */
export async function settleSwitchover(w: SwitchoverWitnesses, phase: MigrationPhase): Promise<ResumeState> {
  try {
    await w.stopMemory();
    return ResumeState.NotResumed;
  } catch (err) {
    if (!(err instanceof WanmigError)) return ResumeState.Unknown;
    if (err.code === ErrorCode.Conflict) {
      const state = await w.memoryProgress().catch(() => undefined);
      if (state?.report) return ResumeState.Resumed;
      if (state?.error) return ResumeState.NotResumed;
      return state ? ResumeState.Resuming : ResumeState.Unknown;
    }
    if (err.code === ErrorCode.NotFound)
      return phase === MigrationPhase.StopAndCopy ? destinationRuns(w) : ResumeState.NotResumed;
    return ResumeState.Unknown;
  }
}

/** delta-apply at the destination: does the VM run from this migration's RAM? */
export async function destinationRuns(w: Pick<SwitchoverWitnesses, 'destinationStatus'>): Promise<ResumeState> {
  try {
    return (await w.destinationStatus()).running ? ResumeState.Resumed : ResumeState.NotResumed;
  } catch (err) {
    if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return ResumeState.NotResumed;
    return ResumeState.Unknown;
  }
}

export class MigrationSwitchover {
  /** The destination's NIC as made ahead of the pause, and that making. */
  private destinationNic?: VmNicStatus;
  private nicEarly?: Promise<void>;
  /** When the route pointed at the destination (this runner's view; a figure only). */
  routeMovedAt?: number;

  constructor(
    private readonly d: SwitchoverDeps,
    readonly id: string,
  ) {}

  /**
   * A head start, from pre-copy on (the receiving guest runs at the destination): a NIC forwards through a process
   * that takes a moment to start, better spent now than in the pause. Nothing reaches it before the route moves. A
   * failure only warns: {@link beforeResume} tries again and decides.
   */
  prepareNicEarly(record: MigrationRecord): void {
    this.nicEarly ??= this.addresses(record).then(async (addresses) => {
      if (addresses.length === 0) return;
      this.destinationNic = await this.attachDestinationNic(record, addresses).catch((err: unknown) => {
        this.d.warn(`migration ${this.id}: NIC at ${record.toSite} not ready yet: ${toWireError(err).message}`);
        return undefined;
      });
    });
  }

  /**
   * The guest is paused and memory-precopy holds, everything checked at the destination: the last steps that may
   * still fail, and roll back with nothing lost, then the go. A VM with addresses gets its NIC at the destination
   * (so the route never points where nothing answers), the route move is recorded (a rollback then moves it back),
   * and its /32s point at the destination, the connections open at the source pinned there. Every call is
   * idempotent: a restarted runner repeats them.
   */
  async beforeResume(record: MigrationRecord): Promise<void> {
    const addresses = await this.addresses(record);
    if (addresses.length > 0) {
      this.prepareNicEarly(record);
      await this.nicEarly;
      this.destinationNic ??= await this.attachDestinationNic(record, addresses);
      if (!record.destination?.redirectStarted)
        await this.d.update((r) => ({ ...r, destination: { ...r.destination, redirectStarted: true } }));
      await this.d.inventory.network.moveRoute(this.d.site, this.id, addresses, record.toSite);
      this.routeMovedAt = Date.now();
    }
    await callControl(this.d.nc, controlSubject(this.d.site, ServiceName.MemoryPrecopy, MemoryPrecopyVerb.Proceed), {
      migrationId: this.id,
    });
  }

  /**
   * REDIRECT, after the resume and so forward only (a failure is retried, never rolled back): the source's NIC turns
   * relay to the destination's for the connections still arriving there (those open before the pause it carries
   * over), then `net.moved` for external infrastructure, confirmed by the controllers the site requires.
   */
  async redirect(record: MigrationRecord): Promise<string> {
    const addresses = await this.addresses(record);
    if (addresses.length === 0) return `service at ${record.figures?.serviceAddress ?? 'unknown'} (no addresses)`;
    const network = this.d.inventory.network;
    // Made before the resume by this runner (a restarted one asks again: attach is idempotent).
    const nic = this.destinationNic ?? (await this.attachDestinationNic(record, addresses));
    this.destinationNic = nic;
    await network.relay(this.d.site, record.vmId, nic);
    const move = { migrationId: this.id, vmId: record.vmId, addresses, fromSite: this.d.site, toSite: record.toSite };
    const { controllers, timeoutMs } = this.d.netMoved;
    const moved = await network.moved(this.d.site, move, controllers > 0 ? { controllers, timeoutMs } : undefined);
    const confirmed = controllers > 0 ? `, confirmed by ${moved.confirmations.filter((c) => c.applied).length}` : '';
    return `${addresses.join(', ')} at ${record.toSite}; ${this.d.site} relays what still arrives to ${nic.tunnelHost ?? record.toSite}; net.moved${confirmed}`;
  }

  /**
   * A rollback's network, after the source runs again. When the route move had begun: its /32s back here (a route
   * agent that is down makes this step fail and retry, the source running meanwhile) and its NIC here pointed at it
   * again. Always: the destination's NIC gone (nothing reached it while the route pointed here, so a failure there
   * only warns).
   */
  async rollBack(record: MigrationRecord, addresses: string[]): Promise<void> {
    const network = this.d.inventory.network;
    if (record.destination?.redirectStarted) {
      await network.moveRoute(this.d.site, this.id, addresses, this.d.site);
      await this.d.inventory.attachNetwork(record.vmId, addresses);
    }
    await network.detach(record.toSite, record.vmId).catch((err: unknown) => {
      this.d.warn(`migration ${this.id}: NIC of ${record.vmId} at ${record.toSite} left: ${toWireError(err).message}`);
    });
  }

  private async addresses(record: MigrationRecord): Promise<string[]> {
    return (await this.d.inventory.get(record.vmId))?.addresses ?? [];
  }

  private attachDestinationNic(record: MigrationRecord, addresses: string[]): Promise<VmNicStatus> {
    return callControl<VmNicStatus>(
      this.d.nc,
      controlSubject(record.toSite, ServiceName.Orchestrator, VmVerb.AttachNetwork),
      { vmId: record.vmId, migrationId: this.id, addresses },
      REMOTE_TIMEOUT_MS,
    );
  }
}
