import 'reflect-metadata';
import { IsBoolean, IsIn, IsInt, IsOptional, Matches, Max, Min } from 'class-validator';
import type { WireError } from '../errors.js';

/**
 * The phases of one whole migration (disk + memory + network), in order. The point of no return is the destination's
 * resume, inside STOP_AND_COPY: ROLLING_BACK/ROLLED_BACK are reachable from any phase before it; from it on (REDIRECT,
 * ACTIVATE) only forward recovery exists (see ARCHITECTURE.md).
 */
export const MigrationPhase = {
  Planned: 'PLANNED',
  Preparing: 'PREPARING',
  DiskBulk: 'DISK_BULK',
  DiskCatchup: 'DISK_CATCHUP',
  MemPrecopy: 'MEM_PRECOPY',
  StopAndCopy: 'STOP_AND_COPY',
  Redirect: 'REDIRECT',
  Activate: 'ACTIVATE',
  Committed: 'COMMITTED',
  RollingBack: 'ROLLING_BACK',
  RolledBack: 'ROLLED_BACK',
} as const;
export type MigrationPhase = (typeof MigrationPhase)[keyof typeof MigrationPhase];

/** The forward path, in order (rollback phases are not part of it). */
export const FORWARD_PHASES: readonly MigrationPhase[] = [
  MigrationPhase.Planned,
  MigrationPhase.Preparing,
  MigrationPhase.DiskBulk,
  MigrationPhase.DiskCatchup,
  MigrationPhase.MemPrecopy,
  MigrationPhase.StopAndCopy,
  MigrationPhase.Redirect,
  MigrationPhase.Activate,
  MigrationPhase.Committed,
];

export const TERMINAL_PHASES: readonly MigrationPhase[] = [MigrationPhase.Committed, MigrationPhase.RolledBack];

export function isTerminalPhase(phase: MigrationPhase): boolean {
  return TERMINAL_PHASES.includes(phase);
}

/** Memory convergence policy: `smart` is wanmig's, `kvm` the 30-rounds baseline (as in MigrateMemoryRequest). */
export const MigrationPolicy = { Smart: 'smart', Kvm: 'kvm' } as const;
export type MigrationPolicy = (typeof MigrationPolicy)[keyof typeof MigrationPolicy];

export const DEFAULT_MIGRATION_DOWNTIME_MS = 300;
/**
 * How long a service the migration needs (disk-transfer, memory-precopy, delta-apply) may stay away, killed and not
 * yet restarted, before the migration gives up and rolls back. A supervisor restarts a service within seconds.
 */
export const DEFAULT_SERVICE_DEADLINE_MS = 60_000;
export const MIN_SERVICE_DEADLINE_MS = 1000;
export const MAX_SERVICE_DEADLINE_MS = 3_600_000;

export const MigrationVerb = {
  Create: 'migration.create',
  Get: 'migration.get',
  List: 'migration.list',
  Abort: 'migration.abort',
  /** Every stored event of one migration (CloudEvents), oldest first. */
  Events: 'migration.events',
} as const;
export type MigrationVerb = (typeof MigrationVerb)[keyof typeof MigrationVerb];

/** Start moving a VM (disk, memory, network) from the site that runs it to `toSite`. Get/abort take a MigrationRef. */
export class CreateMigrationRequest {
  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  vmId!: string;

  @Matches(/^[a-z0-9][a-z0-9-]{0,62}$/)
  toSite!: string;

  /** Bandwidth budget in bits per second for disk and memory together; 0 or absent: the link's own. */
  @IsOptional()
  @IsInt()
  @Min(0)
  bandwidthBps?: number;

  @IsInt()
  @Min(1)
  @Max(600_000)
  downtimeMs: number = DEFAULT_MIGRATION_DOWNTIME_MS;

  @IsIn(Object.values(MigrationPolicy))
  policy: MigrationPolicy = MigrationPolicy.Smart;

  /** Check destination disk and RAM against the source at pause before the VM runs there (costs pause time). */
  @IsBoolean()
  verify: boolean = true;

  /** A service the migration needs may be away (killed, restarting) this long before the migration rolls back. */
  @IsInt()
  @Min(MIN_SERVICE_DEADLINE_MS)
  @Max(MAX_SERVICE_DEADLINE_MS)
  serviceDeadlineMs: number = DEFAULT_SERVICE_DEADLINE_MS;
}

export class ListMigrationsRequest {
  /** Only migrations that have not reached COMMITTED or ROLLED_BACK. */
  @IsOptional()
  @IsBoolean()
  unfinished?: boolean;

  @IsOptional()
  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  vmId?: string;
}

export interface MigrationOptionsView {
  bandwidthBps?: number;
  downtimeMs: number;
  policy: MigrationPolicy;
  verify: boolean;
  /** Absent in records written before it existed: DEFAULT_SERVICE_DEADLINE_MS. */
  serviceDeadlineMs?: number;
}

export interface MigrationHistoryEntry {
  phase: MigrationPhase;
  /** ISO-8601 time the phase was entered. */
  at: string;
  note?: string;
}

/** Figures gathered as the migration runs (all optional until measured). */
export interface MigrationFigures {
  diskBytes?: number;
  ramBytes?: number;
  /** Disk and memory bytes sent, before the codec. */
  diskRawBytes?: number;
  memoryRawBytes?: number;
  /** What they cost in frames on the data plane (with resends). */
  diskWireBytes?: number;
  memoryWireBytes?: number;
  /** The VM paused at the source until it ran at the destination (the source's view). */
  downtimeMs?: number;
  /** Of the pause: finalizing the disk, and the destination hashing its RAM. */
  diskFinalizeMs?: number;
  /** Of the pause: held before the destination's resume while the orchestrator moved the route. */
  holdMs?: number;
  /** Of the disk's finalize: comparing both images' digests. */
  diskVerifyMs?: number;
  ramCheckMs?: number;
  diskVerified?: boolean;
  ramVerified?: boolean;
  memoryRounds?: number;
  diskRounds?: number;
  stopReason?: string;
  /** The VM gave the same answers at the destination (before it ran) as at the source at pause. */
  answersMatch?: boolean;
  /** Where the VM's service answers now. */
  serviceAddress?: string;
  /** Epoch milliseconds the source paused, and the VM ran at the destination. */
  pausedAt?: number;
  resumedAt?: number;
  /** Epoch milliseconds the VM's /32s pointed at the destination (inside the pause, VMs with addresses). */
  routeMovedAt?: number;
  /** REDIRECT from start to end: the relay at the source, the `net.moved` event (its confirmations). */
  redirectMs?: number;
  totalSeconds?: number;
}

/** What the destination set up for the migration (so a restarted orchestrator, or a rollback, finds it). */
export interface MigrationDestinationView {
  /** The destination image (delta-apply's). */
  diskPath?: string;
  /** The destination RAM file the VM runs from, once delta-apply let it go (ACTIVATE), for the adopting site. */
  ramPath?: string;
  /** The destination image as the destination's disk-transfer serves it to the arriving VM. */
  diskUri?: string;
  /** The route move began (inside the pause, before the destination runs): a rollback puts the route back. */
  redirectStarted?: boolean;
  /** The destination runs the VM: the point of no return is behind, only forward recovery remains. */
  resumed?: boolean;
}

/** A migration as the API shows it: the persisted record itself. */
export interface MigrationView {
  id: string;
  vmId: string;
  fromSite: string;
  toSite: string;
  options: MigrationOptionsView;
  phase: MigrationPhase;
  /** Incremented on every transition; handlers key their idempotence on (id, epoch). */
  epoch: number;
  history: MigrationHistoryEntry[];
  createdAt: string;
  updatedAt: string;
  error?: WireError;
  figures?: MigrationFigures;
  destination?: MigrationDestinationView;
}

export type CreateMigrationReply = MigrationView;
export type GetMigrationReply = MigrationView;
export interface ListMigrationsReply {
  migrations: MigrationView[];
}
/** An abort answers with the record as left by the abort (ROLLING_BACK, or unchanged when already rolling back). */
export type AbortMigrationReply = MigrationView;
