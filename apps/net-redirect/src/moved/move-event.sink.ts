import {
  jetstream,
  jetstreamManager,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import { MIGRATION_EVENTS_STREAM, MigrationEventSubjects, type NetMovedEvent } from '@wanmig/protocol';

/**
 * How long the stream keeps events when net-redirect is the first to create it: the orchestrator's value (30 days),
 * so whichever creates `WANMIG_EVENTS` first creates the same stream.
 */
export const EVENTS_MAX_AGE_MS = 30 * 24 * 3600 * 1000;

/** Stores the move's CloudEvent. The seam unit specs replace. */
export interface MoveEventSink {
  /** Stored once per event id (a retried publish is a duplicate); rejects when it cannot be stored. */
  publish(subject: string, event: NetMovedEvent): Promise<{ seq: number; duplicate: boolean }>;
}

/**
 * The site's JetStream stream `WANMIG_EVENTS`, beside the orchestrator's migration events. If the stream does not exist
 * yet it is created with the orchestrator's settings (an identical create is a no-op for the server); an existing one
 * is used as it is.
 */
export class JetStreamMoveSink implements MoveEventSink {
  private client?: Promise<JetStreamClient>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: { site: string; domain?: string },
  ) {}

  async publish(subject: string, event: NetMovedEvent): Promise<{ seq: number; duplicate: boolean }> {
    this.client ??= this.open();
    let js: JetStreamClient;
    try {
      js = await this.client;
    } catch (err) {
      this.client = undefined; // The next move tries again.
      throw err;
    }
    const ack = await js.publish(subject, JSON.stringify(event), { msgID: event.id });
    return { seq: ack.seq, duplicate: ack.duplicate };
  }

  private async open(): Promise<JetStreamClient> {
    const domain = this.options.domain === undefined ? {} : { domain: this.options.domain };
    const jsm = await jetstreamManager(this.nc, domain);
    try {
      await jsm.streams.info(MIGRATION_EVENTS_STREAM);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
      await jsm.streams.add({
        name: MIGRATION_EVENTS_STREAM,
        subjects: [MigrationEventSubjects.site(this.options.site)],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        max_age: nanos(EVENTS_MAX_AGE_MS),
      });
    }
    return jetstream(this.nc, domain);
  }
}
