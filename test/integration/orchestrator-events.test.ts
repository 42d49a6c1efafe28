import { randomUUID } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MIGRATION_EVENTS_STREAM,
  MigrationEventKind,
  MigrationEventSubjects,
  MigrationPhase,
  type CloudEvent,
} from '@wanmig/protocol';
import { startNatsServer, type NatsServerHandle } from '@wanmig/testing';
import { MigrationEventPublisher, replayMigrationEvents } from '../../apps/orchestrator/src/migration.events.js';

const SITE = 'site-a';
const DOMAIN = 'site-a';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('migration events as CloudEvents on JetStream', () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let publisher: MigrationEventPublisher;

  beforeAll(async () => {
    server = await startNatsServer({ name: 'orchestrator-events', jetstream: { domain: DOMAIN } });
    nc = await connect({ servers: server.url });
    publisher = await MigrationEventPublisher.open(nc, { site: SITE, domain: DOMAIN });
  });

  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it('creates the stream idempotently', async () => {
    await MigrationEventPublisher.open(nc, { site: SITE, domain: DOMAIN });
    const jsm = await jetstreamManager(nc, { domain: DOMAIN });
    const info = await jsm.streams.info(MIGRATION_EVENTS_STREAM);
    expect(info.config.subjects).toEqual([MigrationEventSubjects.site(SITE)]);
  });

  it('publishes a CloudEvents 1.0 envelope with the event id as Nats-Msg-Id', async () => {
    const migrationId = randomUUID();
    const { event, seq, duplicate } = await publisher.publish(MigrationEventKind.PhaseChanged, migrationId, {
      phase: MigrationPhase.Preparing,
      epoch: 1,
    });
    expect(duplicate).toBe(false);
    expect(event).toMatchObject({
      specversion: '1.0',
      source: 'wanmig/orchestrator/site-a',
      type: 'io.wanmig.migration.phase-changed',
      subject: migrationId,
      datacontenttype: 'application/json',
      data: { phase: 'PREPARING', epoch: 1 },
    });
    expect(event.id).toMatch(UUID);
    expect(new Date(event.time).toISOString()).toBe(event.time);
    const jsm = await jetstreamManager(nc, { domain: DOMAIN });
    const stored = await jsm.streams.getMessage(MIGRATION_EVENTS_STREAM, { seq });
    expect(stored?.subject).toBe(MigrationEventSubjects.event(SITE, migrationId, MigrationEventKind.PhaseChanged));
    expect(stored?.header.get('Nats-Msg-Id')).toBe(event.id);
    expect(stored?.json<CloudEvent>()).toEqual(event);
  });

  it('stores a retried publish (same event id) once', async () => {
    const migrationId = randomUUID();
    const id = randomUUID();
    const first = await publisher.publish(MigrationEventKind.Progress, migrationId, { bytes: 1 }, { id });
    const retry = await publisher.publish(MigrationEventKind.Progress, migrationId, { bytes: 1 }, { id });
    expect(retry.duplicate).toBe(true);
    expect(retry.seq).toBe(first.seq);
    expect(await replayMigrationEvents(nc, { site: SITE, domain: DOMAIN, migrationId })).toHaveLength(1);
  });

  it('lets a subscriber that was away replay one migration from the start, in order, across a restart', async () => {
    const migrationId = randomUUID();
    const other = randomUUID();
    const kinds = [
      MigrationEventKind.PhaseChanged,
      MigrationEventKind.Progress,
      MigrationEventKind.DowntimeMeasured,
      MigrationEventKind.Completed,
    ];
    // Nobody listens while these are published.
    for (const [i, kind] of kinds.entries()) {
      await publisher.publish(kind, migrationId, { step: i });
      await publisher.publish(MigrationEventKind.Progress, other, { step: i });
    }
    expect(await replayMigrationEvents(nc, { site: SITE, domain: DOMAIN, migrationId: randomUUID() })).toEqual([]);

    await nc.close();
    await server.restart();
    nc = await connect({ servers: server.url });

    const events = await replayMigrationEvents(nc, { site: SITE, domain: DOMAIN, migrationId });
    expect(events.map((e) => e.type)).toEqual(kinds.map((k) => `io.wanmig.migration.${k}`));
    expect(events.map((e) => e.data)).toEqual(kinds.map((_, i) => ({ step: i })));
    expect(events.every((e) => e.subject === migrationId)).toBe(true);
    expect(await replayMigrationEvents(nc, { site: SITE, domain: DOMAIN, migrationId: other })).toHaveLength(4);
  });
});
