import { randomUUID } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, MigrationPhase } from '@wanmig/protocol';
import { startNatsServer, type NatsServerHandle } from '@wanmig/testing';
import {
  ConcurrentUpdateError,
  MigrationExistsError,
  MigrationNotFoundError,
  StaleEpochError,
} from '../../apps/orchestrator/src/errors.js';
import { advanceStep, abortStep, newMigrationRecord } from '../../apps/orchestrator/src/migration.state-machine.js';
import { MigrationStore } from '../../apps/orchestrator/src/migration.store.js';

const DOMAIN = 'site-a';

function newRecord(vmId = 'vm-1') {
  return newMigrationRecord(
    {
      id: randomUUID(),
      vmId,
      fromSite: 'site-a',
      toSite: 'site-b',
      options: { downtimeMs: 300, policy: 'smart', verify: true },
    },
    new Date(),
  );
}

describe('MigrationStore on JetStream KV', () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let store: MigrationStore;

  beforeAll(async () => {
    server = await startNatsServer({ name: 'orchestrator-store', jetstream: { domain: DOMAIN } });
    nc = await connect({ servers: server.url });
    store = await MigrationStore.open(nc, { domain: DOMAIN });
  });

  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it('creates, gets and refuses a second record with the same id', async () => {
    const record = newRecord();
    const created = await store.create(record);
    expect(created.revision).toBeGreaterThan(0);
    expect((await store.get(record.id))?.record).toEqual(record);
    await expect(store.create(record)).rejects.toBeInstanceOf(MigrationExistsError);
    expect(await store.get(randomUUID())).toBeNull();
    await expect(store.require(randomUUID())).rejects.toBeInstanceOf(MigrationNotFoundError);
  });

  it('persists each transition; the same (epoch → phase) twice writes once', async () => {
    const record = newRecord();
    await store.create(record);
    const step = advanceStep(record);
    const first = await store.transition(record.id, step);
    expect(first.changed).toBe(true);
    expect(first.record.phase).toBe(MigrationPhase.Preparing);
    expect(first.record.epoch).toBe(1);
    const again = await store.transition(record.id, step);
    expect(again.changed).toBe(false);
    expect(again.revision).toBe(first.revision);
    const stored = await store.require(record.id);
    expect(stored.revision).toBe(first.revision);
    expect(stored.record.history.map((h) => h.phase)).toEqual([MigrationPhase.Planned, MigrationPhase.Preparing]);
    // A step computed from an epoch the record has left is refused.
    await expect(store.transition(record.id, { epoch: 0, to: MigrationPhase.RollingBack })).rejects.toBeInstanceOf(
      StaleEpochError,
    );
  });

  it('refuses a write over a stale revision with a CONFLICT error and keeps the winner', async () => {
    const record = newRecord();
    const created = await store.create(record);
    const winner = await store.save({ ...record, figures: { diskRawBytes: 1 } }, created.revision);
    const loser = store.save({ ...record, figures: { diskRawBytes: 2 } }, created.revision);
    await expect(loser).rejects.toBeInstanceOf(ConcurrentUpdateError);
    await expect(loser).rejects.toMatchObject({ code: ErrorCode.Conflict, migrationId: record.id });
    const stored = await store.require(record.id);
    expect(stored.revision).toBe(winner.revision);
    expect(stored.record.figures).toEqual({ diskRawBytes: 1 });
  });

  it('two orchestrators racing the same step: one writes, the other sees it applied', async () => {
    const nc2 = await connect({ servers: server.url });
    try {
      const other = await MigrationStore.open(nc2, { domain: DOMAIN });
      const record = newRecord();
      await store.create(record);
      const step = advanceStep(record);
      const results = await Promise.all([store.transition(record.id, step), other.transition(record.id, step)]);
      expect(results.filter((r) => r.changed)).toHaveLength(1);
      const stored = await store.require(record.id);
      expect(stored.record.epoch).toBe(1);
      expect(stored.record.history).toHaveLength(2);
    } finally {
      await nc2.close();
    }
  });

  it('lists every migration and the unfinished ones, across a server restart', async () => {
    const done = newRecord('vm-done');
    await store.create(done);
    await store.transition(done.id, abortStep(done)!);
    await store.transition(done.id, { epoch: 1, to: MigrationPhase.RolledBack });
    const running = newRecord('vm-running');
    await store.create(running);
    await store.transition(running.id, advanceStep(running));

    await nc.close();
    await server.restart();
    nc = await connect({ servers: server.url });
    store = await MigrationStore.open(nc, { domain: DOMAIN }); // the bucket exists: opened as it is

    const all = await store.list();
    expect(all.map((r) => r.id)).toEqual(expect.arrayContaining([done.id, running.id]));
    const unfinished = await store.listUnfinished();
    expect(unfinished.map((r) => r.id)).toContain(running.id);
    expect(unfinished.map((r) => r.id)).not.toContain(done.id);
    expect(unfinished.every((r) => r.phase !== MigrationPhase.Committed && r.phase !== MigrationPhase.RolledBack)).toBe(
      true,
    );
    expect((await store.require(running.id)).record.phase).toBe(MigrationPhase.Preparing);
  });
});
