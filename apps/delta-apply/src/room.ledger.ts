import { dirname } from 'node:path';
import { Injectable } from '@nestjs/common';
import { deviceOf, unallocatedBytes } from './free-space.check.js';

/** A sparse file that will fill up: its room is promised even though it is not allocated yet. */
export interface RoomClaim {
  path: string;
  sizeBytes: number;
}

/**
 * Room promised on the data directory's file systems, across disk images and RAM files. Each
 * service registers a function listing its open, still-filling files; a room check adds up what
 * those files may still claim on the same file system, so a disk image and a RAM file never both
 * count on one gap.
 */
@Injectable()
export class RoomLedger {
  private readonly holders = new Set<() => Iterable<RoomClaim>>();

  register(holder: () => Iterable<RoomClaim>): void {
    this.holders.add(holder);
  }

  /** Bytes the registered files on the file system of `path` may still claim as they fill. */
  async reservedOn(path: string): Promise<number> {
    const device = await deviceOf(dirname(path));
    let reserved = 0;
    for (const holder of this.holders) {
      for (const claim of holder()) {
        if ((await deviceOf(claim.path)) !== device) continue;
        reserved += await unallocatedBytes(claim.path, claim.sizeBytes);
      }
    }
    return reserved;
  }
}
