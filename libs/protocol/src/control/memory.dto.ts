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
import type { WireError } from '../errors.js';

/** Stream ids within a migration (disk is 1). */
export const MemoryStreamId = 2;
export const DeviceStateStreamId = 3;
/** QEMU's own migration byte stream (the `qemu` driver), relayed as frames of kind Memory. */
export const QemuMigrationStreamId = 4;
/**
 * The destination QEMU's return path (post-copy page requests, acknowledgements), relayed back to the source QEMU
 * as raw frames of kind Memory.
 */
export const QemuReturnPathStreamId = 5;
/** Largest device state a destination holds (it is kept in memory until the VM resumes). */
export const MAX_DEVICE_STATE_BYTES = 64 * 1024 * 1024;

export const MemoryVerb = {
  /** delta-apply: create (or reopen) the destination RAM file and receive pages and device state. */
  Prepare: 'mem.prepare',
  Status: 'mem.status',
  /** delta-apply: check the device state, start the destination VM on the received RAM, run it. */
  Resume: 'vm.resume',
  /**
   * delta-apply: everything a resume checks (final data durable, device state, RAM digest, answers from the received
   * RAM), the receiving VM made ready, but not run; takes a ResumeVmRequest. A resume after it only runs the VM.
   */
  Check: 'mem.check',
  /** delta-apply: stop receiving, stop an incoming VM that never ran, remove the RAM file. */
  Release: 'mem.release',
} as const;
export type MemoryVerb = (typeof MemoryVerb)[keyof typeof MemoryVerb];

export class PrepareMemoryRequest {
  @IsUUID()
  migrationId!: string;

  @IsInt()
  @Min(4096)
  @Max(2 ** 40)
  ramBytes!: number;

  @IsInt()
  @IsIn([4096])
  pageSize: number = 4096;

  /**
   * Start the receiving VM now (QEMU's -incoming): it waits, holding its service port, and the
   * resume at the end only loads the state, instead of starting a process inside the downtime.
   */
  @IsOptional()
  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  vmId?: string;

  @IsOptional()
  @IsString()
  diskUri?: string;

  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(65535)
  servicePort?: number;

  /** The resume will check the RAM's sha256: hash it as soon as the memory stream finishes, off the pause's path. */
  @IsOptional()
  @IsBoolean()
  verifyRam?: boolean;
}

export interface PrepareMemoryReply {
  ramPath: string;
  resumed: boolean;
  nextSeq: number;
}

export interface MemoryStatusReply {
  migrationId: string;
  ramPath: string;
  ramBytes: number;
  pageSize: number;
  /** Memory stream watermark: frames below it are durable in the RAM file. */
  nextSeq: number;
  cursor: number;
  /** Since this process opened the migration. */
  bytesApplied: number;
  /** The memory stream's End frame is durable. */
  finished: boolean;
  /** Frames of either stream refused (bad checksum, page outside RAM, ...): counted, never applied. */
  rejectedFrames: number;
  /** Bytes of device state received and durable (0 until stop-and-copy sends it). */
  deviceStateBytes: number;
  deviceStateSha256?: string;
  /** The VM was resumed here from this RAM and has not been stopped by delta-apply. */
  running: boolean;
  vmId?: string;
  serviceAddress?: string;
  resumedAt?: number;
  /** Set when a receive failed for good (e.g. a frame that kept failing to apply). */
  failure?: WireError;
}

/** Regions of RAM_DIGEST_REGION_BYTES (4 MiB) a RAM may have: 256 GiB. */
const MAX_RAM_REGIONS = 65_536;

export class ResumeVmRequest {
  @IsUUID()
  migrationId!: string;

  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  vmId!: string;

  @IsIn(['sim'])
  driver = 'sim' as const;

  /** sha256 (hex) of the device state the source sent; a mismatch refuses the resume. */
  @Matches(/^[0-9a-f]{64}$/)
  deviceStateSha256!: string;

  @IsInt()
  @Min(1)
  @Max(MAX_DEVICE_STATE_BYTES)
  deviceStateBytes!: number;

  /**
   * Digest of the source's RAM at pause: sha256 (hex) over the hex sha256 of each 4 MiB region, joined by newlines
   * (`ramDigest` in @wanmig/stream). When given, the destination digests its RAM file the same way before starting
   * the VM and refuses to run it on any difference (the source then rolls back).
   */
  @IsOptional()
  @Matches(/^[0-9a-f]{64}$/)
  ramSha256?: string;

  /**
   * With `ramSha256`: the first 16 hex digits of each region's digest, in order, so that a difference names the
   * regions (and their byte offsets) rather than only the whole.
   */
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(MAX_RAM_REGIONS)
  @Matches(/^[0-9a-f]{16}$/, { each: true })
  ramRegions?: string[];

  /** Service queries to answer from the received RAM before the VM runs (compare with the source). */
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(64)
  @IsString({ each: true })
  queries?: string[];

  @IsOptional()
  @IsString()
  diskUri?: string;

  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(65535)
  servicePort?: number;
}

export interface ResumeVmReply {
  vmId: string;
  /** True when the RAM was hashed against `ramSha256` before the VM ran. */
  ramVerified?: boolean;
  /** How long that check took (it is part of the downtime). */
  ramCheckMs?: number;
  /** Answers to `queries`, from the received RAM, before the VM ran. */
  answers?: Record<string, string>;
  serviceAddress: string;
  /** Epoch milliseconds when the guest ran again. */
  resumedAt: number;
}

/** What `mem.check` found: the data is durable and matches; the VM is ready to run and has not run. */
export interface CheckResumeReply {
  migrationId: string;
  /** True when the RAM was hashed against `ramSha256`. */
  ramVerified?: boolean;
  ramCheckMs?: number;
  /**
   * Without `ramSha256` in the request, the RAM's digest computed here since the stream ended (prepared with
   * `verifyRam`), if it is done: the source compares it with its own. Not done yet: absent, nothing waited for it,
   * and the source has the resume check it instead.
   */
  ramSha256?: string;
  /** With that digest, the first 16 hex digits of each region's (as ResumeVmRequest's `ramRegions`). */
  ramRegions?: string[];
  /** Answers to `queries`, from the received RAM. */
  answers?: Record<string, string>;
}

export class ReleaseMemoryRequest {
  @IsUUID()
  migrationId!: string;

  @IsOptional()
  @IsBoolean()
  deleteRam?: boolean;
}

export interface ReleaseMemoryReply {
  migrationId: string;
  ramPath: string;
  /** True when the RAM file was deleted too (`deleteRam`). */
  ramDeleted: boolean;
  /** True when a VM this service started was stopped (never resumed, or `deleteRam` for a rollback). */
  vmStopped: boolean;
}
