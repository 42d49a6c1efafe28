import 'reflect-metadata';
import { IsBoolean, IsIn, IsInt, IsOptional, IsString, IsUUID, Matches, Max, Min } from 'class-validator';

/** Stream ids within a migration (disk is 1). */
export const MemoryStreamId = 2;
export const DeviceStateStreamId = 3;

export const MemoryVerb = {
  /** delta-apply: create (or reopen) the destination RAM file and receive pages and device state. */
  Prepare: 'mem.prepare',
  Status: 'mem.status',
  /** delta-apply: check the device state, start the destination VM on the received RAM, run it. */
  Resume: 'vm.resume',
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
  nextSeq: number;
  bytesApplied: number;
  /** Bytes of device state received and durable (0 until stop-and-copy sends it). */
  deviceStateBytes: number;
  running: boolean;
  serviceAddress?: string;
}

export class ResumeVmRequest {
  @IsUUID()
  migrationId!: string;

  @Matches(/^[A-Za-z0-9_-]{1,64}$/)
  vmId!: string;

  @IsIn(['sim'])
  driver: 'sim' = 'sim';

  /** sha256 (hex) of the device state the source sent; a mismatch refuses the resume. */
  @Matches(/^[0-9a-f]{64}$/)
  deviceStateSha256!: string;

  @IsInt()
  @Min(1)
  deviceStateBytes!: number;

  /** The VM's disk at the destination (NBD URI), when it has one. */
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
  serviceAddress: string;
  /** Epoch milliseconds when the guest ran again. */
  resumedAt: number;
}

export class ReleaseMemoryRequest {
  @IsUUID()
  migrationId!: string;

  @IsOptional()
  @IsBoolean()
  deleteRam?: boolean;
}
