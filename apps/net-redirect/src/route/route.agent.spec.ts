import { WanmigError } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { CommandFailedError, type CommandExecutor } from './command.executor.js';
import { FlowPins } from './flow.pins.js';
import { RouteAgent, type RouteAgentOptions } from './route.agent.js';
import { parseRouteVia, type RouteViaTable } from './route-via.table.js';

const MIGRATION = '0b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a';

/** Records every argv; `route get` answers like iproute2; `fail` makes the matching command fail with its stderr. */
class FakeExecutor implements CommandExecutor {
  readonly commands: string[] = [];
  constructor(private readonly fail?: { match: RegExp; stderr: string }) {}

  run(argv: readonly string[]): Promise<{ stdout: string; stderr: string }> {
    const line = argv.join(' ');
    this.commands.push(line);
    if (this.fail?.match.test(line)) {
      return Promise.reject(new CommandFailedError(argv, { exitCode: 2, stderr: this.fail.stderr }));
    }
    const get = /route get (\S+)$/.exec(line);
    return Promise.resolve({
      stdout: get ? `${get[1]} via 10.9.9.9 dev to-siteB src 10.200.0.9 uid 0\n    cache\n` : '',
      stderr: '',
    });
  }
}

function table(text: string): RouteViaTable {
  const parsed = parseRouteVia(text);
  if (!parsed.ok) throw new Error(parsed.problems.join('; '));
  return parsed.table;
}

function agent(executor: CommandExecutor, options: Partial<RouteAgentOptions> = {}): RouteAgent {
  return new RouteAgent(
    {
      site: 'site-a',
      netns: 'wm123456-r',
      via: table('site-a=10.200.0.2,site-b=10.200.0.6,site-b=fd00:2::2'),
      ipBin: 'ip',
      commandTimeoutMs: 1000,
      ...options,
    },
    executor,
  );
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return err instanceof WanmigError ? `${err.code}: ${err.message}` : `untyped: ${String(err)}`;
  }
  return 'resolved';
}

describe('RouteAgent', () => {
  it('replaces each host route in the router namespace, /32 for IPv4 and /128 with -6 for IPv6, then reads them back', async () => {
    const executor = new FakeExecutor();
    const reply = await agent(executor).move({
      migrationId: MIGRATION,
      addresses: ['10.201.100.1', 'fd00:100::1'],
      toSite: 'site-b',
    });
    expect(executor.commands).toEqual([
      'ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.6',
      'ip -6 -n wm123456-r route replace fd00:100::1/128 via fd00:2::2',
      'ip -n wm123456-r route get 10.201.100.1',
      'ip -6 -n wm123456-r route get fd00:100::1',
    ]);
    expect(reply).toEqual({
      migrationId: MIGRATION,
      toSite: 'site-b',
      netns: 'wm123456-r',
      routes: [
        {
          address: '10.201.100.1',
          prefix: '10.201.100.1/32',
          via: '10.200.0.6',
          route: '10.201.100.1 via 10.9.9.9 dev to-siteB src 10.200.0.9 uid 0',
        },
        {
          address: 'fd00:100::1',
          prefix: 'fd00:100::1/128',
          via: 'fd00:2::2',
          route: 'fd00:100::1 via 10.9.9.9 dev to-siteB src 10.200.0.9 uid 0',
        },
      ],
    });
  });

  it('acts in its own namespace when none is configured', async () => {
    const executor = new FakeExecutor();
    const reply = await agent(executor, { netns: undefined, ipBin: '/sbin/ip' }).move({
      migrationId: MIGRATION,
      addresses: ['10.201.100.1'],
      toSite: 'site-a',
    });
    expect(executor.commands[0]).toBe('/sbin/ip route replace 10.201.100.1/32 via 10.200.0.2');
    expect(reply.netns).toBeUndefined();
  });

  it('repeats harmlessly, moves back on request, and refuses another address set for the same migration', async () => {
    const executor = new FakeExecutor();
    const routes = agent(executor);
    const request = { migrationId: MIGRATION, addresses: ['10.201.100.1', '10.201.100.1'], toSite: 'site-b' };
    const first = await routes.move(request);
    expect(await routes.move(request)).toEqual(first);
    expect(first.routes).toHaveLength(1);
    await routes.move({ ...request, toSite: 'site-a' });
    expect(executor.commands.filter((c) => c.includes('replace'))).toEqual([
      'ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.6',
      'ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.6',
      'ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.2',
    ]);
    expect(await codeOf(routes.move({ ...request, addresses: ['10.201.100.2'] }))).toMatch(
      /^CONFLICT: .*10\.201\.100\.1/,
    );
  });

  it('is UNAVAILABLE when not configured, or when a command fails, with the command and its stderr', async () => {
    const none = new FakeExecutor();
    const request = { migrationId: MIGRATION, addresses: ['10.201.100.1'], toSite: 'site-b' };
    expect(await codeOf(agent(none, { via: undefined }).move(request))).toMatch(
      /^UNAVAILABLE: the route agent at site-a is not configured: set WANMIG_ROUTE_VIA/,
    );
    expect(none.commands).toEqual([]);

    const failing = new FakeExecutor({
      match: /replace/,
      stderr: 'Cannot open network namespace "wm123456-r": No such file or directory',
    });
    const message = await codeOf(agent(failing).move(request));
    expect(message).toMatch(
      /^UNAVAILABLE: route agent at site-a: ip -n wm123456-r route replace 10\.201\.100\.1\/32 via 10\.200\.0\.6: /,
    );
    expect(message).toContain('Cannot open network namespace "wm123456-r"');

    const second = new FakeExecutor({
      match: /replace 10\.201\.100\.2/,
      stderr: 'RTNETLINK answers: Network is unreachable',
    });
    expect(await codeOf(agent(second).move({ ...request, addresses: ['10.201.100.1', '10.201.100.2'] }))).toMatch(
      /Network is unreachable \(already moved: 10\.201\.100\.1\/32\)$/,
    );
  });

  it('changes nothing for a site or an address family it has no next hop for', async () => {
    const executor = new FakeExecutor();
    const routes = agent(executor, { via: table('site-a=10.200.0.2,site-b=10.200.0.6') });
    expect(await codeOf(routes.move({ migrationId: MIGRATION, addresses: ['10.201.100.1'], toSite: 'site-c' }))).toBe(
      'NOT_FOUND: the route agent knows no next hop for site-c (it knows site-a, site-b)',
    );
    expect(
      await codeOf(routes.move({ migrationId: MIGRATION, addresses: ['10.201.100.1', 'fd00::1'], toSite: 'site-b' })),
    ).toMatch(/^UNAVAILABLE: .*no IPv6 next hop for site-b/);
    expect(executor.commands).toEqual([]);
  });

  it('refuses bad requests before running anything', async () => {
    const executor = new FakeExecutor();
    const routes = agent(executor);
    for (const body of [
      { migrationId: MIGRATION, addresses: [], toSite: 'site-b' },
      { migrationId: MIGRATION, addresses: ['10.0.0.1; reboot'], toSite: 'site-b' },
      { migrationId: 'x', addresses: ['10.0.0.1'], toSite: 'site-b' },
      'move it',
    ]) {
      expect(await codeOf(routes.move(body))).toMatch(/^INVALID_REQUEST: /);
    }
    expect(executor.commands).toEqual([]);
  });
});

describe('parseRouteVia', () => {
  it('reads site=hop entries, one hop per site and family', () => {
    const parsed = parseRouteVia(' site-a=10.1.0.2 , site-b=10.2.0.2,site-b=fd00:2::2,');
    expect(parsed.ok && [...parsed.table]).toEqual([
      ['site-a', { 4: '10.1.0.2' }],
      ['site-b', { 4: '10.2.0.2', 6: 'fd00:2::2' }],
    ]);
    expect(parseRouteVia('')).toEqual({ ok: true, table: new Map() });
  });

  it('lists every bad entry', () => {
    const parsed = parseRouteVia('site-a=10.1.0.2,site-a=10.1.0.3,Site-B=10.2.0.2,site-c,site-d=router');
    expect(parsed.ok ? [] : parsed.problems).toEqual([
      'site-a has two IPv4 next hops (10.1.0.2, 10.1.0.3)',
      '"Site-B=10.2.0.2" is not site=<IPv4 or IPv6 address>',
      '"site-c" is not site=<IPv4 or IPv6 address>',
      '"site-d=router" is not site=<IPv4 or IPv6 address>',
    ]);
  });

  it('pins the open flows of this site’s NIC before the /32 moves away, and removes them on the way back', async () => {
    const executor = new FakeExecutor();
    const flows = [
      { client: '10.200.0.1', clientPort: 40001, address: '10.201.100.1', port: 7000 },
      { client: '10.200.0.1', clientPort: 40002, address: '10.201.100.1', port: 7000 },
    ];
    const pins = new FlowPins({ ipBin: 'ip', netns: 'wm123456-r', commandTimeoutMs: 1000, table: 30000 }, executor);
    const routes = agent(executor, { flows: { source: { openFlows: () => Promise.resolve(flows) }, pins } });
    const away = await routes.move({ migrationId: MIGRATION, addresses: ['10.201.100.1'], toSite: 'site-b' });
    expect(away.pinnedFlows).toBe(2);
    const rule = (port: number) =>
      `from 10.200.0.1/32 to 10.201.100.1/32 ipproto tcp sport ${port} dport 7000 table 30000`;
    expect(executor.commands.slice(0, 4)).toEqual([
      'ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.2 table 30000',
      `ip -n wm123456-r rule add priority 1000 ${rule(40001)}`,
      `ip -n wm123456-r rule add priority 1000 ${rule(40002)}`,
      'ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.6',
    ]);
    executor.commands.length = 0;
    const home = await routes.move({ migrationId: MIGRATION, addresses: ['10.201.100.1'], toSite: 'site-a' });
    expect(home.pinnedFlows).toBeUndefined();
    expect(executor.commands.slice(0, 4)).toEqual([
      'ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.2',
      `ip -n wm123456-r rule del priority 1000 ${rule(40001)}`,
      `ip -n wm123456-r rule del priority 1000 ${rule(40002)}`,
      'ip -n wm123456-r route del 10.201.100.1/32 table 30000',
    ]);
    expect(pins.pinned).toEqual([]);
  });

  it('moves the routes all the same when the flows cannot be pinned (pinnedFlows 0)', async () => {
    const executor = new FakeExecutor({ match: /rule add/, stderr: 'RTNETLINK answers: Invalid argument' });
    const pins = new FlowPins({ ipBin: 'ip', commandTimeoutMs: 1000, table: 30000 }, executor);
    const flows = [{ client: '10.200.0.1', clientPort: 40001, address: '10.201.100.1', port: 7000 }];
    const routes = agent(executor, { flows: { source: { openFlows: () => Promise.resolve(flows) }, pins } });
    const reply = await routes.move({ migrationId: MIGRATION, addresses: ['10.201.100.1'], toSite: 'site-b' });
    expect(reply.pinnedFlows).toBe(0);
    expect(executor.commands).toContain('ip -n wm123456-r route replace 10.201.100.1/32 via 10.200.0.6');
  });
});
