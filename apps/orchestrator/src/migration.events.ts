/**
 * Migration events as CloudEvents 1.0 on a JetStream stream: published once (the event id is the `Nats-Msg-Id`, so
 * a retried publish is stored once), kept on disk, and replayable from the start by a subscriber that was away.
 */
import { randomUUID } from 'node:crypto';
import {
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import {
  CLOUDEVENTS_SPECVERSION,
  MIGRATION_EVENTS_STREAM,
  MigrationEventSubjects,
  migrationEventType,
  type CloudEvent,
  type MigrationEventKind,
} from '@wanmig/protocol';

/** Events are kept 30 days: long enough for a drill report or an audit, bounded so the store does not grow forever. */
export const DEFAULT_EVENTS_MAX_AGE_MS = 30 * 24 * 3600 * 1000;

export interface MigrationEventsOptions {
  /** The publishing site: part of the subject and of the CloudEvents `source`. */
  site: string;
  /** JetStream domain of that site. */
  domain?: string;
  stream?: string;
  maxAgeMs?: number;
  now?: () => Date;
}

export interface PublishedEvent<T> {
  event: CloudEvent<T>;
  /** Stream sequence of the stored event. */
  seq: number;
  /** True when the stream already had an event with this id (a retried publish): stored once. */
  duplicate: boolean;
}

export function orchestratorSource(site: string): string {
  return `wanmig/orchestrator/${site}`;
}

/** Builds the envelope (pure). `id` defaults to a fresh UUID; pass the same id to make a retry a duplicate. */
export function buildMigrationEvent<T>(
  site: string,
  kind: MigrationEventKind,
  migrationId: string,
  data: T,
  time: Date,
  id: string = randomUUID(),
): CloudEvent<T> {
  return {
    specversion: CLOUDEVENTS_SPECVERSION,
    id,
    source: orchestratorSource(site),
    type: migrationEventType(kind),
    subject: migrationId,
    time: time.toISOString(),
    datacontenttype: 'application/json',
    data,
  };
}

/**
 * Creates the site's event stream unless it exists (an existing stream is used as it is, so restarts and several
 * orchestrators of one site never fight over its configuration).
 */
export async function ensureMigrationEventStream(
  jsm: JetStreamManager,
  options: Pick<MigrationEventsOptions, 'site' | 'stream' | 'maxAgeMs'>,
): Promise<string> {
  const name = options.stream ?? MIGRATION_EVENTS_STREAM;
  try {
    await jsm.streams.info(name);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    // Two creators racing with the same config both succeed: the server treats an identical add as a no-op.
    await jsm.streams.add({
      name,
      subjects: [MigrationEventSubjects.site(options.site)],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      max_age: nanos(options.maxAgeMs ?? DEFAULT_EVENTS_MAX_AGE_MS),
    });
  }
  return name;
}

export class MigrationEventPublisher {
  private readonly now: () => Date;

  private constructor(
    private readonly js: JetStreamClient,
    private readonly site: string,
    now?: () => Date,
  ) {
    this.now = now ?? (() => new Date());
  }

  static async open(nc: NatsConnection, options: MigrationEventsOptions): Promise<MigrationEventPublisher> {
    const domain = options.domain === undefined ? {} : { domain: options.domain };
    await ensureMigrationEventStream(await jetstreamManager(nc, domain), options);
    return new MigrationEventPublisher(jetstream(nc, domain), options.site, options.now);
  }

  async publish<T>(
    kind: MigrationEventKind,
    migrationId: string,
    data: T,
    options: { id?: string } = {},
  ): Promise<PublishedEvent<T>> {
    const event = buildMigrationEvent(this.site, kind, migrationId, data, this.now(), options.id);
    const ack = await this.js.publish(
      MigrationEventSubjects.event(this.site, migrationId, kind),
      JSON.stringify(event),
      { msgID: event.id },
    );
    return { event, seq: ack.seq, duplicate: ack.duplicate };
  }
}

/**
 * Every event of one migration published by `site`, from the first, in order: what a subscriber that was away reads
 * to catch up. Uses an ordered (ephemeral) consumer; it stops at the last event stored when it started reading.
 */
export async function replayMigrationEvents(
  nc: NatsConnection,
  options: Pick<MigrationEventsOptions, 'site' | 'domain' | 'stream'> & { migrationId: string },
): Promise<CloudEvent[]> {
  const domain = options.domain === undefined ? {} : { domain: options.domain };
  const stream = options.stream ?? MIGRATION_EVENTS_STREAM;
  const filter = MigrationEventSubjects.migration(options.site, options.migrationId);
  // How many are stored now: an empty replay must not wait for a message that never comes.
  const jsm = await jetstreamManager(nc, domain);
  const info = await jsm.streams.info(stream, { subjects_filter: filter });
  const stored = Object.values(info.state.subjects ?? {}).reduce((sum, count) => sum + count, 0);
  if (stored === 0) return [];
  // A single filter subject as a string: nats-server 2.9 knows `filter_subject`, not `filter_subjects`.
  const consumer = await jetstream(nc, domain).consumers.get(stream, {
    filter_subjects: filter,
    deliver_policy: DeliverPolicy.All,
  });
  const events: CloudEvent[] = [];
  const messages = await consumer.consume();
  try {
    for await (const m of messages) {
      events.push(m.json<CloudEvent>());
      if (m.info.pending === 0) break;
    }
  } finally {
    messages.stop();
  }
  return events;
}
