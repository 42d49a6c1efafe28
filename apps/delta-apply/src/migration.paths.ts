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
