import { stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { NoSpaceError } from './errors.js';

/** The part of `fs.statfs` the room check reads. */
export interface FsSpace {
  /** Free blocks an unprivileged process may use. */
  bavail: number;
  bsize: number;
}

export type StatFs = (path: string) => Promise<FsSpace>;

export const defaultStatFs: StatFs = (path) => statfs(path);

export interface RoomRequest {
  migrationId?: string;
  /** The image to create (it may exist already, e.g. left by a prepare that crashed). */
  path: string;
  sizeBytes: number;
  /**
   * Room already promised on the same file system: the part of other unfinished sparse images not
   * yet allocated. Those images will fill up, and two migrations must not both count on one gap.
   */
  reservedBytes?: number;
}

/**
 * Checks that the file system holding `path` can take an image of `sizeBytes` before anything is
 * created: free bytes ≥ sizeBytes − what the file already occupies + room reserved by others. A
 * sparse image occupies almost nothing at first, which is exactly why the check must come first:
 * without it a full disk is discovered half way through a transfer, as failed writes.
 */
export async function ensureRoom(request: RoomRequest, statFs: StatFs = defaultStatFs): Promise<void> {
  const occupied = await allocatedBytes(request.path);
  const space = await statFs(await nearestExisting(dirname(request.path)));
  const availableBytes = Number(space.bavail) * Number(space.bsize);
  const neededBytes = Math.max(0, request.sizeBytes - occupied) + (request.reservedBytes ?? 0);
  if (availableBytes < neededBytes) {
    throw new NoSpaceError({ migrationId: request.migrationId, path: request.path, neededBytes, availableBytes });
  }
}

/** Bytes a file really occupies on disk (0 when it does not exist): a sparse file's holes cost nothing. */
export async function allocatedBytes(path: string): Promise<number> {
  try {
    return (await stat(path)).blocks * 512;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

/** Bytes an image of `sizeBytes` may still claim as it fills. */
export async function unallocatedBytes(path: string, sizeBytes: number): Promise<number> {
  return Math.max(0, sizeBytes - (await allocatedBytes(path)));
}

/** The device of the file system that holds (or would hold) `path`. */
export async function deviceOf(path: string): Promise<number> {
  return (await stat(await nearestExisting(path))).dev;
}

/** `path` itself or its closest ancestor that exists (statfs needs a real path). */
export async function nearestExisting(path: string): Promise<string> {
  for (let at = path; ; at = dirname(at)) {
    try {
      await stat(at);
      return at;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(at) === at) throw err;
    }
  }
}
