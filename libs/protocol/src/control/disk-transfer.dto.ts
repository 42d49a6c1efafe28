import 'reflect-metadata';
import { IsBoolean, IsIn, IsInt, IsOptional, IsString, IsUUID, Matches, Max, Min, ValidateIf } from 'class-validator';
import { DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from './disk.dto.js';

export const DiskTransferVerb = {
  /** Serve an image over NBD, tracking writes (serve or mirror-target role). */
  Export: 'disk.export',
  Unexport: 'disk.unexport',
  /** Start moving a disk to another site; replies at once, progress follows as events. */
  Migrate: 'disk.migrate',
  Progress: 'disk.progress',
  Abort: 'disk.abort',
  /**
   * A migration started with `hold`: freeze writes, send the last dirty blocks, wait until the destination holds them
   * durably (and verify when asked); replies with the report. Sent while the VM is paused.
   */
  Finalize: 'disk.finalize',
  /** Change a running migration's bandwidth budget (it must have started with one). */
  SetBandwidth: 'disk.bandwidth',
} as const;
export type DiskTransferVerb = (typeof DiskTransferVerb)[keyof typeof DiskTransferVerb];

export class ExportDiskRequest {
  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  name!: string;

  @IsString()
  imagePath!: string;

  @IsOptional()
  @IsIn(['serve', 'mirror-target'])
  role?: 'serve' | 'mirror-target';

  /** Create a sparse image of this size if the file does not exist. */
  @IsOptional()
  @IsInt()
  @Min(1)
  createSize?: number;

  @IsInt()
  @Min(MIN_BLOCK_SIZE)
  @Max(MAX_BLOCK_SIZE)
  blockSize: number = DEFAULT_BLOCK_SIZE;

  /** TCP port on 127.0.0.1 (0: any free one) ... */
  @ValidateIf((o: ExportDiskRequest) => o.socket === undefined)
  @IsInt()
  @Min(0)
  @Max(65535)
  port?: number;

  /** ... or a unix socket path. */
  @IsOptional()
  @IsString()
  socket?: string;
}

export interface ExportDiskReply {
  name: string;
  uri: string;
  sizeBytes: number;
}

export class ExportRef {
  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  name!: string;
}

export class MigrateDiskRequest {
  @IsUUID()
  migrationId!: string;

  /** An export of this service (its writes are tracked), ... */
  @ValidateIf((o: MigrateDiskRequest) => o.imagePath === undefined)
  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  exportName?: string;

  /** ... or an image nobody writes during the copy. */
  @IsOptional()
  @IsString()
  imagePath?: string;

  @Matches(/^[a-z0-9][a-z0-9-]{0,62}$/)
  toSite!: string;

  @IsOptional()
  @IsString()
  destPath?: string;

  /** The migration's bandwidth budget (bits per second); 0 or absent: the link's own. */
  @IsOptional()
  @IsInt()
  @Min(0)
  bandwidthBps?: number;

  @IsInt()
  @Min(1)
  @Max(600_000)
  downtimeMs: number = 300;

  @IsInt()
  @Min(0)
  @Max(1000)
  maxRounds: number = 30;

  @IsBoolean()
  codec: boolean = true;

  @IsBoolean()
  verify: boolean = true;

  @IsInt()
  @Min(MIN_BLOCK_SIZE)
  @Max(MAX_BLOCK_SIZE)
  blockSize: number = DEFAULT_BLOCK_SIZE;

  /** Leave writes frozen at the end (a VM switches over next, or a test compares images). */
  @IsBoolean()
  keepFrozen: boolean = false;

  /**
   * Once catch-up has converged, keep the destination in step (phase `holding`) instead of draining: the final drain
   * waits for `disk.finalize`, sent while the VM is paused for its memory's stop-and-copy. Implies keepFrozen.
   */
  @IsBoolean()
  hold: boolean = false;

  /**
   * How long the destination (delta-apply) may stay silent before the migration fails: a restarted receiver resumes
   * from its watermark within this. Absent: the stream's default (DEFAULT_GIVE_UP_MS of libs/stream).
   */
  @IsOptional()
  @IsInt()
  @Min(1000)
  @Max(3_600_000)
  giveUpAfterMs?: number;
}

export class SetDiskBandwidthRequest {
  @IsUUID()
  migrationId!: string;

  /** The new budget in bits per second. */
  @IsInt()
  @Min(1)
  bandwidthBps!: number;
}
