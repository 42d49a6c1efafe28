import 'reflect-metadata';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  IsArray,
  IsBoolean,
  IsInt,
  IsOptional,
  IsString,
  IsUUID,
  Max,
  Min,
  Validate,
  ValidatorConstraint,
  type ValidatorConstraintInterface,
} from 'class-validator';
import type { WireError } from '../errors.js';

export const DEFAULT_BLOCK_SIZE = 64 * 1024;
export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024;
export const MAX_DIGEST_REGIONS = 65_536;

@ValidatorConstraint({ name: 'powerOfTwo' })
class PowerOfTwo implements ValidatorConstraintInterface {
  validate(value: unknown): boolean {
    return typeof value === 'number' && Number.isInteger(value) && value > 0 && (value & (value - 1)) === 0;
  }
  defaultMessage(): string {
    return '$property must be a power of two';
  }
}

/** Disk stream ids within a migration. */
export const DiskStreamId = 1;

export class PrepareDiskRequest {
  @IsUUID()
  migrationId!: string;

  @IsInt()
  @Min(1)
  @Max(2 ** 50)
  sizeBytes!: number;

  @IsInt()
  @Min(MIN_BLOCK_SIZE)
  @Max(MAX_BLOCK_SIZE)
  @Validate(PowerOfTwo)
  blockSize: number = DEFAULT_BLOCK_SIZE;

  /** Where to put the image; by default under the service's data directory. */
  @IsOptional()
  @IsString()
  path?: string;
}

export interface PrepareDiskReply {
  path: string;
  /** True when an earlier receive of this migration was found and continues. */
  resumed: boolean;
  nextSeq: number;
  cursor: number;
  /** Blocks already durable at the destination (from an earlier attempt). */
  presentBlocks: number;
}

export class MigrationRef {
  @IsUUID()
  migrationId!: string;
}

export interface DiskStatusReply {
  migrationId: string;
  path: string;
  sizeBytes: number;
  blockSize: number;
  nextSeq: number;
  cursor: number;
  presentBlocks: number;
  bytesApplied: number;
  finished: boolean;
  rejectedFrames: number;
  /** Set when the receive failed for good (e.g. a frame that kept failing to apply). */
  failure?: WireError;
}

/** `disk.present` answers a MigrationRef with the destination's present map (a serialised BlockMap, base64). */
export interface DiskPresentReply {
  migrationId: string;
  blockSize: number;
  /** Blocks durable at the destination, as counted in `map`. */
  presentBlocks: number;
  /** BlockMap.serialize() of the present map (geometry, CRC-32, roaring portable bits), base64. */
  map: string;
}

export class DiskDigestRequest {
  @IsUUID()
  migrationId!: string;

  /** Digest per region of this many bytes over [offset, offset + length). */
  @IsInt()
  @Min(MIN_BLOCK_SIZE)
  @Max(2 ** 40)
  regionBytes!: number;

  @IsOptional()
  @IsInt()
  @Min(0)
  offset?: number;

  @IsOptional()
  @IsInt()
  @Min(1)
  length?: number;
}

export interface DiskDigestReply {
  regionBytes: number;
  offset: number;
  /** Hex sha256 of each region, in order; the last region may be short. */
  digests: string[];
}

export class ReleaseDiskRequest {
  @IsUUID()
  migrationId!: string;

  /** Delete the image too (a rolled-back migration); by default it is kept. */
  @IsOptional()
  @IsBoolean()
  deleteImage?: boolean;
}

export interface ReleaseDiskReply {
  migrationId: string;
  path: string;
  /** True when the image was deleted too (`deleteImage`). */
  imageDeleted: boolean;
}

export class BlockListDto {
  @IsArray()
  @ArrayMaxSize(MAX_DIGEST_REGIONS)
  @IsInt({ each: true })
  @Type(() => Number)
  blocks!: number[];
}
