import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './atomic-file.writer.js';
import { MigrationStateError } from './errors.js';

export const MANIFEST_VERSION = 1;

/** What a restarted service needs to reopen a migration's image and resume receiving. */
export interface DiskManifest {
  version: typeof MANIFEST_VERSION;
  migrationId: string;
  sizeBytes: number;
  blockSize: number;
  path: string;
  createdAt: string;
  /** The stream's End frame is durable: every block the source sent is in the image. */
  finished: boolean;
}

/** Reads and atomically replaces `manifest.json`. */
export class ManifestStore {
  constructor(readonly path: string) {}

  /** The manifest, or null when there is none; a malformed one is a MigrationStateError. */
  async load(): Promise<DiskManifest | null> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    let parsed: Partial<DiskManifest>;
    try {
      parsed = JSON.parse(text) as Partial<DiskManifest>;
    } catch (cause) {
      throw new MigrationStateError({ path: this.path, message: `manifest ${this.path} is not JSON`, cause });
    }
    const ok =
      parsed.version === MANIFEST_VERSION &&
      typeof parsed.migrationId === 'string' &&
      Number.isSafeInteger(parsed.sizeBytes) &&
      Number.isSafeInteger(parsed.blockSize) &&
      typeof parsed.path === 'string' &&
      typeof parsed.finished === 'boolean';
    if (!ok) throw new MigrationStateError({ path: this.path, message: `manifest ${this.path} is malformed` });
    return parsed as DiskManifest;
  }

  save(manifest: DiskManifest): Promise<void> {
    return writeFileAtomic(this.path, `${JSON.stringify(manifest, null, 2)}\n`);
  }
}
