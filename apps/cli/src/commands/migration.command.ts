import { parseArgs } from 'node:util';
import {
  MigrationEventSubjects,
  MigrationVerb,
  type CloudEvent,
  type ListMigrationsReply,
  type MigrationView,
} from '@wanmig/protocol';
import { formatBytes, parseBitRate, parseDuration } from '@wanmig/service';
import { OrchestratorClient } from '../api/orchestrator.client.js';
import { UsageError } from '../errors.js';
import { ProgressDisplay } from '../progress.display.js';
import { one } from './inventory.command.js';
import { followMigration, phaseTimeline } from './migration.follower.js';
import { table } from './table.js';

export const MIGRATION_USAGE = `  wanmig migrate VM --to SITE [--bandwidth RATE] [--downtime 300ms] [--policy smart|kvm] [--no-verify]
                 [--service-deadline 60s] [--follow] [--json]
  wanmig status [ID] [--json]
  wanmig abort ID
  wanmig events [ID] [--for 30s] [--json]   (ID: replay its stored events; none: watch all sites live)`;

type Out = (text: string) => void;

export async function migrate(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      to: { type: 'string' },
      bandwidth: { type: 'string' },
      downtime: { type: 'string', default: '300ms' },
      policy: { type: 'string', default: 'smart' },
      'no-verify': { type: 'boolean' },
      'service-deadline': { type: 'string' },
      follow: { type: 'boolean' },
      nats: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const vmId = one(positionals, 'migrate VM --to SITE');
  if (!values.to) throw new UsageError('migrate needs --to SITE');
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    const vm = await client.findVm(vmId);
    const created = await client.call<MigrationView>(vm.site, MigrationVerb.Create, {
      vmId,
      toSite: values.to,
      downtimeMs: parseDuration(values.downtime, '--downtime'),
      policy: values.policy,
      verify: values['no-verify'] !== true,
      ...(values.bandwidth ? { bandwidthBps: parseBitRate(values.bandwidth, '--bandwidth') } : {}),
      ...(values['service-deadline']
        ? { serviceDeadlineMs: parseDuration(values['service-deadline'], '--service-deadline') }
        : {}),
    });
    if (!values.follow) {
      out(values.json ? JSON.stringify(created) : `migration ${created.id}: ${vmId} ${vm.site} → ${values.to} started`);
      return 0;
    }
    process.stderr.write(`migration ${created.id}: ${vmId} ${vm.site} → ${values.to}\n`);
    const done = await followMigration(client, vm.site, created.id, { display: new ProgressDisplay() });
    out(formatMigration(done));
    if (values.json) out(JSON.stringify(done));
    return done.phase === 'COMMITTED' ? 0 : 1;
  } finally {
    await client.close();
  }
}

export async function status(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { nats: { type: 'string' }, json: { type: 'boolean' } },
  });
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    if (positionals.length > 0) {
      const { migration } = await client.findMigration(one(positionals, 'status [ID]'));
      out(values.json ? JSON.stringify(migration) : formatMigration(migration));
      return 0;
    }
    const all: MigrationView[] = [];
    for (const site of await client.reachableSites()) {
      all.push(...(await client.call<ListMigrationsReply>(site, MigrationVerb.List)).migrations);
    }
    all.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    if (values.json) out(JSON.stringify({ migrations: all }));
    else
      out(
        table(
          ['ID', 'VM', 'FROM', 'TO', 'PHASE', 'STARTED', 'DOWNTIME'],
          all.map((m) => [
            m.id,
            m.vmId,
            m.fromSite,
            m.toSite,
            m.phase,
            m.createdAt.slice(0, 19).replace('T', ' '),
            m.figures?.downtimeMs !== undefined ? `${m.figures.downtimeMs} ms` : '-',
          ]),
        ),
      );
    return 0;
  } finally {
    await client.close();
  }
}

export async function abort(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { nats: { type: 'string' } },
  });
  const id = one(positionals, 'abort ID');
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    const { site } = await client.findMigration(id);
    const record = await client.call<MigrationView>(site, MigrationVerb.Abort, { migrationId: id });
    out(`migration ${id}: ${record.phase} (the source keeps the VM; the destination is cleaned up)`);
    return 0;
  } finally {
    await client.close();
  }
}

export async function events(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { nats: { type: 'string' }, json: { type: 'boolean' }, for: { type: 'string' } },
  });
  const client = await OrchestratorClient.connect({ nats: values.nats });
  const print = (e: CloudEvent) => out(values.json ? JSON.stringify(e) : formatEvent(e));
  try {
    if (positionals.length > 0) {
      const id = one(positionals, 'events [ID]');
      const { site } = await client.findMigration(id);
      for (const e of await client.call<CloudEvent[]>(site, MigrationVerb.Events, { migrationId: id })) print(e);
      return 0;
    }
    // Live: every site's events until --for runs out or the user interrupts.
    const sub = client.nc.subscribe(MigrationEventSubjects.all());
    const limitMs = values.for ? parseDuration(values.for, '--for') : undefined;
    const timer = limitMs ? setTimeout(() => sub.unsubscribe(), limitMs) : undefined;
    const stop = () => sub.unsubscribe();
    process.once('SIGINT', stop);
    for await (const msg of sub) {
      try {
        print(msg.json<CloudEvent>());
      } catch {
        // Not a CloudEvent: skip it.
      }
    }
    clearTimeout(timer);
    process.off('SIGINT', stop);
    return 0;
  } finally {
    await client.close();
  }
}

function formatEvent(e: CloudEvent): string {
  const kind = e.type.replace('io.wanmig.migration.', '');
  const data = e.data as { from?: string; to?: string; note?: string; phase?: string; downtimeMs?: number };
  const detail =
    kind === 'phase-changed'
      ? `${data.from || '-'} → ${data.to ?? '?'}${data.note ? ` (${data.note})` : ''}`
      : kind === 'progress'
        ? (data.phase ?? '')
        : kind === 'downtime-measured'
          ? `${data.downtimeMs ?? '?'} ms`
          : '';
  return `${e.time}  ${e.subject}  ${kind.padEnd(17)} ${detail}`;
}

export function formatMigration(m: MigrationView): string {
  const f = m.figures ?? {};
  const rows: Array<[string, string]> = [
    ['migration', m.id],
    ['VM', `${m.vmId}: ${m.fromSite} → ${m.toSite}`],
    ['phase', m.phase],
    [
      'timeline',
      phaseTimeline(m)
        .map((p) => `${p.name} ${((Date.parse(p.end) - Date.parse(p.start)) / 1000).toFixed(2)} s`)
        .join(', '),
    ],
  ];
  if (f.downtimeMs !== undefined)
    rows.push([
      'downtime',
      `${f.downtimeMs} ms paused (disk final drain ${f.diskFinalizeMs ?? 0} ms, RAM check ${f.ramCheckMs ?? 0} ms)`,
    ]);
  if (f.diskRawBytes !== undefined)
    rows.push(['disk', `${formatBytes(f.diskRawBytes)} sent as ${formatBytes(f.diskWireBytes ?? 0)} of frames`]);
  if (f.memoryRawBytes !== undefined)
    rows.push([
      'memory',
      `${formatBytes(f.memoryRawBytes)} sent as ${formatBytes(f.memoryWireBytes ?? 0)} of frames in ${f.memoryRounds ?? 0} rounds`,
    ]);
  if (f.diskVerified !== undefined || f.ramVerified !== undefined)
    rows.push([
      'verified',
      `disk ${yes(f.diskVerified)}, RAM ${yes(f.ramVerified)}, answers at both ends ${f.answersMatch ? 'same' : 'DIFFER'}`,
    ]);
  if (f.serviceAddress) rows.push(['service', f.serviceAddress]);
  if (m.error) rows.push(['error', `${m.error.code}: ${m.error.message}`]);
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

function yes(value: boolean | undefined): string {
  return value === undefined ? 'not checked' : value ? 'equal' : 'DIFFERENT';
}
