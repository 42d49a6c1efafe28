/**
 * Migration events are CloudEvents 1.0 (JSON structured mode) on a JetStream stream, so a subscriber that was
 * away can replay them. Subject: `wanmig.v1.events.migration.<site>.<migrationId>.<kind>`. The publishing site is
 * a subject token so that each site's stream captures only its own orchestrator's events: with sites joined by
 * leafnodes, a stream on `…migration.>` at both sites would otherwise store every event twice.
 */
import { SUBJECT_ROOT } from '../subjects.js';
import { checkSite } from './control.subjects.js';
import type { WireError } from '../errors.js';
import type { DiskProgress, MemoryProgress } from './migration-report.types.js';

export const MIGRATION_EVENTS_STREAM = 'WANMIG_EVENTS';
export const CLOUDEVENTS_SPECVERSION = '1.0';
export const CLOUDEVENTS_TYPE_PREFIX = 'io.wanmig.migration.';

/** Event kinds; the CloudEvents `type` is `io.wanmig.migration.<kind>`. */
export const MigrationEventKind = {
  PhaseChanged: 'phase-changed',
  Progress: 'progress',
  DowntimeMeasured: 'downtime-measured',
  Completed: 'completed',
  Failed: 'failed',
  RolledBack: 'rolled-back',
  /** A step past the point of no return keeps failing: it is retried, never rolled back. */
  Stuck: 'stuck',
} as const;
export type MigrationEventKind = (typeof MigrationEventKind)[keyof typeof MigrationEventKind];

export type MigrationEventType = `${typeof CLOUDEVENTS_TYPE_PREFIX}${MigrationEventKind}`;

export function migrationEventType(kind: MigrationEventKind): MigrationEventType {
  return `${CLOUDEVENTS_TYPE_PREFIX}${kind}`;
}

/** A CloudEvents 1.0 envelope as wanmig sends it (all required and the optional attributes wanmig sets). */
export interface CloudEvent<T = unknown> {
  specversion: typeof CLOUDEVENTS_SPECVERSION;
  /** UUID; also the JetStream `Nats-Msg-Id`, so a republished event is stored once. */
  id: string;
  /** `wanmig/orchestrator/<site>`. */
  source: string;
  type: MigrationEventType;
  /** The migration id. */
  subject: string;
  /** RFC 3339. */
  time: string;
  datacontenttype: 'application/json';
  data: T;
}

const MIGRATION_ID = /^[A-Za-z0-9_-]+$/;

export const MigrationEventSubjects = {
  /** Everything the stream of one site holds. */
  site: (site: string) => `${SUBJECT_ROOT}.events.migration.${checkSite(site)}.>`,
  /** All events of one migration published by one site. */
  migration: (site: string, migrationId: string) =>
    `${SUBJECT_ROOT}.events.migration.${checkSite(site)}.${checkMigrationId(migrationId)}.>`,
  event: (site: string, migrationId: string, kind: MigrationEventKind) =>
    `${SUBJECT_ROOT}.events.migration.${checkSite(site)}.${checkMigrationId(migrationId)}.${kind}`,
  /** Every site's migration events (for a subscriber on the core subject space). */
  all: () => `${SUBJECT_ROOT}.events.migration.>`,
} as const;

function checkMigrationId(id: string): string {
  if (!MIGRATION_ID.test(id)) throw new TypeError(`migration id must be a NATS-safe token, got ${JSON.stringify(id)}`);
  return id;
}

/** `data` of each event kind. */
export interface PhaseChangedData {
  migrationId: string;
  vmId: string;
  from: string;
  to: string;
  epoch: number;
  note?: string;
}

/** `progress`: what the disk and memory engines last reported (each present once its phase began). */
export interface ProgressData {
  migrationId: string;
  vmId: string;
  phase: string;
  disk?: DiskProgress;
  memory?: MemoryProgress;
}

/** `stuck`: one failed attempt of a step that is only ever retried (the destination runs the VM). */
export interface StuckData {
  migrationId: string;
  vmId: string;
  phase: string;
  /** Failed attempts in a row, this one included. */
  attempt: number;
  error: WireError;
  /** Milliseconds until the next attempt. */
  nextRetryMs: number;
}
