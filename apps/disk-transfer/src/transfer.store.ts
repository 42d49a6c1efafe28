import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskMigrationReport, DiskProgress, WireError } from '@wanmig/protocol';
import { writeFileAtomic } from '@wanmig/service';
import type { ExportRole } from './disk.export.js';

export const TRANSFER_STATE_VERSION = 1;

/** An export as it must be served again after a restart: same image, same address (its guest reconnects there). */
export interface ExportRecord {
  version: typeof TRANSFER_STATE_VERSION;
  name: string;
  imagePath: string;
  role: ExportRole;
  blockSize: number;
  listen: { host: string; port: number } | { path: string };
}

/** The migrate request as this service keeps it (the DTO's fields, defaults filled in). */
export interface StoredMigrateRequest {
  migrationId: string;
  exportName?: string;
  imagePath?: string;
  toSite: string;
  destPath?: string;
  bandwidthBps?: number;
  downtimeMs: number;
  maxRounds: number;
  codec: boolean;
  verify: boolean;
  blockSize: number;
  keepFrozen: boolean;
  hold: boolean;
  giveUpAfterMs?: number;
}

export const MigrationOutcome = { Running: 'running', Done: 'done', Failed: 'failed' } as const;
export type MigrationOutcome = (typeof MigrationOutcome)[keyof typeof MigrationOutcome];

/** A migration of this service: running ones resume after a restart, finished ones still answer for themselves. */
export interface MigrationRecord {
  version: typeof TRANSFER_STATE_VERSION;
  request: StoredMigrateRequest;
  outcome: MigrationOutcome;
  /** The last progress of a finished migration (what `disk.progress` keeps answering). */
  progress?: DiskProgress;
  report?: DiskMigrationReport;
  error?: WireError;
}

/**
 * disk-transfer's state on disk, under its data directory: `exports/<name>.json` (and `<name>.al`, the export's
 * activity log) and `migrations/<id>.json`, each replaced atomically. A process killed at any instant leaves what it
 * needs to serve every disk again at the same address and to resume every migration that was under way.
 */
export class TransferStore {
  private constructor(readonly dir: string) {}

  static async open(dir: string): Promise<TransferStore> {
    await mkdir(join(dir, 'exports'), { recursive: true });
    await mkdir(join(dir, 'migrations'), { recursive: true });
    return new TransferStore(dir);
  }

  activityLogPath(name: string): string {
    return join(this.dir, 'exports', `${name}.al`);
  }

  async exports(): Promise<{ records: ExportRecord[]; problems: string[] }> {
    return this.readAll<ExportRecord>('exports', (r) => typeof r.name === 'string' && typeof r.imagePath === 'string');
  }

  saveExport(record: Omit<ExportRecord, 'version'>): Promise<void> {
    return this.write('exports', record.name, { version: TRANSFER_STATE_VERSION, ...record });
  }

  /** The export's record and activity log go, and every finished migration of it. */
  async removeExport(name: string): Promise<void> {
    await rm(join(this.dir, 'exports', `${name}.json`), { force: true });
    await rm(this.activityLogPath(name), { force: true });
    const { records } = await this.migrations();
    for (const m of records) {
      if (m.request.exportName === name && m.outcome !== MigrationOutcome.Running) await this.removeMigration(m);
    }
  }

  async migrations(): Promise<{ records: MigrationRecord[]; problems: string[] }> {
    return this.readAll<MigrationRecord>(
      'migrations',
      (r) => typeof r.request?.migrationId === 'string' && Object.values(MigrationOutcome).includes(r.outcome),
    );
  }

  saveMigration(record: Omit<MigrationRecord, 'version'>): Promise<void> {
    return this.write('migrations', record.request.migrationId, { version: TRANSFER_STATE_VERSION, ...record });
  }

  async removeMigration(record: Pick<MigrationRecord, 'request'>): Promise<void> {
    await rm(join(this.dir, 'migrations', `${record.request.migrationId}.json`), { force: true });
  }

  private write(kind: string, name: string, record: object): Promise<void> {
    return writeFileAtomic(join(this.dir, kind, `${name}.json`), `${JSON.stringify(record, null, 2)}\n`);
  }

  private async readAll<T extends { version: number }>(
    kind: string,
    valid: (record: T) => boolean,
  ): Promise<{ records: T[]; problems: string[] }> {
    const records: T[] = [];
    const problems: string[] = [];
    for (const file of (await readdir(join(this.dir, kind))).filter((f) => f.endsWith('.json')).sort()) {
      const path = join(this.dir, kind, file);
      try {
        const record = JSON.parse(await readFile(path, 'utf8')) as T;
        if (record.version !== TRANSFER_STATE_VERSION || !valid(record)) problems.push(`${path}: not a valid record`);
        else records.push(record);
      } catch (err) {
        problems.push(`${path}: ${(err as Error).message}`);
      }
    }
    return { records, problems };
  }
}
