import { jetstreamManager } from '@nats-io/jetstream';
import { type NatsConnection, type Subscription, connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Site, type TwoSites, leafz, sleep, startTwoSites, waitForRemoteInterest } from '@wanmig/testing';

const DELAY_MS = 20;

/** Resolves with the next message's payload on `sub`. */
async function nextPayload(sub: Subscription): Promise<Uint8Array> {
  for await (const msg of sub) return msg.data;
  throw new Error(`subscription ${sub.getSubject()} closed`);
}

describe('two-site topology', () => {
  let sites: TwoSites;
  let ncA: NatsConnection;
  let ncB: NatsConnection;

  beforeAll(async () => {
    sites = await startTwoSites({ delayMs: DELAY_MS, bandwidthBps: 100_000_000 });
    ncA = await connect({ servers: sites.a.url });
    ncB = await connect({ servers: sites.b.url });
  });

  afterAll(async () => {
    await Promise.all([ncA?.close(), ncB?.close()]);
    await sites?.stop();
    await sites?.stop(); // idempotent
  });

  it('names the sites and gives each its own JetStream domain', async () => {
    expect(sites.a.name).toBe(Site.A);
    expect(sites.b.name).toBe(Site.B);
    // Site B's JetStream, reached from site A across the WAN by its domain.
    const remote = await jetstreamManager(ncA, { domain: Site.B });
    await remote.streams.add({ name: 'ACROSS', subjects: ['across.>'] });
    const local = await jetstreamManager(ncB);
    expect((await local.streams.info('ACROSS')).config.name).toBe('ACROSS');
  });

  it('carries a message published at A to a subscriber at B, and counts it on the WAN', async () => {
    const sub = ncB.subscribe('demo.a-to-b', { max: 1 });
    await ncB.flush();
    await waitForRemoteInterest(sites.a, 'demo.a-to-b');
    const before = sites.wan.stats();
    const payload = new Uint8Array(100_000).fill(7);
    ncA.publish('demo.a-to-b', payload);
    expect(await nextPayload(sub)).toEqual(payload);
    const after = sites.wan.stats();
    expect(after.aToB - before.aToB).toBeGreaterThanOrEqual(payload.length);
    expect(after.bToA - before.bToA).toBeLessThan(payload.length);
  });

  it('carries B to A as well', async () => {
    const sub = ncA.subscribe('demo.b-to-a', { max: 1 });
    await ncA.flush();
    await waitForRemoteInterest(sites.b, 'demo.b-to-a');
    const before = sites.wan.stats().bToA;
    ncB.publish('demo.b-to-a', new Uint8Array(50_000));
    expect((await nextPayload(sub)).length).toBe(50_000);
    expect(sites.wan.stats().bToA - before).toBeGreaterThanOrEqual(50_000);
  });

  it('heals by itself after cut(2000), still through the emulator', async () => {
    const accepted = sites.wan.stats().accepted;
    const start = Date.now();
    sites.wan.cut(2000);
    // While cut, site B keeps redialling (once a second) and only ever reaches the emulator: no way around it.
    await sleep(1500);
    expect((await leafz(sites.a)).leafnodes).toBe(0);
    expect(sites.wan.stats().refused).toBeGreaterThan(0);
    await sites.waitForLink(10_000);
    const healedAfter = Date.now() - start;
    // Not before the cut ends; how soon after is printed (waitForLink bounds it at 10 s: a hang, not a speed).
    console.log(`link healed ${healedAfter} ms after a 2000 ms cut`);
    expect(healedAfter).toBeGreaterThanOrEqual(2000);
    // The leaf redialled the emulator, not site A directly: exactly one leaf, and it is the emulator's connection.
    expect(sites.wan.stats()).toMatchObject({ connections: 1 });
    expect(sites.wan.stats().accepted).toBeGreaterThan(accepted);
    expect((await leafz(sites.a)).leafnodes).toBe(1);

    const sub = ncB.subscribe('demo.after-cut', { max: 1 });
    await ncB.flush();
    await waitForRemoteInterest(sites.a, 'demo.after-cut');
    const before = sites.wan.stats().aToB;
    ncA.publish('demo.after-cut', new TextEncoder().encode('back'));
    expect(new TextDecoder().decode(await nextPayload(sub))).toBe('back');
    expect(sites.wan.stats().aToB).toBeGreaterThan(before);
  });
});
