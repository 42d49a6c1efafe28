import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './atomic-file.writer.js';
import { MigrationStateError } from './errors.js';

export const MEMORY_MANIFEST_VERSION = 1;

/** The VM resumed from this migration's RAM: recorded once it runs. */
export interface ResumedVm {
  vmId: string;
  driver: string;
  serviceAddress: string;
  /** Epoch milliseconds when the guest ran again. */
  resumedAt: number;
}

/** What a restarted service needs to reopen a migration's RAM file and resume receiving. */
export interface MemoryManifest {
  version: typeof MEMORY_MANIFEST_VERSION;
  migrationId: string;
  ramBytes: number;
  pageSize: number;
  ramPath: string;
  createdAt: string;
  /** The memory stream's End frame is durable. */
  finished: boolean;
  /** Set once a VM runs from the RAM: from then on the RAM is the VM's, and nothing is received into it. */
  vm?: ResumedVm;
  /**
   * The receiving VM started early (it waits, incoming, until the resume): a restarted delta-apply adopts it instead of
   * starting another under the same name.
   */
  incomingVmId?: string;
  /** A resume will check the RAM: it is hashed as soon as the stream ends, by a restarted service too. */
  verifyRam?: boolean;
}

/** Reads and atomically replaces `memory.json`. */
export class MemoryManifestStore {
  constructor(readonly path: string) {}

  /** The manifest, or null when there is none; a malformed one is a MigrationStateError. */
  async load(): Promise<MemoryManifest | null> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    let parsed: Partial<MemoryManifest>;
    try {
      parsed = JSON.parse(text) as Partial<MemoryManifest>;
    } catch (cause) {
      throw new MigrationStateError({ path: this.path, message: `manifest ${this.path} is not JSON`, cause });
    }
    if (!isMemoryManifest(parsed)) {
      throw new MigrationStateError({ path: this.path, message: `manifest ${this.path} is malformed` });
    }
    return parsed;
  }

  save(manifest: MemoryManifest): Promise<void> {
    return writeFileAtomic(this.path, `${JSON.stringify(manifest, null, 2)}\n`);
  }
}

function isMemoryManifest(m: Partial<MemoryManifest>): m is MemoryManifest {
  const vm = m.vm;
  const vmOk =
    vm === undefined ||
    (typeof vm.vmId === 'string' &&
      typeof vm.driver === 'string' &&
      typeof vm.serviceAddress === 'string' &&
      Number.isSafeInteger(vm.resumedAt));
  return (
    m.version === MEMORY_MANIFEST_VERSION &&
    typeof m.migrationId === 'string' &&
    Number.isSafeInteger(m.ramBytes) &&
    Number.isSafeInteger(m.pageSize) &&
    typeof m.ramPath === 'string' &&
    typeof m.finished === 'boolean' &&
    (m.incomingVmId === undefined || typeof m.incomingVmId === 'string') &&
    (m.verifyRam === undefined || typeof m.verifyRam === 'boolean') &&
    vmOk
  );
}
