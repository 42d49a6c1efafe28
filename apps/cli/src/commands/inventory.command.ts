import { parseArgs } from 'node:util';
import { GUEST_SERVICE_PORT, VmVerb, type ListVmsReply, type VmView } from '@wanmig/protocol';
import { formatBytes, parseSize } from '@wanmig/service';
import { OrchestratorClient } from '../api/orchestrator.client.js';
import { UsageError } from '../errors.js';
import { table } from './table.js';

export const INVENTORY_USAGE = `  wanmig vm create NAME [--site site-a] [--ram 256MiB] [--disk 256MiB] [--workload idle|web|db|write-heavy]
                   [--seed N] [--address IP]... [--json]
  wanmig vm list [--json]
  wanmig vm rm NAME
  (each takes --nats URL; by default the stack that \`wanmig up\` started)`;

type Out = (text: string) => void;

export async function vmCreate(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      site: { type: 'string', default: 'site-a' },
      ram: { type: 'string', default: '256MiB' },
      disk: { type: 'string', default: '256MiB' },
      workload: { type: 'string', default: 'web' },
      seed: { type: 'string' },
      address: { type: 'string', multiple: true },
      nats: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const vmId = one(positionals, 'vm create NAME');
  const addresses = values.address ?? [];
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    const vm = await client.call<VmView>(
      values.site,
      VmVerb.Create,
      {
        vmId,
        ramBytes: parseSize(values.ram, '--ram'),
        diskBytes: parseSize(values.disk, '--disk'),
        workload: values.workload,
        ...(values.seed !== undefined ? { seed: Number(values.seed) } : {}),
        ...(addresses.length ? { addresses } : {}),
      },
      120_000,
    );
    const at = vm.addresses?.length ? ` (and ${vm.addresses.map((a) => `${a}:${GUEST_SERVICE_PORT}`).join(', ')})` : '';
    out(values.json ? JSON.stringify(vm) : `${vm.vmId} runs at ${vm.site}, service ${vm.serviceAddress ?? '-'}${at}`);
    return 0;
  } finally {
    await client.close();
  }
}

export async function vmList(argv: string[], out: Out): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { nats: { type: 'string' }, json: { type: 'boolean' } } });
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    const vms: VmView[] = [];
    for (const site of await client.reachableSites()) {
      vms.push(...(await client.call<ListVmsReply>(site, VmVerb.List)).vms);
    }
    if (values.json) out(JSON.stringify({ vms }));
    else
      out(
        table(
          ['VM', 'SITE', 'STATE', 'RAM', 'DISK', 'WORKLOAD', 'SERVICE', 'ADDRESSES'],
          vms.map((v) => [
            v.vmId,
            v.site,
            v.state,
            formatBytes(v.ramBytes),
            formatBytes(v.diskBytes),
            v.workload,
            v.serviceAddress ?? '-',
            v.addresses?.join(',') ?? '-',
          ]),
        ),
      );
    return 0;
  } finally {
    await client.close();
  }
}

export async function vmRemove(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { nats: { type: 'string' } },
  });
  const vmId = one(positionals, 'vm rm NAME');
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    const vm = await client.findVm(vmId);
    await client.call(vm.site, VmVerb.Remove, { vmId }, 60_000);
    out(`${vmId} removed from ${vm.site}`);
    return 0;
  } finally {
    await client.close();
  }
}

export function one(positionals: string[], usage: string): string {
  if (positionals.length !== 1) throw new UsageError(`usage: wanmig ${usage}`);
  return positionals[0];
}
