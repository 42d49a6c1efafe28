import { mkdir, rm, rmdir } from 'node:fs/promises';
import { ValidationError, type PrepareMemoryRequest } from '@wanmig/protocol';
import { syncDirectory } from './atomic-file.writer.js';
import { exists } from './disk.provisioner.js';
import { MigrationConflictError } from './errors.js';
import { ensureRoom, type StatFs } from './free-space.check.js';
import { MEMORY_MANIFEST_VERSION, MemoryManifestStore, type MemoryManifest } from './memory-manifest.store.js';
import { memoryPaths, memoryStateFiles, type MemoryPaths } from './migration.paths.js';
import { createSparseImage } from './sparse-image.factory.js';

/** RAM is whole pages: a size that is not is INVALID_REQUEST (the decoder would leave a torn last page). */
export function checkRamSize(request: Pick<PrepareMemoryRequest, 'ramBytes' | 'pageSize'>): void {
  if (request.ramBytes % request.pageSize !== 0) {
    throw new ValidationError(
      [`ramBytes: ${request.ramBytes} is not a whole number of ${request.pageSize}-byte pages`],
      'PrepareMemoryRequest',
    );
  }
}

export interface ProvisionedMemory {
  manifest: MemoryManifest;
  /** Removes everything the provisioning created (when the session then fails to open). */
  undo(): Promise<void>;
}

/**
 * The memory side's files under the data directory: the manifest (`memory.json`), the sparse RAM
 * file (`ram.img`) after the room check, and removing them again. They share the migration's
 * directory with the disk's files, under other names, so either side can be released alone.
 */
export class MemoryProvisioner {
  constructor(
    readonly dataDir: string,
    private readonly statFs: StatFs,
  ) {}

  paths(migrationId: string): MemoryPaths {
    return memoryPaths(this.dataDir, migrationId);
  }

  manifests(migrationId: string): MemoryManifestStore {
    return new MemoryManifestStore(this.paths(migrationId).manifest);
  }

  /**
   * Room check, then manifest, then the sparse RAM file; on failure nothing is left behind. A RAM
   * file already there with no manifest claiming it is refused: it is not ours to overwrite.
   */
  async provision(request: PrepareMemoryRequest, reservedBytes: number): Promise<ProvisionedMemory> {
    const { migrationId, ramBytes, pageSize } = request;
    const paths = this.paths(migrationId);
    if (await exists(paths.ram)) {
      throw new MigrationConflictError({
        migrationId,
        field: 'ramPath',
        message: `${paths.ram} already exists and belongs to no memory migration here: remove it first`,
      });
    }
    await ensureRoom({ migrationId, path: paths.ram, sizeBytes: ramBytes, reservedBytes }, this.statFs);
    const createdDir = !(await exists(paths.dir));
    let createdRam = false;
    const undo = (): Promise<void> => this.remove(paths, createdRam, createdDir);
    try {
      await mkdir(paths.dir, { recursive: true });
      const manifest: MemoryManifest = {
        version: MEMORY_MANIFEST_VERSION,
        migrationId,
        ramBytes,
        pageSize,
        ramPath: paths.ram,
        createdAt: new Date().toISOString(),
        finished: false,
      };
      // Manifest first: it claims the RAM file, so a crash before the file exists is recovered by
      // creating it on resume, and a RAM file without a manifest is never ours to overwrite.
      await this.manifests(migrationId).save(manifest);
      await createSparseImage(paths.ram, ramBytes);
      createdRam = true;
      return { manifest, undo };
    } catch (err) {
      await undo().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Creates the RAM file of a known migration whose prepare stopped between its manifest and its
   * file (nothing can have been received: there is no watermark). True when it did.
   */
  async recreateMissingRam(manifest: MemoryManifest, reservedBytes: number): Promise<boolean> {
    const paths = this.paths(manifest.migrationId);
    if (manifest.vm || (await exists(manifest.ramPath)) || (await exists(paths.memoryWatermark))) return false;
    await ensureRoom({ ...manifest, path: manifest.ramPath, sizeBytes: manifest.ramBytes, reservedBytes }, this.statFs);
    await createSparseImage(manifest.ramPath, manifest.ramBytes);
    return true;
  }

  /** Removes the memory side's state files, the RAM file when asked, and the directory once empty. */
  async remove(paths: MemoryPaths, deleteRam: boolean, removeDir = true): Promise<void> {
    const files = [...memoryStateFiles(paths), ...(deleteRam ? [paths.ram] : [])];
    await Promise.all(files.map((file) => rm(file, { force: true })));
    if (removeDir) {
      try {
        await rmdir(paths.dir);
      } catch (err) {
        // ENOTEMPTY: the RAM file is kept, or the disk side still has its files there.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOENT') throw err;
      }
    }
    await syncDirectory(this.dataDir);
  }
}
