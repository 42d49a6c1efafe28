import { access, mkdir, readdir, rm, rmdir } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { geometryForSize } from '@wanmig/blockmap';
import { ValidationError, type PrepareDiskRequest } from '@wanmig/protocol';
import { syncDirectory } from './atomic-file.writer.js';
import { MigrationConflictError, MigrationStateError } from './errors.js';
import { ensureRoom, type StatFs } from './free-space.check.js';
import { MANIFEST_VERSION, ManifestStore, type DiskManifest } from './manifest.store.js';
import { migrationPaths, stateFiles, type MigrationPaths } from './migration.paths.js';
import { isPresentMapFile } from './present-map.store.js';
import { createSparseImage } from './sparse-image.factory.js';

export interface ProvisionedDisk {
  manifest: DiskManifest;
  /** Removes everything the provisioning created (when the session then fails to open). */
  undo(): Promise<void>;
}

/**
 * The files of migrations under the data directory: where they go, creating a new migration's
 * manifest and sparse image after the room check, and removing them again. Sessions (what runs)
 * are the service's business; this is only what lies on disk.
 */
export class DiskProvisioner {
  constructor(
    readonly dataDir: string,
    private readonly statFs: StatFs,
  ) {}

  paths(migrationId: string): MigrationPaths {
    return migrationPaths(this.dataDir, migrationId);
  }

  manifests(migrationId: string): ManifestStore {
    return new ManifestStore(this.paths(migrationId).manifest);
  }

  /**
   * Where a new migration's image goes: the request's `path` (absolute) or the default under the
   * data directory. An existing file there is refused: with no manifest claiming it, it is not
   * ours to overwrite (it may be a released migration's image, now a running VM's disk).
   */
  async imagePathFor(request: PrepareDiskRequest, ownerOf: (path: string) => string | undefined): Promise<string> {
    if (request.path !== undefined && !isAbsolute(request.path)) {
      throw new ValidationError([`path: must be absolute, got ${request.path}`], 'PrepareDiskRequest');
    }
    const path = request.path === undefined ? this.paths(request.migrationId).defaultImage : resolve(request.path);
    geometryForSize(request.sizeBytes, request.blockSize); // a size the present map cannot cover is INVALID_REQUEST
    if (await exists(path)) {
      const owner = ownerOf(path);
      throw new MigrationConflictError({
        migrationId: request.migrationId,
        field: 'path',
        message: owner
          ? `${path} is the image of migration ${owner}`
          : `${path} already exists and belongs to no migration here: remove it or choose another path`,
      });
    }
    return path;
  }

  /** Room check, then manifest, then the sparse image; on failure nothing is left behind. */
  async provision(request: PrepareDiskRequest, path: string, reservedBytes: number): Promise<ProvisionedDisk> {
    const { migrationId, sizeBytes, blockSize } = request;
    await ensureRoom({ migrationId, path, sizeBytes, reservedBytes }, this.statFs);
    const paths = this.paths(migrationId);
    const createdDir = !(await exists(paths.dir));
    let createdImage = false;
    const undo = (): Promise<void> => this.remove(paths, createdImage ? path : undefined, createdDir);
    try {
      await mkdir(paths.dir, { recursive: true });
      await mkdir(dirname(path), { recursive: true });
      const manifest: DiskManifest = {
        version: MANIFEST_VERSION,
        migrationId,
        sizeBytes,
        blockSize,
        path,
        createdAt: new Date().toISOString(),
        finished: false,
      };
      // Manifest first: it claims the path, so a crash before the image exists is recovered by
      // creating the image on resume, and an image without a manifest is never ours to overwrite.
      await this.manifests(migrationId).save(manifest);
      await createSparseImage(path, sizeBytes);
      createdImage = true;
      return { manifest, undo };
    } catch (err) {
      await undo().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Creates the image of a known migration whose prepare stopped between its manifest and its
   * image (nothing can have been received: there is no watermark). True when it did.
   */
  async recreateMissingImage(manifest: DiskManifest, reservedBytes: number): Promise<boolean> {
    if ((await exists(manifest.path)) || (await exists(this.paths(manifest.migrationId).watermark))) return false;
    await ensureRoom({ ...manifest, reservedBytes }, this.statFs);
    await mkdir(dirname(manifest.path), { recursive: true });
    await createSparseImage(manifest.path, manifest.sizeBytes);
    return true;
  }

  /**
   * The image of a migration known on disk only. A manifest that cannot be read still marks a
   * migration that exists: its image is taken to be at the default path, so an operator can always
   * clean up through release.
   */
  async imagePathOnDisk(migrationId: string): Promise<string | undefined> {
    try {
      return (await this.manifests(migrationId).load())?.path;
    } catch (err) {
      if (err instanceof MigrationStateError) return this.paths(migrationId).defaultImage;
      throw err;
    }
  }

  /** Removes a migration's state files, its image when given, and its directory once empty. */
  async remove(paths: MigrationPaths, image: string | undefined, removeDir = true): Promise<void> {
    const presentFiles = (await readdir(paths.dir).catch(() => [])).filter(isPresentMapFile);
    const files = [
      ...stateFiles(paths),
      ...presentFiles.map((name) => join(paths.dir, name)),
      ...(image ? [image] : []),
    ];
    await Promise.all(files.map((file) => rm(file, { force: true })));
    if (removeDir) {
      try {
        await rmdir(paths.dir);
      } catch (err) {
        // ENOTEMPTY: the image is kept there (or someone put files there); ENOENT: already gone.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOENT') throw err;
      }
    }
    await syncDirectory(this.dataDir);
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
