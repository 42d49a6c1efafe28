/**
 * net-redirect as a built service at both sites of the local bed (real nats-server, JetStream): the move's CloudEvent
 * and the controllers' hook, the relay on 127.0.0.1, and refusals. With network namespaces (NetBed, root), the route
 * agent moves a VM's /32 in the bed's router namespace and the relay forwards, from site A's namespace, a connection
 * that still arrives there to the VM at site B.
 */
import { randomUUID } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Subscription } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  MIGRATION_EVENTS_STREAM,
  NetRedirectSubjects,
  NetRedirectVerb,
  ServiceName,
  WanmigError,
  type NetMovedEvent,
  type NetMovedReply,
  type RelayStatusReply,
  type RouteMoveReply,
} from '@wanmig/protocol';
import {
  LocalBed,
  netAvailable,
  netUnavailableMessage,
  NetBed,
  Site,
  startProbeClient,
  startProbeServer,
  waitUntil,
} from '@wanmig/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const net = await netAvailable();
const skipped = netUnavailableMessage(net);
if (skipped) console.warn(`net-redirect (namespaces): ${skipped}`);

function call<T>(bed: LocalBed, site: Site, verb: NetRedirectVerb, body: object): Promise<T> {
  return callControl<T>(bed.nc, controlSubject(site, ServiceName.NetRedirect, verb), body);
}

async function failure(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof WanmigError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected the request to fail');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const move = (migrationId: string) => ({
  migrationId,
  vmId: 'shop',
  addresses: ['10.20.0.5', 'fd00:20::5'],
  fromSite: Site.A,
  toSite: Site.B,
});

describe('net-redirect service (local bed)', () => {
  let bed: LocalBed;
  let controller: Subscription | undefined;
  let echo: Server | undefined;

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 5, bandwidthBps: 200e6, net: true });
  });

  afterEach(async () => {
    controller?.unsubscribe();
    controller = undefined;
    await new Promise((resolve) => (echo ? echo.close(resolve) : resolve(undefined)));
    echo = undefined;
  });

  afterAll(async () => {
    await bed?.stop();
  });

  /** A fake external controller on the hook: records each event and answers as told. */
  async function fakeController(answer: object): Promise<NetMovedEvent[]> {
    const seen: NetMovedEvent[] = [];
    controller = bed.nc.subscribe(NetRedirectSubjects.movedHook(), {
      callback: (_err, msg) => {
        seen.push(msg.json<NetMovedEvent>());
        msg.respond(JSON.stringify(answer));
      },
    });
    await bed.nc.flush();
    return seen;
  }

  it('net.moved stores the CloudEvent in WANMIG_EVENTS and a controller on the hook confirms it', async () => {
    const seen = await fakeController({ applied: true, controller: 'fake-lb' });
    const migrationId = randomUUID();
    const reply = await call<NetMovedReply>(bed, Site.A, NetRedirectVerb.Moved, {
      ...move(migrationId),
      confirm: { required: true, timeoutMs: 2000 },
    });
    expect(reply).toMatchObject({
      migrationId,
      eventSubject: `wanmig.v1.events.migration.site-a.${migrationId}.net-moved`,
      confirmed: true,
      confirmations: [{ applied: true, controller: 'fake-lb' }],
    });
    expect(seen).toHaveLength(1);
    const event = seen[0];
    expect(event).toMatchObject({
      specversion: '1.0',
      id: reply.eventId,
      type: 'io.wanmig.net.moved',
      source: 'wanmig/net-redirect/site-a',
      subject: migrationId,
      data: move(migrationId),
    });

    const jsm = await jetstreamManager(bed.nc, { domain: Site.A });
    const stored = await jsm.streams.getMessage(MIGRATION_EVENTS_STREAM, { last_by_subj: reply.eventSubject });
    expect(stored?.json<NetMovedEvent>()).toEqual(event);

    // A repeat answers as the first did and stores nothing new.
    expect(await call<NetMovedReply>(bed, Site.A, NetRedirectVerb.Moved, move(migrationId))).toEqual(reply);
    const info = await jsm.streams.info(MIGRATION_EVENTS_STREAM, { subjects_filter: reply.eventSubject });
    expect(info.state.subjects).toEqual({ [reply.eventSubject]: 1 });
    expect(seen).toHaveLength(1);
    expect(
      (await failure(call(bed, Site.A, NetRedirectVerb.Moved, { ...move(migrationId), vmId: 'other' }))).code,
    ).toBe('CONFLICT');
  });

  it('net.moved with `required` fails UNAVAILABLE when no controller listens, CONFLICT when one refuses', async () => {
    const nobody = await failure(
      call(bed, Site.A, NetRedirectVerb.Moved, { ...move(randomUUID()), confirm: { required: true } }),
    );
    expect(nobody.code).toBe('UNAVAILABLE');
    expect(nobody.message).toMatch(/is not confirmed on wanmig\.v1\.hooks\.net\.moved: no controller listens/);

    const reported = await call<NetMovedReply>(bed, Site.A, NetRedirectVerb.Moved, move(randomUUID()));
    expect(reported).toMatchObject({
      confirmed: false,
      confirmations: [],
      reason: 'no controller listens on the hook',
    });

    await fakeController({ applied: false, reason: 'VIP pool full', controller: 'fake-lb' });
    const refused = await failure(
      call(bed, Site.A, NetRedirectVerb.Moved, { ...move(randomUUID()), confirm: { required: true } }),
    );
    expect(refused.code).toBe('CONFLICT');
    expect(refused.message).toMatch(/fake-lb refused: VIP pool full$/);

    const bad = await failure(call(bed, Site.A, NetRedirectVerb.Moved, { ...move(randomUUID()), addresses: [] }));
    expect(bad.code).toBe('INVALID_REQUEST');
    expect(bad.message).toMatch(/addresses must contain at least 1 elements/);
  });

  it('net.route.move without a configured route agent is UNAVAILABLE and says what to set', async () => {
    const err = await failure(
      call(bed, Site.B, NetRedirectVerb.RouteMove, {
        migrationId: randomUUID(),
        addresses: ['10.20.0.5'],
        toSite: Site.B,
      }),
    );
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toMatch(/route agent at site-b is not configured: set WANMIG_ROUTE_VIA/);
  });

  it('net.relay forwards connections on 127.0.0.1 to the target, counts them, and refuses what it cannot do', async () => {
    echo = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => {});
      socket.on('data', (chunk) => socket.write(chunk));
      socket.on('end', () => socket.end());
    });
    await new Promise<void>((resolve) => echo!.listen(0, '127.0.0.1', resolve));
    const targetPort = (echo.address() as { port: number }).port;
    const migrationId = randomUUID();
    const start = {
      migrationId,
      listen: { host: '127.0.0.1', port: 0 },
      target: { host: '127.0.0.1', port: targetPort },
      maxMs: 30_000,
    };
    const started = await call<RelayStatusReply>(bed, Site.A, NetRedirectVerb.RelayStart, start);
    expect(started).toMatchObject({ state: 'listening', connections: { accepted: 0 } });

    const texts = await Promise.all(
      [0, 1].map(
        (i) =>
          new Promise<string>((resolve, reject) => {
            let received = '';
            const socket: Socket = connect({ host: '127.0.0.1', port: started.listen.port }, () =>
              socket.end(`ping ${i}`),
            );
            socket.setEncoding('utf8');
            socket.on('data', (text: string) => (received += text));
            socket.on('error', reject);
            socket.on('close', () => resolve(received));
            socket.setTimeout(5_000, () => socket.destroy(new Error('no answer through the relay')));
          }),
      ),
    );
    expect(texts).toEqual(['ping 0', 'ping 1']);
    let status = started;
    await waitUntil(
      async () => {
        status = await call<RelayStatusReply>(bed, Site.A, NetRedirectVerb.RelayStatus, { migrationId });
        return status.connections.closed === 2;
      },
      { timeoutMs: 5_000, intervalMs: 50, what: 'the relay to count both connections closed' },
    );
    expect(status).toMatchObject({ connections: { accepted: 2, active: 0, failed: 0 }, bytes: { in: 12, out: 12 } });
    expect(await call<RelayStatusReply>(bed, Site.A, NetRedirectVerb.RelayStart, start)).toMatchObject({
      listen: started.listen,
    });

    const taken = await failure(
      call(bed, Site.A, NetRedirectVerb.RelayStart, {
        ...start,
        migrationId: randomUUID(),
        listen: { host: '127.0.0.1', port: started.listen.port },
      }),
    );
    expect(taken.code).toBe('CONFLICT');
    expect(taken.message).toMatch(/127\.0\.0\.1:\d+ is already in use$/);
    const noNamespace = await failure(
      call(bed, Site.A, NetRedirectVerb.RelayStart, {
        ...start,
        migrationId: randomUUID(),
        listen: { host: '127.0.0.1', port: 0, netns: 'wanmig-no-such-ns' },
      }),
    );
    expect(noNamespace.code).toBe('UNAVAILABLE');
    expect(noNamespace.message).toMatch(/Cannot open network namespace "wanmig-no-such-ns"/);
    expect((await failure(call(bed, Site.A, NetRedirectVerb.RelayStatus, { migrationId: randomUUID() }))).code).toBe(
      'NOT_FOUND',
    );

    const stopped = await call<RelayStatusReply>(bed, Site.A, NetRedirectVerb.RelayStop, { migrationId });
    expect(stopped).toMatchObject({ state: 'stopped', stoppedReason: 'requested' });
  });
});

describe.skipIf(!net.ok)(`net-redirect in network namespaces${skipped ? ` (skipped: ${skipped})` : ''}`, () => {
  let netBed: NetBed | undefined;
  let bed: LocalBed | undefined;
  const PORT = 8080;
  const RELAY_PORT = 9090;

  afterAll(async () => {
    await bed?.stop();
    await netBed?.destroy();
  });

  it('the route agent moves the VM /32 to site B, and the relay in site A forwards what still arrives there', async () => {
    netBed = await NetBed.create();
    const nb = netBed;
    const routeEnv = {
      WANMIG_ROUTE_NETNS: nb.namespace('router'),
      WANMIG_ROUTE_VIA: `${Site.A}=${nb.nextHop('siteA')},${Site.B}=${nb.nextHop('siteB')}`,
    };
    bed = await LocalBed.start({
      delayMs: 5,
      bandwidthBps: 200e6,
      net: { env: { [Site.A]: routeEnv, [Site.B]: routeEnv } },
    });
    const vm = nb.vmAddress(1);
    await nb.placeVm(vm, 'siteA');
    await nb.routeVm(vm, 'siteA');
    await startProbeServer(nb, 'siteA', { address: vm, port: PORT, label: 'A', lifetimeMs: 30_000 });
    const before = startProbeClient(nb, { address: vm, port: PORT, durationMs: 5_000 });
    await before.waitForLines(3, { label: 'A', timeoutMs: 5_000 });

    // The VM now runs at B; the route agent of site A's net-redirect moves its /32 in the router.
    await nb.placeVm(vm, 'siteB');
    await startProbeServer(nb, 'siteB', { address: vm, port: PORT, label: 'B', lifetimeMs: 30_000 });
    const migrationId = randomUUID();
    const moved = await call<RouteMoveReply>(bed, Site.A, NetRedirectVerb.RouteMove, {
      migrationId,
      addresses: [vm],
      toSite: Site.B,
    });
    expect(moved).toMatchObject({
      migrationId,
      toSite: Site.B,
      netns: nb.namespace('router'),
      routes: [{ address: vm, prefix: `${vm}/32`, via: nb.nextHop('siteB') }],
    });
    expect(moved.routes[0].route).toContain(`via ${nb.nextHop('siteB')}`);
    expect(await nb.routedTo(vm)).toBe('siteB');
    const after = startProbeClient(nb, { address: vm, port: PORT, durationMs: 5_000 });
    const atB = await after.waitForLines(3, { label: 'B', timeoutMs: 5_000 });
    expect(atB.labels).toEqual({ B: atB.lines });

    // The relay at the old site: inside site A's namespace, on A's own address, forwarding to the VM at B.
    const relayAt = nb.nextHop('siteA');
    const started = await call<RelayStatusReply>(bed, Site.A, NetRedirectVerb.RelayStart, {
      migrationId,
      listen: { host: relayAt, port: RELAY_PORT, netns: nb.namespace('siteA') },
      target: { host: vm, port: PORT },
      maxMs: 20_000,
      idleMs: 5_000,
    });
    expect(started).toMatchObject({
      state: 'listening',
      listen: { host: relayAt, port: RELAY_PORT, netns: nb.namespace('siteA') },
    });
    const pid = started.pid!;
    expect(alive(pid)).toBe(true);
    const relayed = startProbeClient(nb, { address: relayAt, port: RELAY_PORT, durationMs: 5_000 });
    const viaA = await relayed.waitForLines(3, { label: 'B', timeoutMs: 5_000 });
    expect(viaA.labels).toEqual({ B: viaA.lines });
    let status = started;
    await waitUntil(
      async () => {
        status = await call<RelayStatusReply>(bed!, Site.A, NetRedirectVerb.RelayStatus, { migrationId });
        return status.bytes.out > 0;
      },
      { timeoutMs: 5_000, intervalMs: 50, what: 'the relay to count bytes from B' },
    );
    expect(status.connections).toMatchObject({ accepted: 1, active: 1 });

    const stopped = await call<RelayStatusReply>(bed, Site.A, NetRedirectVerb.RelayStop, { migrationId, force: true });
    expect(stopped).toMatchObject({
      state: 'stopped',
      stoppedReason: 'requested',
      connections: { active: 0, closed: 1 },
    });
    await relayed.finished();
    await waitUntil(() => !alive(pid), { timeoutMs: 5_000, what: `forwarder ${pid} to exit` });
    await before.stop();
    await after.stop();
  });
});
