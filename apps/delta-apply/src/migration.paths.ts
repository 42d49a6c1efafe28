import { join } from 'node:path';

/** Where one migration keeps its state under the data directory (the image may live elsewhere). */
export interface MigrationPaths {
  dir: string;
  manifest: string;
  watermark: string;
  /** The image's path when the prepare request names none. */
  defaultImage: string;
}

export const MANIFEST_FILE = 'manifest.json';

/** `migrationId` must already be validated (a UUID): it becomes a directory name. */
export function migrationPaths(dataDir: string, migrationId: string): MigrationPaths {
  const dir = join(dataDir, migrationId);
  return {
    dir,
    manifest: join(dir, MANIFEST_FILE),
    watermark: join(dir, 'watermark.json'),
    defaultImage: join(dir, 'disk.img'),
  };
}

/** The files of a migration's state besides the present map's (see isPresentMapFile), with their temporaries. */
export function stateFiles(paths: MigrationPaths): string[] {
  return [paths.manifest, paths.watermark].flatMap((file) => [file, `${file}.tmp`]);
}

/** Where one migration keeps its memory side: beside the disk's files, under names of its own. */
export interface MemoryPaths {
  dir: string;
  manifest: string;
  /** Watermarks of the memory stream and of the device-state stream. */
  memoryWatermark: string;
  deviceStateWatermark: string;
  ram: string;
  deviceState: string;
}

export const MEMORY_MANIFEST_FILE = 'memory.json';

export function memoryPaths(dataDir: string, migrationId: string): MemoryPaths {
  const dir = join(dataDir, migrationId);
  return {
    dir,
    manifest: join(dir, MEMORY_MANIFEST_FILE),
    memoryWatermark: join(dir, 'memory.watermark.json'),
    deviceStateWatermark: join(dir, 'device-state.watermark.json'),
    ram: join(dir, 'ram.img'),
    deviceState: join(dir, 'device-state.bin'),
  };
}

/** The memory side's state files (the RAM file aside), with their temporaries. */
export function memoryStateFiles(paths: MemoryPaths): string[] {
  return [paths.manifest, paths.memoryWatermark, paths.deviceStateWatermark, paths.deviceState].flatMap((file) => [
    file,
    `${file}.tmp`,
  ]);
}
