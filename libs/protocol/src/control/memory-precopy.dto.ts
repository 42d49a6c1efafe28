import 'reflect-metadata';
import {
  ArrayMaxSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsOptional,
  IsString,
  IsUUID,
  Matches,
  Max,
  Min,
} from 'class-validator';

export const MemoryPrecopyVerb = {
  /** Start moving a running VM's memory (and state) to another site; replies at once. */
  Migrate: 'mem.migrate',
  Progress: 'mem.progress',
  Abort: 'mem.abort',
  /** A migration started with `holdBeforeResume` and now `holding`: have the destination run the VM. */
  Proceed: 'mem.proceed',
} as const;
export type MemoryPrecopyVerb = (typeof MemoryPrecopyVerb)[keyof typeof MemoryPrecopyVerb];

/** How long a held switchover waits for `mem.proceed` before it rolls back (the guest is paused meanwhile). */
export const DEFAULT_HOLD_TIMEOUT_MS = 10_000;

export class MigrateMemoryRequest {
  @IsUUID()
  migrationId!: string;

  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  vmId!: string;

  @Matches(/^[a-z0-9][a-z0-9-]{0,62}$/)
  toSite!: string;

  /**
   * `sim`: pages read and sent by wanmig's engine. `qemu`: QEMU migrates itself into a relay of this service (found
   * by the VM id under the site's runtime dir); the destination QEMU is started by delta-apply on the migration's
   * image; the disk's mirror (started by the orchestrator) is cancelled in the pause, before the disk's final drain.
   */
  @IsIn(['sim', 'qemu'])
  driver: 'sim' | 'qemu' = 'sim';

  /** `smart`: wanmig's convergence policy; `kvm`: 30 rounds or two rounds of growth (baseline). */
  @IsIn(['smart', 'kvm'])
  policy: 'smart' | 'kvm' = 'smart';

  @IsBoolean()
  codec: boolean = true;

  @IsInt()
  @Min(1)
  @Max(600_000)
  downtimeMs: number = 300;

  /** Bandwidth budget in bits per second; 0 or absent: the link's own. */
  @IsOptional()
  @IsInt()
  @Min(0)
  bandwidthBps?: number;

  /** The VM's disk as the destination serves it. */
  @IsOptional()
  @IsString()
  diskUri?: string;

  /** Check the destination's RAM against the source's at pause before it runs (costs a full read). */
  @IsBoolean()
  verifyRam: boolean = false;

  /** Service queries the source answers at pause (e.g. `GET k3`), reported to compare after the move. */
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(64)
  @IsString({ each: true })
  queriesAtPause?: string[];

  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(65535)
  servicePort?: number;

  /**
   * A disk migration of this site's disk-transfer, started with `hold`: finalized (`disk.finalize`) while the VM is
   * paused, after the last pages and before the destination resumes.
   */
  @IsOptional()
  @IsUUID()
  diskMigrationId?: string;

  /**
   * Keep the source VM, paused, once the destination runs: whoever started the migration ends it (the orchestrator, at
   * ACTIVATE), and until then a rollback can still run it again. By default it is released as soon as the
   * destination runs.
   */
  @IsOptional()
  @IsBoolean()
  keepSource?: boolean;

  /**
   * How long the destination (delta-apply), or this site's disk-transfer, may stay away or not ready before the
   * migration fails; meanwhile the VM is never paused. Absent: the stream's default (DEFAULT_GIVE_UP_MS of libs/stream).
   */
  @IsOptional()
  @IsInt()
  @Min(1000)
  @Max(3_600_000)
  giveUpAfterMs?: number;

  /**
   * Once the last pages, the device state and the disk's final drain are durable and checked at the destination
   * (`mem.check`), enter `holding` and wait for `mem.proceed` before asking it to run the VM: the caller does there
   * what must happen before the point of no return (the route move). An abort, or no go within `holdTimeoutMs`,
   * rolls back.
   */
  @IsOptional()
  @IsBoolean()
  holdBeforeResume?: boolean;

  @IsInt()
  @Min(100)
  @Max(600_000)
  holdTimeoutMs: number = DEFAULT_HOLD_TIMEOUT_MS;
}
