/**
 * The committed docs/schemas/<Name>.schema.json files are API_SCHEMAS written out. After changing a DTO or a reply
 * schema, regenerate them with:
 *
 *   UPDATE_SCHEMAS=1 npx vitest run libs/protocol/src/schema/api.schemas.spec.ts
 *
 * (formatted with the repository's Prettier settings; files of schemas that no longer exist are removed).
 */
import { readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { format, resolveConfig } from 'prettier';
import { describe, expect, it } from 'vitest';
import { type CloudEvent } from '../control/migration-event.types.js';
import { type MigrationView } from '../control/migration.dto.js';
import {
  type NetMovedEvent,
  type NetMovedReply,
  type RelayStatusReply,
  type VmNicStatus,
} from '../control/net-redirect.dto.js';
import {
  type QemuIncomingStatusReply,
  type QemuRelayStatusReply,
  type StartQemuIncomingReply,
} from '../control/qemu-migration.dto.js';
import { type ListSitesReply, type SiteInfo, type VmView } from '../control/vm.dto.js';
import { API_SCHEMAS, type ApiSchemaName } from './api.schemas.js';
import { JSON_SCHEMA_DIALECT } from './json-schema.js';
import { schemaValidator } from './schema.spec-helper.js';

const SCHEMA_DIR = fileURLToPath(new URL('../../../../docs/schemas/', import.meta.url));
const SUFFIX = '.schema.json';
const names = Object.keys(API_SCHEMAS) as ApiSchemaName[];

async function render(name: ApiSchemaName): Promise<string> {
  const file = `${SCHEMA_DIR}${name}${SUFFIX}`;
  const config = (await resolveConfig(file)) ?? {};
  return format(JSON.stringify(API_SCHEMAS[name]), { ...config, filepath: file });
}

const migration: MigrationView = {
  id: '0b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a',
  vmId: 'vm-1',
  fromSite: 'site-a',
  toSite: 'site-b',
  options: { downtimeMs: 300, policy: 'smart', verify: true },
  phase: 'COMMITTED',
  epoch: 3,
  history: [
    { phase: 'PLANNED', at: '2025-01-01T10:00:00.000Z' },
    { phase: 'PREPARING', at: '2025-01-01T10:00:01.000Z', note: 'pre-flight passed' },
  ],
  createdAt: '2025-01-01T10:00:00.000Z',
  updatedAt: '2025-01-01T10:01:00.000Z',
  figures: { downtimeMs: 212.5, diskVerified: true, serviceAddress: '10.0.0.2:8080', totalSeconds: 61.2 },
  destination: { diskPath: '/var/lib/wanmig/vm-1.img' },
};
const vm: VmView = {
  vmId: 'vm-1',
  site: 'site-a',
  state: 'running',
  ramBytes: 256 << 20,
  diskBytes: 256 << 20,
  workload: 'web',
  diskPath: '/var/lib/wanmig/vm-1.img',
  createdAt: '2025-01-01T09:00:00.000Z',
};
const site: SiteInfo = { site: 'site-a', freeDiskBytes: 1e12, freeRamBytes: 8e9, vms: 1, migrationsRunning: 0 };
const sites: ListSitesReply = {
  sites: [
    { ...site, reachable: true, httpUrl: 'http://127.0.0.1:8080' },
    { site: 'site-b', reachable: false, error: 'no answer in 2 s' },
  ],
};
const event: CloudEvent = {
  specversion: '1.0',
  id: '6f1c0b1e-4d2a-4c55-9a7e-2f0d8e1b3c4a',
  source: 'wanmig/orchestrator/site-a',
  type: 'io.wanmig.migration.phase-changed',
  subject: migration.id,
  time: '2025-01-01T10:00:01.000Z',
  datacontenttype: 'application/json',
  data: { migrationId: migration.id, vmId: 'vm-1', from: 'PLANNED', to: 'PREPARING', epoch: 1 },
};

const relayStatus: QemuRelayStatusReply = {
  migrationId: migration.id,
  socketPath: '/run/wanmig/sim/qemu/m.sock',
  windowBytes: 3 << 20,
  qemuBytes: 1 << 20,
  framedBytes: 1 << 20,
  frameBytes: 400_000,
  frames: 4,
  compressedFrames: 4,
  readStalls: 1,
  readStalledMs: 12,
  connected: true,
  qemuClosed: false,
  senderBytes: 400_256,
  resentBytes: 0,
  returnBytes: 0,
  done: false,
  failed: false,
  closed: false,
  digestSegments: 1,
  streamSha256: 'c0ffee'.repeat(10) + 'c0ff',
};
const incoming: StartQemuIncomingReply = {
  migrationId: migration.id,
  diskPath: '/srv/wanmig/disk.img',
  servicePort: 40123,
  pid: 4242,
  status: 'inmigrate',
  monitorSocket: '/run/wanmig/sim/qemu/m/monitor.qmp',
};
const incomingStatus: QemuIncomingStatusReply = {
  ...incoming,
  status: 'paused',
  running: false,
  postcopy: false,
  migrationStatus: 'completed',
  loaded: true,
  resumed: false,
  aborted: false,
  sink: {
    bytesWritten: 1 << 20,
    frames: 4,
    payloadBytes: 400_000,
    connected: true,
    ended: true,
    returnBytes: 0,
    done: true,
    verifiedBytes: 1 << 20,
    endVerified: true,
    streamSha256: 'c0ffee'.repeat(10) + 'c0ff',
  },
};

const netMoved: NetMovedEvent = {
  ...event,
  source: 'wanmig/net-redirect/site-a',
  type: 'io.wanmig.net.moved',
  data: {
    migrationId: migration.id,
    vmId: 'vm-1',
    addresses: ['10.0.0.5', 'fd00::5'],
    fromSite: 'site-a',
    toSite: 'b',
  },
};
const movedReply: NetMovedReply = {
  migrationId: migration.id,
  eventId: netMoved.id,
  eventSubject: `wanmig.v1.events.migration.site-a.${migration.id}.net-moved`,
  confirmations: [{ applied: true, controller: 'lb-1', ms: 3.2 }],
  confirmed: true,
};
const relay: RelayStatusReply = {
  migrationId: migration.id,
  state: 'listening',
  listen: { host: '10.0.0.5', port: 8080, netns: 'wm1a2b3c-a' },
  target: { host: '10.0.0.5', port: 8080 },
  connections: { accepted: 3, active: 1, closed: 2, failed: 0 },
  bytes: { in: 1200, out: 64_000 },
  startedAt: '2025-01-01T10:00:01.000Z',
  pid: 4242,
};
const nic: VmNicStatus = {
  vmId: 'shop',
  state: 'relaying',
  netns: 'wm1a2b3c-a',
  addresses: ['10.200.100.1', 'fd00:20::5'],
  socket: '/run/wanmig/shop/service.sock',
  framing: 'lines',
  ports: [{ port: 7000, tunnelPort: 41234 }],
  tunnelHost: '10.200.1.2',
  relay: {
    tunnelHost: '10.200.2.2',
    tunnels: [{ port: 7000, tunnelPort: 40999 }],
    startedAt: '2025-01-01T10:00:01.000Z',
    maxMs: 600_000,
    idleMs: 30_000,
  },
  connections: { accepted: 3, active: 1, closed: 2, failed: 0, relayed: 1 },
  bytes: { in: 1200, out: 64_000 },
  pids: [4242],
};

/** Replies as the services send them (true), and near misses (false). */
const REPLY_CASES: [ApiSchemaName, unknown, boolean][] = [
  ['MigrationView', migration, true],
  ['MigrationView', { ...migration, error: { code: 'CONFLICT', message: 'no' } }, true],
  ['MigrationView', { ...migration, phase: 'FLYING' }, false],
  ['MigrationView', { ...migration, createdAt: 'yesterday' }, false],
  ['MigrationView', { ...migration, revision: 4 }, false],
  ['MigrationView', { ...migration, error: { code: 'OOPS', message: 'no' } }, false],
  ['MigrationView', { ...migration, options: { policy: 'smart', verify: true } }, false],
  ['ListMigrationsReply', { migrations: [migration] }, true],
  ['ListMigrationsReply', { migrations: [{ ...migration, epoch: -1 }] }, false],
  ['VmView', vm, true],
  ['VmView', { ...vm, state: 'paused' }, false],
  ['ListVmsReply', { vms: [] }, true],
  ['RemoveVmReply', { vmId: 'vm-1' }, true],
  ['SiteInfo', site, true],
  ['SiteInfo', { ...site, reachable: true }, false],
  ['ListSitesReply', sites, true],
  ['ListSitesReply', { sites: [{ site: 'site-b' }] }, false],
  ['CloudEvent', event, true],
  ['CloudEvent', { ...event, specversion: '0.3' }, false],
  ['CloudEvent', { ...event, type: 'io.wanmig.migration.exploded' }, false],
  ['WireError', { code: 'NOT_FOUND', message: 'no migration x' }, true],
  ['WireError', { code: 'NOT_FOUND' }, false],
  [
    'OpenQemuRelayReply',
    { migrationId: migration.id, socketPath: '/run/m.sock', windowBytes: 3 << 20, rttMs: 41.2 },
    true,
  ],
  ['OpenQemuRelayReply', { migrationId: migration.id, socketPath: '/run/m.sock', windowBytes: 3 << 20 }, false],
  ['QemuRelayStatusReply', relayStatus, true],
  ['QemuRelayStatusReply', { ...relayStatus, done: true, streamMs: 5120, tailMs: 80 }, true],
  ['QemuRelayStatusReply', { ...relayStatus, failed: true, error: { code: 'STREAM_CLOSED', message: 'closed' } }, true],
  ['QemuRelayStatusReply', { ...relayStatus, qemuBytes: -1 }, false],
  ['QemuRelayStatusReply', { ...relayStatus, returnBytes: 1.5 }, false],
  ['StartQemuIncomingReply', incoming, true],
  ['StartQemuIncomingReply', { ...incoming, servicePort: 70000 }, false],
  ['StartQemuIncomingReply', { ...incoming, monitorSocket: undefined }, false],
  ['QemuIncomingStatusReply', incomingStatus, true],
  [
    'QemuIncomingStatusReply',
    {
      ...incomingStatus,
      postcopy: true,
      migrationStatus: 'postcopy-active',
      sink: { ...incomingStatus.sink, ended: false, done: false, returnBytes: 6_144 },
    },
    true,
  ],
  ['QemuIncomingStatusReply', { ...incomingStatus, postcopy: undefined }, false],
  ['QemuIncomingStatusReply', { ...incomingStatus, sink: { ...incomingStatus.sink, done: 'yes' } }, false],
  [
    'ResumeQemuReply',
    { migrationId: migration.id, status: 'running', resumedAt: 1.7e12, loadWaitMs: 12, contMs: 3, warnings: [] },
    true,
  ],
  ['ResumeQemuReply', { migrationId: migration.id, status: 'running', resumedAt: 1.7e12, warnings: [] }, false],
  ['AbortQemuIncomingReply', { migrationId: migration.id, stopped: true, wasRunning: false }, true],
  ['AbortQemuIncomingReply', { migrationId: migration.id, stopped: true }, false],
  ['CloudEvent', netMoved, true],
  ['NetMovedEvent', netMoved, true],
  ['NetMovedEvent', { ...netMoved, type: 'io.wanmig.migration.completed' }, false],
  ['NetMovedEvent', { ...netMoved, data: { ...netMoved.data, addresses: ['10.0.0.300'] } }, false],
  ['NetMovedHookAnswer', { applied: true }, true],
  ['NetMovedHookAnswer', { applied: false, reason: 'VIP pool full', controller: 'lb-1' }, true],
  ['NetMovedHookAnswer', { applied: 'yes' }, false],
  ['NetMovedReply', movedReply, true],
  [
    'NetMovedReply',
    { ...movedReply, confirmations: [], confirmed: false, reason: 'no controller listens on the hook' },
    true,
  ],
  ['NetMovedReply', { ...movedReply, confirmed: undefined }, false],
  [
    'RouteMoveReply',
    {
      migrationId: migration.id,
      toSite: 'site-b',
      netns: 'wm1a2b3c-r',
      routes: [{ address: '10.0.0.5', prefix: '10.0.0.5/32', via: '10.200.0.10', route: '10.0.0.5 via 10.200.0.10' }],
    },
    true,
  ],
  ['RouteMoveReply', { migrationId: migration.id, toSite: 'site-b', routes: [{ address: '10.0.0.5' }] }, false],
  ['RelayStatusReply', relay, true],
  [
    'RelayStatusReply',
    { ...relay, state: 'stopped', stoppedAt: '2025-01-01T10:01:01.000Z', stoppedReason: 'idle', pid: undefined },
    true,
  ],
  ['RelayStatusReply', { ...relay, state: 'paused' }, false],
  ['RelayStatusReply', { ...relay, stoppedReason: 'tired' }, false],
  ['RelayStatusReply', { ...relay, bytes: { in: -1, out: 0 } }, false],
  ['VmNicStatus', nic, true],
  [
    'VmNicStatus',
    { ...nic, state: 'detached', relay: undefined, tunnelHost: undefined, stoppedReason: 'idle', pids: [] },
    true,
  ],
  ['VmNicStatus', { ...nic, state: 'moving' }, false],
  ['VmNicStatus', { ...nic, connections: { ...nic.connections, relayed: undefined } }, false],
  ['VmNicStatus', { ...nic, ports: [{ port: 70000 }] }, false],
  [
    'VmRelayRequest',
    { vmId: 'shop', tunnelHost: '10.200.2.2', tunnels: [{ port: 7000, tunnelPort: 40999 }], maxMs: 60_000 },
    true,
  ],
  ['VmRelayRequest', { vmId: 'shop', tunnelHost: '10.200.2.2', tunnels: [{ port: 7000 }], maxMs: 60_000 }, false],
];

describe('API_SCHEMAS', () => {
  it('are standalone 2020-12 schemas that compile in strict mode, titled by their name', () => {
    const ajv = schemaValidator();
    for (const name of names) {
      expect(API_SCHEMAS[name]).toMatchObject({ $schema: JSON_SCHEMA_DIALECT, title: name });
      expect(() => ajv.compile(API_SCHEMAS[name]), name).not.toThrow();
    }
  });

  it('are frozen', () => {
    expect(Object.isFrozen(API_SCHEMAS.MigrationView.properties)).toBe(true);
    expect(() => {
      (API_SCHEMAS.VmRef.required as string[]).push('x');
    }).toThrow(TypeError);
  });

  it.each(REPLY_CASES.map(([name, body, valid]) => [name, valid, body] as const))(
    '%s accepts a reply: %s (%j)',
    (name, valid, body) => {
      const validate = schemaValidator().compile(API_SCHEMAS[name]);
      expect(validate(body), JSON.stringify(validate.errors)).toBe(valid);
    },
  );

  it('match the committed docs/schemas files', async () => {
    if (process.env.UPDATE_SCHEMAS === '1') {
      await mkdir(SCHEMA_DIR, { recursive: true });
      for (const file of await readdir(SCHEMA_DIR)) {
        if (file.endsWith(SUFFIX) && !names.includes(file.slice(0, -SUFFIX.length) as ApiSchemaName)) {
          await rm(`${SCHEMA_DIR}${file}`);
        }
      }
      for (const name of names) await writeFile(`${SCHEMA_DIR}${name}${SUFFIX}`, await render(name));
    }
    const files = (await readdir(SCHEMA_DIR)).filter((file) => file.endsWith(SUFFIX)).sort();
    expect(files, 'run with UPDATE_SCHEMAS=1 to regenerate').toEqual(names.map((name) => `${name}${SUFFIX}`).sort());
    for (const name of names) {
      const committed = await readFile(`${SCHEMA_DIR}${name}${SUFFIX}`, 'utf8');
      // Compared as data, so reformatting a file is no failure; a changed schema is.
      expect(JSON.parse(committed), `${name}: run with UPDATE_SCHEMAS=1 to regenerate`).toEqual(API_SCHEMAS[name]);
    }
  });

  it('render as the repository formats JSON', async () => {
    const text = await render('VmRef');
    expect(text.endsWith('}\n')).toBe(true);
    expect(JSON.parse(text)).toEqual(API_SCHEMAS.VmRef);
  });
});
