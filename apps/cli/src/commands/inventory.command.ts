import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  GUEST_SERVICE_PORT,
  QEMU_GUESTS,
  VM_DRIVERS,
  VmVerb,
  type ListVmsReply,
  type QemuGuest,
  type VmDriver,
  type VmView,
} from '@wanmig/protocol';
import { formatBytes, parseSize } from '@wanmig/service';
import { OrchestratorClient } from '../api/orchestrator.client.js';
import { UsageError } from '../errors.js';
import { table } from './table.js';

export const INVENTORY_USAGE = `  wanmig vm create NAME [--site site-a] [--ram 256MiB] [--disk 256MiB] [--workload idle|web|db|write-heavy]
                   [--seed N] [--address IP]... [--json]
  wanmig vm create NAME --driver qemu --guest test [--site site-a] [--ram 256MiB] [--cpus N] [--json]
                       a real QEMU VM (the test guest), launched on a copy of its image
  wanmig vm adopt NAME --qmp SOCKET --disk NODE [--site site-a] [--json]
                       a QEMU you started at the site becomes its VM (its QMP socket, its disk's block node)
  wanmig vm list [--json]
  wanmig vm rm NAME
  (each takes --nats URL; by default the stack that \`wanmig up\` started; and --help)`;

type Out = (text: string) => void;

const MiB = 2 ** 20;
const DEFAULT_RAM = '256MiB';
/** A QEMU VM boots its guest before vm.create answers (TCG on a loaded host: minutes). */
const QEMU_CREATE_TIMEOUT_MS = 300_000;
const SIM_CREATE_TIMEOUT_MS = 120_000;
const IMPORT_TIMEOUT_MS = 60_000;
/** Options of `vm create` that only one driver takes. */
const SIM_ONLY = ['disk', 'workload', 'seed', 'address'] as const;
const QEMU_ONLY = ['guest', 'cpus'] as const;

export async function vmCreate(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      site: { type: 'string', default: 'site-a' },
      driver: { type: 'string', default: 'sim' },
      guest: { type: 'string' },
      cpus: { type: 'string' },
      ram: { type: 'string', default: DEFAULT_RAM },
      disk: { type: 'string' },
      workload: { type: 'string' },
      seed: { type: 'string' },
      address: { type: 'string', multiple: true },
      nats: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return usage(out);
  const vmId = one(positionals, 'vm create NAME');
  const driver = values.driver as VmDriver;
  if (!VM_DRIVERS.includes(driver)) throw new UsageError(`--driver is ${VM_DRIVERS.join(' or ')}`);
  const ramBytes = parseSize(values.ram, '--ram');
  let body: Record<string, unknown>;
  if (driver === 'qemu') {
    const given = SIM_ONLY.filter((key) => values[key] !== undefined);
    if (given.length > 0)
      throw new UsageError(`--${given.join(', --')}: for sim VMs (a qemu VM runs its guest's own disk and workload)`);
    const guest = values.guest as QemuGuest | undefined;
    if (guest === undefined || !QEMU_GUESTS.includes(guest))
      throw new UsageError(`--driver qemu needs --guest ${QEMU_GUESTS.join('|')} (the guest to launch)`);
    // QEMU sizes RAM in MiB: 500MB is 500,000,000 bytes (MB is decimal, M is MiB), not a whole number of them.
    if (ramBytes % MiB !== 0) {
      const decimal = /^(\d+)\s*([mg])b?$/i.exec(values.ram);
      const hint = decimal ? `${decimal[1]}${decimal[2].toUpperCase()}iB` : `${Math.round(ramBytes / MiB)}MiB`;
      throw new UsageError(`--ram ${values.ram} is ${ramBytes} bytes: a qemu VM's RAM is whole MiB (try ${hint})`);
    }
    const cpus = values.cpus === undefined ? undefined : Number(values.cpus);
    if (cpus !== undefined && !(Number.isInteger(cpus) && cpus >= 1))
      throw new UsageError('--cpus is a whole number, 1 or more');
    body = { vmId, driver, guest, ramBytes, ...(cpus !== undefined ? { cpus } : {}) };
  } else {
    const given = QEMU_ONLY.filter((key) => values[key] !== undefined);
    if (given.length > 0) throw new UsageError(`--${given.join(', --')}: for --driver qemu`);
    const addresses = values.address ?? [];
    body = {
      vmId,
      ramBytes,
      diskBytes: parseSize(values.disk ?? DEFAULT_RAM, '--disk'),
      workload: values.workload ?? 'web',
      ...(values.seed !== undefined ? { seed: Number(values.seed) } : {}),
      ...(addresses.length ? { addresses } : {}),
    };
  }
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    const timeoutMs = driver === 'qemu' ? QEMU_CREATE_TIMEOUT_MS : SIM_CREATE_TIMEOUT_MS;
    const vm = await client.call<VmView>(values.site, VmVerb.Create, body, timeoutMs);
    out(values.json ? JSON.stringify(vm) : runsAt(vm));
    return 0;
  } finally {
    await client.close();
  }
}

/** `wanmig vm adopt`: a QEMU the user started at the site, taken over as its VM (vm.import). */
export async function vmAdopt(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      site: { type: 'string', default: 'site-a' },
      qmp: { type: 'string' },
      disk: { type: 'string' },
      nats: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return usage(out);
  const form = 'vm adopt NAME --qmp SOCKET --disk NODE';
  const vmId = one(positionals, form);
  if (values.qmp === undefined || values.disk === undefined) throw new UsageError(`usage: wanmig ${form}`);
  const client = await OrchestratorClient.connect({ nats: values.nats });
  try {
    // The socket is named as this shell sees it: the orchestrator of a local stack runs on the same host.
    const body = { vmId, qmpSocket: resolve(values.qmp), diskNode: values.disk };
    const vm = await client.call<VmView>(values.site, VmVerb.Import, body, IMPORT_TIMEOUT_MS);
    out(values.json ? JSON.stringify(vm) : `${runsAt(vm)}, on its own image ${vm.diskPath}`);
    return 0;
  } finally {
    await client.close();
  }
}

export async function vmList(argv: string[], out: Out): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { nats: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) return usage(out);
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
          ['VM', 'SITE', 'DRIVER', 'STATE', 'RAM', 'DISK', 'WORKLOAD', 'SERVICE', 'ADDRESSES'],
          vms.map((v) => [
            v.vmId,
            v.site,
            // Records older than the qemu driver have none: they are sim VMs.
            v.driver ?? 'sim',
            v.state,
            formatBytes(v.ramBytes),
            formatBytes(v.diskBytes),
            // A QEMU guest runs its own workload: the column is the sim driver's.
            v.driver === 'qemu' ? '-' : v.workload,
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
    options: { nats: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) return usage(out);
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

export function one(positionals: string[], form: string): string {
  if (positionals.length !== 1) throw new UsageError(`usage: wanmig ${form}`);
  return positionals[0];
}

function usage(out: Out): number {
  out(`usage:\n${INVENTORY_USAGE}`);
  return 0;
}

function runsAt(vm: VmView): string {
  const at = vm.addresses?.length ? ` (and ${vm.addresses.map((a) => `${a}:${GUEST_SERVICE_PORT}`).join(', ')})` : '';
  return `${vm.vmId} runs at ${vm.site}, service ${vm.serviceAddress ?? '-'}${at}`;
}
