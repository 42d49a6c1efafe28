/**
 * A VM's NIC per site (`net.vm.*`) with the built net-redirect at both sites of the local bed (real nats-server) and
 * real network namespaces (NetBed, root): the VM answers at its own address inside site A's namespace through a
 * forwarder to a unix socket line server (the embedded guest's stand-in); a client in the client namespace holds one
 * connection, asking a line every 20 ms, while the VM moves to site B (a NIC there to a second line server, the /32
 * moved in the router, A's NIC turned into the relay to B's tunnel endpoint). The connection must never close, every
 * request must get exactly one answer, and the answers switch from server one to server two; a new connection
 * reaches B's NIC directly.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  callControl,
  controlSubject,
  NetRedirectVerb,
  ServiceName,
  type RouteMoveReply,
  type VmNicStatus,
} from '@wanmig/protocol';
import {
  LocalBed,
  netAvailable,
  netUnavailableMessage,
  NetBed,
  Site,
  waitUntil,
  type NetnsProcess,
} from '@wanmig/testing';
import { afterAll, describe, expect, it } from 'vitest';

const net = await netAvailable();
const skipped = netUnavailableMessage(net);
if (skipped) console.warn(`net-redirect VM NIC (namespaces): ${skipped}`);

const PORT = 7000;

function call<T>(bed: LocalBed, site: Site, verb: NetRedirectVerb, body: object): Promise<T> {
  return callControl<T>(bed.nc, controlSubject(site, ServiceName.NetRedirect, verb), body, 15_000);
}

/** The guest's stand-in: a unix socket server answering each request line with `<label>:<line>`. */
async function lineServer(path: string, label: string): Promise<Server> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    let partial = '';
    socket.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) socket.write(`${label}:${line}\n`);
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return server;
}

/**
 * One connection to ADDR:PORT sending `req <n>` every 20 ms for DURATION_MS, then waiting 1 s for the last answers;
 * JSON events on stdout (`reply` with the line, `closed`, `error`, `done` with the count sent). Exits by itself.
 */
const CLIENT_SCRIPT = `
const net = require('node:net');
const host = process.env.ADDR, port = Number(process.env.PORT), durationMs = Number(process.env.DURATION_MS);
const out = (event) => process.stdout.write(JSON.stringify(event) + '\\n');
setTimeout(() => process.exit(2), durationMs + 5000).unref();
let sent = 0, partial = '', closed = false;
const socket = net.connect({ host, port }, () => {
  out({ event: 'connected' });
  const timer = setInterval(() => socket.write('req ' + sent++ + '\\n'), 20);
  setTimeout(() => {
    clearInterval(timer);
    setTimeout(() => { out({ event: 'done', sent, closed }); socket.destroy(); process.exit(0); }, 1000);
  }, durationMs);
});
socket.setEncoding('utf8');
socket.on('data', (text) => {
  const lines = (partial + text).split('\\n');
  partial = lines.pop();
  for (const line of lines) out({ event: 'reply', line });
});
socket.on('error', (err) => out({ event: 'error', code: err.code }));
socket.on('close', () => { closed = true; out({ event: 'closed' }); });
`;

interface ClientEvent {
  event: 'connected' | 'reply' | 'closed' | 'error' | 'done';
  line?: string;
  sent?: number;
  closed?: boolean;
  code?: string;
}

function events(proc: NetnsProcess): ClientEvent[] {
  return proc.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as ClientEvent);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const replies = (proc: NetnsProcess) => events(proc).flatMap((e) => (e.event === 'reply' && e.line ? [e.line] : []));

describe.skipIf(!net.ok)(`net-redirect VM NIC in network namespaces${skipped ? ` (skipped: ${skipped})` : ''}`, () => {
  let netBed: NetBed | undefined;
  let bed: LocalBed | undefined;
  let dir: string | undefined;
  const servers: Server[] = [];

  afterAll(async () => {
    await bed?.stop();
    await netBed?.destroy();
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('moves a VM from A to B under an open connection: never closed, every request answered once, A relays', async () => {
    netBed = await NetBed.create();
    const nb = netBed;
    dir = mkdtempSync(join(tmpdir(), 'wanmig-vmnic-'));
    const one = join(dir, 'one.sock');
    const two = join(dir, 'two.sock');
    servers.push(await lineServer(one, 'one'), await lineServer(two, 'two'));
    const routeEnv = {
      WANMIG_ROUTE_NETNS: nb.namespace('router'),
      WANMIG_ROUTE_VIA: `${Site.A}=${nb.nextHop('siteA')},${Site.B}=${nb.nextHop('siteB')}`,
    };
    const siteEnv = (site: 'siteA' | 'siteB') => ({
      ...routeEnv,
      WANMIG_VM_NETNS: nb.namespace(site),
      // The site's own router-facing address inside its namespace: where B's tunnel endpoints are reached from A.
      WANMIG_VM_TUNNEL_HOST: nb.nextHop(site),
    });
    bed = await LocalBed.start({
      delayMs: 5,
      bandwidthBps: 200e6,
      net: { env: { [Site.A]: siteEnv('siteA'), [Site.B]: siteEnv('siteB') } },
    });
    const vm = nb.vmAddress(1);
    await nb.routeVm(vm, 'siteA');
    const attach = { vmId: 'shop', addresses: [vm], ports: [PORT], framing: 'lines' };

    const atA = await call<VmNicStatus>(bed, Site.A, NetRedirectVerb.VmAttach, { ...attach, socket: one });
    expect(atA).toMatchObject({
      state: 'attached',
      netns: nb.namespace('siteA'),
      addresses: [vm],
      tunnelHost: nb.nextHop('siteA'),
      connections: { accepted: 0, relayed: 0 },
    });
    expect(atA.ports[0].port).toBe(PORT);
    expect(atA.pids).toHaveLength(1);
    expect(await nb.exec('siteA', ['ip', '-o', 'addr', 'show', 'dev', 'lo'])).toContain(`${vm}/32`);
    expect(await call<VmNicStatus>(bed, Site.A, NetRedirectVerb.VmAttach, { ...attach, socket: one })).toMatchObject({
      ports: atA.ports,
      pids: atA.pids,
    });

    const client = nb.spawn('client', [process.execPath, '-e', CLIENT_SCRIPT], {
      env: { ADDR: vm, PORT: `${PORT}`, DURATION_MS: '5000' },
    });
    await waitUntil(() => replies(client).length >= 5, { timeoutMs: 5_000, what: 'answers from server one' });

    // The VM now runs at B: its NIC there, the /32 moved in the router, A's NIC relays to B's tunnel endpoint.
    const atB = await call<VmNicStatus>(bed, Site.B, NetRedirectVerb.VmAttach, { ...attach, socket: two });
    expect(atB).toMatchObject({ state: 'attached', tunnelHost: nb.nextHop('siteB') });
    const tunnelPort = atB.ports[0].tunnelPort!;
    expect(tunnelPort).toBeGreaterThan(0);
    const moved = await call<RouteMoveReply>(bed, Site.A, NetRedirectVerb.RouteMove, {
      migrationId: randomUUID(),
      addresses: [vm],
      toSite: Site.B,
    });
    expect(moved.pinnedFlows).toBe(1);
    expect(await nb.routedTo(vm)).toBe('siteB');
    const relaying = await call<VmNicStatus>(bed, Site.A, NetRedirectVerb.VmRelay, {
      vmId: 'shop',
      tunnelHost: atB.tunnelHost,
      tunnels: [{ port: PORT, tunnelPort }],
      maxMs: 60_000,
      idleMs: 30_000,
    });
    expect(relaying).toMatchObject({
      state: 'relaying',
      addresses: [vm],
      relay: { tunnelHost: nb.nextHop('siteB'), tunnels: [{ port: PORT, tunnelPort }], maxMs: 60_000 },
    });
    await waitUntil(() => replies(client).filter((r) => r.startsWith('two:')).length >= 5, {
      timeoutMs: 5_000,
      what: 'answers from server two through the relay',
    });

    // A new connection follows the /32 straight to B's NIC.
    const acceptedAtB = (await call<VmNicStatus>(bed, Site.B, NetRedirectVerb.VmStatus, { vmId: 'shop' })).connections
      .accepted;
    const fresh = nb.spawn('client', [process.execPath, '-e', CLIENT_SCRIPT], {
      env: { ADDR: vm, PORT: `${PORT}`, DURATION_MS: '100' },
    });
    await fresh.exited;
    expect(replies(fresh).length).toBeGreaterThan(0);
    expect(replies(fresh).every((r) => r.startsWith('two:'))).toBe(true);
    let statusB = atB;
    await waitUntil(
      async () => {
        statusB = await call<VmNicStatus>(bed!, Site.B, NetRedirectVerb.VmStatus, { vmId: 'shop' });
        return statusB.connections.accepted === acceptedAtB + 1;
      },
      { timeoutMs: 5_000, intervalMs: 50, what: 'B to count the new connection' },
    );

    await client.exited;
    const all = events(client);
    const done = all.find((e) => e.event === 'done');
    expect(done, client.stdout + client.stderr).toBeDefined();
    expect(done?.closed).toBe(false);
    expect(all.some((e) => e.event === 'closed' || e.event === 'error')).toBe(false);
    const lines = replies(client);
    // Exactly one answer per request, in order, and one switch from server one to server two.
    expect(lines.map((line) => line.replace(/^(one|two):/, ''))).toEqual(
      Array.from({ length: done!.sent! }, (_, n) => `req ${n}`),
    );
    const labels = lines.map((line) => line.split(':')[0]);
    const firstTwo = labels.indexOf('two');
    expect(firstTwo).toBeGreaterThan(0);
    expect(labels.slice(0, firstTwo).every((l) => l === 'one')).toBe(true);
    expect(labels.slice(firstTwo).every((l) => l === 'two')).toBe(true);

    const statusA = await call<VmNicStatus>(bed, Site.A, NetRedirectVerb.VmStatus, { vmId: 'shop' });
    expect(statusA.connections).toMatchObject({ accepted: 1, relayed: 1, failed: 0 });
    expect(statusA.state).toBe('relaying');

    // Detached: the address leaves A's lo, the forwarder exits, the router's flow pin goes.
    const detached = await call<VmNicStatus>(bed, Site.A, NetRedirectVerb.VmDetach, { vmId: 'shop' });
    expect(detached).toMatchObject({ state: 'detached', stoppedReason: 'requested', pids: [] });
    expect(await nb.exec('siteA', ['ip', '-o', 'addr', 'show', 'dev', 'lo'])).not.toContain(`${vm}/32`);
    expect(await nb.exec('router', ['ip', 'rule', 'show'])).not.toContain('ipproto tcp');
    expect(await call<VmNicStatus>(bed, Site.A, NetRedirectVerb.VmDetach, { vmId: 'shop' })).toEqual(detached);
    expect((await call<VmNicStatus>(bed, Site.B, NetRedirectVerb.VmDetach, { vmId: 'shop' })).state).toBe('detached');
    expect(await nb.exec('siteB', ['ip', '-o', 'addr', 'show', 'dev', 'lo'])).not.toContain(`${vm}/32`);

    // A NIC still attached when the service shuts down is detached by it: its address leaves `lo`, its child exits.
    const other = nb.vmAddress(2);
    const left = await call<VmNicStatus>(bed, Site.A, NetRedirectVerb.VmAttach, {
      ...attach,
      vmId: 'left',
      addresses: [other],
      socket: one,
    });
    expect(await nb.exec('siteA', ['ip', '-o', 'addr', 'show', 'dev', 'lo'])).toContain(`${other}/32`);
    await bed.stop();
    bed = undefined;
    expect(await nb.exec('siteA', ['ip', '-o', 'addr', 'show', 'dev', 'lo'])).not.toContain(`${other}/32`);
    await waitUntil(() => !alive(left.pids[0]), { timeoutMs: 5_000, what: `forwarder ${left.pids[0]} to exit` });
  });
});
