import { randomUUID } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATION_EVENTS_STREAM, MigrationEventKind } from '@wanmig/protocol';
import { Site, startTwoSites, type TwoSites } from '@wanmig/testing';
import { MigrationEventPublisher, replayMigrationEvents } from '../../apps/orchestrator/src/migration.events.js';

describe('migration events across two sites', () => {
  let sites: TwoSites;
  let ncA: NatsConnection;
  let ncB: NatsConnection;

  beforeAll(async () => {
    sites = await startTwoSites({ delayMs: 5 });
    ncA = await connect({ servers: sites.a.url });
    ncB = await connect({ servers: sites.b.url });
  });

  afterAll(async () => {
    await ncA?.close();
    await ncB?.close();
    await sites?.stop();
  });

  it("each site's stream keeps only its own orchestrator's events; the other site replays them over the WAN", async () => {
    const publisherA = await MigrationEventPublisher.open(ncA, { site: Site.A, domain: Site.A });
    await MigrationEventPublisher.open(ncB, { site: Site.B, domain: Site.B });
    const migrationId = randomUUID();
    await publisherA.publish(MigrationEventKind.PhaseChanged, migrationId, { phase: 'PREPARING' });
    await publisherA.publish(MigrationEventKind.Completed, migrationId, {});

    const infoA = await (await jetstreamManager(ncA, { domain: Site.A })).streams.info(MIGRATION_EVENTS_STREAM);
    const infoB = await (await jetstreamManager(ncB, { domain: Site.B })).streams.info(MIGRATION_EVENTS_STREAM);
    expect(infoA.state.messages).toBe(2);
    expect(infoB.state.messages).toBe(0);

    // A client at site B reads site A's events through site A's JetStream domain.
    const events = await replayMigrationEvents(ncB, { site: Site.A, domain: Site.A, migrationId });
    expect(events.map((e) => e.type)).toEqual(['io.wanmig.migration.phase-changed', 'io.wanmig.migration.completed']);
  });
});
