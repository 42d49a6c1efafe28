/**
 * Persists migration records in a JetStream KV bucket, one key per migration id. Every transition is written here
 * before its side effects run, with optimistic concurrency on the KV revision, so two orchestrators (or a restarted
 * one replaying a step) can never both move the same migration.
 */
import { JetStreamApiCodes, JetStreamApiError, jetstream } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { isTerminalPhase, MigrationPhase } from '@wanmig/protocol';
import {
  ConcurrentUpdateError,
  MigrationExistsError,
  MigrationNotFoundError,
  MigrationRecordCorruptError,
} from './errors.js';
import {
  applyTransition,
  type MigrationRecord,
  type TransitionResult,
  type TransitionStep,
} from './migration.state-machine.js';

export const DEFAULT_MIGRATION_BUCKET = 'wanmig-migrations';
/** A lost revision race is re-read and re-applied this many times before giving up. */
const TRANSITION_ATTEMPTS = 3;

export interface MigrationStoreOptions {
  bucket?: string;
  /** JetStream domain of the site whose store this is (each site has its own). */
  domain?: string;
  now?: () => Date;
}

/** A record with the KV revision it was read at (the token for the next write). */
export interface StoredMigration {
  record: MigrationRecord;
  revision: number;
}

export interface StoredTransition extends TransitionResult {
  revision: number;
}

const PHASES = new Set<string>(Object.values(MigrationPhase));

export class MigrationStore {
  private readonly now: () => Date;

  private constructor(
    private readonly kv: KV,
    now?: () => Date,
  ) {
    this.now = now ?? (() => new Date());
  }

  /** Opens the bucket, creating it when missing (idempotent: an existing bucket is bound as it is). */
  static async open(nc: NatsConnection, options: MigrationStoreOptions = {}): Promise<MigrationStore> {
    const js = jetstream(nc, options.domain === undefined ? {} : { domain: options.domain });
    // history 1: the record carries its own phase history, so older revisions add nothing.
    const kv = await new Kvm(js).create(options.bucket ?? DEFAULT_MIGRATION_BUCKET, { history: 1 });
    return new MigrationStore(kv, options.now);
  }

  /** Stores a new record; an existing id is refused (MigrationExistsError, CONFLICT). */
  async create(record: MigrationRecord): Promise<StoredMigration> {
    try {
      const revision = await this.kv.create(record.id, JSON.stringify(record));
      return { record, revision };
    } catch (err) {
      if (isWrongLastSequence(err)) throw new MigrationExistsError(record.id, err);
      throw err;
    }
  }

  async get(id: string): Promise<StoredMigration | null> {
    const entry = await this.kv.get(id);
    if (entry === null || entry.operation !== 'PUT') return null;
    return { record: parseRecord(id, entry.string()), revision: entry.revision };
  }

  async require(id: string): Promise<StoredMigration> {
    const stored = await this.get(id);
    if (stored === null) throw new MigrationNotFoundError(id);
    return stored;
  }

  /**
   * Writes `record` over the revision it was read at. If anyone wrote in between, nothing is written and
   * ConcurrentUpdateError (CONFLICT) is thrown: re-read and decide again.
   */
  async save(record: MigrationRecord, revision: number): Promise<StoredMigration> {
    try {
      const next = await this.kv.update(record.id, JSON.stringify(record), revision);
      return { record, revision: next };
    } catch (err) {
      if (isWrongLastSequence(err)) throw new ConcurrentUpdateError(record.id, revision, err);
      throw err;
    }
  }

  /**
   * Applies one state-machine step and persists it before returning, so the caller runs the side effects of the new
   * phase only once it is durable. Idempotent: a step already applied returns `changed: false` and writes nothing.
   * A lost revision race is re-read and re-applied: if the winner applied the same step it is a no-op, otherwise the
   * state machine refuses it (StaleEpochError / InvalidTransitionError).
   */
  async transition(id: string, step: TransitionStep): Promise<StoredTransition> {
    for (let attempt = 1; ; attempt++) {
      const stored = await this.require(id);
      const result = applyTransition(stored.record, step, this.now());
      if (!result.changed) return { ...result, revision: stored.revision };
      try {
        const saved = await this.save(result.record, stored.revision);
        return { record: saved.record, changed: true, revision: saved.revision };
      } catch (err) {
        if (!(err instanceof ConcurrentUpdateError) || attempt >= TRANSITION_ATTEMPTS) throw err;
      }
    }
  }

  /** Every migration, oldest first. Reads each key: fine for the tens of migrations a site keeps. */
  async list(): Promise<MigrationRecord[]> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys()) keys.push(key);
    const records: MigrationRecord[] = [];
    for (const key of keys) {
      const stored = await this.get(key);
      if (stored) records.push(stored.record);
    }
    return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** Migrations not yet COMMITTED or ROLLED_BACK: what a restarted orchestrator resumes. */
  async listUnfinished(): Promise<MigrationRecord[]> {
    return (await this.list()).filter((record) => !isTerminalPhase(record.phase));
  }

  /** Removes a record (tests and cleanup of finished migrations). */
  async delete(id: string): Promise<void> {
    await this.kv.delete(id);
  }
}

function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

function parseRecord(id: string, text: string): MigrationRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new MigrationRecordCorruptError(id, cause);
  }
  const record = value as Partial<MigrationRecord> | null;
  if (
    record === null ||
    typeof record !== 'object' ||
    record.id !== id ||
    typeof record.phase !== 'string' ||
    !PHASES.has(record.phase) ||
    typeof record.epoch !== 'number' ||
    !Array.isArray(record.history)
  ) {
    throw new MigrationRecordCorruptError(id);
  }
  return record as MigrationRecord;
}
