import { isAbsolute } from 'node:path';
import { GuestConfigError } from '../errors.js';
import { type NbdDiskAddress, parseNbdUri } from './nbd.uri.js';
import {
  DEFAULT_PAGE_CACHE_BYTES,
  MAX_RAM_BYTES,
  MIN_RAM_BYTES,
  SIM_PAGE_SIZE,
  SIM_WORKLOADS,
  SimWorkload,
  VM_ID_PATTERN,
  isSimWorkload,
} from './sim.constants.js';

/** What a guest process is told on its command line (see `toGuestArgs` / `parseGuestArgs`). */
export interface GuestOptions {
  vmId: string;
  ramFile: string;
  ramBytes: number;
  /** Runtime directory: control socket, runtime info file. */
  runtimeDir: string;
  /** Ignored for an incoming guest: the device state says which workload to continue. */
  workload: SimWorkload;
  seed: number;
  diskUri?: string;
  /** TCP port of the guest's service on 127.0.0.1; 0 picks a free one. */
  servicePort: number;
  /** Start without running and wait for `resumeIncoming`. */
  incoming: boolean;
  /** Exit when this process is gone (the launcher), unless launched detached. */
  parentPid?: number;
  pageCacheBytes: number;
}

export interface ParsedGuestOptions extends GuestOptions {
  disk?: NbdDiskAddress;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
};

/** "64MiB", "4GiB", "134217728" → bytes; NaN when unreadable. */
export function parseByteSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  return m && unit !== undefined ? Math.round(Number(m[1]) * unit) : NaN;
}

/** Problems with a RAM size, empty when it is fine. */
export function ramSizeProblems(ramBytes: number): string[] {
  if (!Number.isSafeInteger(ramBytes)) return [`RAM size must be a whole number of bytes, got ${ramBytes}`];
  if (ramBytes < MIN_RAM_BYTES || ramBytes > MAX_RAM_BYTES) {
    return [`RAM size must be within 64 MiB..4 GiB, got ${ramBytes} bytes`];
  }
  if (ramBytes % SIM_PAGE_SIZE !== 0) return [`RAM size must be a multiple of ${SIM_PAGE_SIZE}, got ${ramBytes}`];
  return [];
}

export function vmIdProblems(vmId: string): string[] {
  return VM_ID_PATTERN.test(vmId) ? [] : [`vm id ${JSON.stringify(vmId)} must match ${VM_ID_PATTERN.source}`];
}

const FLAGS = new Set([
  'vm-id',
  'ram-file',
  'ram',
  'runtime-dir',
  'workload',
  'seed',
  'disk',
  'service-port',
  'parent-pid',
  'page-cache',
]);
const SWITCHES = new Set(['incoming']);

/** Parses and validates a guest command line, reporting every bad flag at once (GuestConfigError). */
export function parseGuestArgs(argv: readonly string[]): ParsedGuestOptions {
  const values = new Map<string, string>();
  const switches = new Set<string>();
  const problems: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const name = arg.startsWith('--') ? arg.slice(2) : '';
    if (SWITCHES.has(name)) switches.add(name);
    else if (FLAGS.has(name)) {
      if (i + 1 >= argv.length) problems.push(`--${name} needs a value`);
      else values.set(name, argv[++i]);
    } else problems.push(`unknown argument ${JSON.stringify(arg)}`);
  }
  const incoming = switches.has('incoming');
  const required = (name: string): string => {
    const v = values.get(name);
    if (v === undefined) problems.push(`--${name} is required`);
    return v ?? '';
  };
  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const text = values.get(name);
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
      problems.push(`--${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(text)}`);
    }
    return n;
  };

  const vmId = required('vm-id');
  if (values.has('vm-id')) problems.push(...vmIdProblems(vmId));
  const ramFile = required('ram-file');
  const runtimeDir = required('runtime-dir');
  for (const [flag, path] of [
    ['ram-file', ramFile],
    ['runtime-dir', runtimeDir],
  ] as const) {
    if (path && !isAbsolute(path)) problems.push(`--${flag} must be an absolute path, got ${JSON.stringify(path)}`);
  }
  const ramText = required('ram');
  const ramBytes = parseByteSize(ramText);
  if (ramText) problems.push(...ramSizeProblems(ramBytes).map((p) => `--ram: ${p}`));
  const workloadText = values.get('workload') ?? (incoming ? SimWorkload.Idle : undefined);
  if (workloadText === undefined) problems.push('--workload is required');
  else if (!isSimWorkload(workloadText)) {
    problems.push(`--workload must be one of ${SIM_WORKLOADS.join(', ')}, got ${JSON.stringify(workloadText)}`);
  }
  const seed = integer('seed', 1, 0, 2 ** 32 - 1);
  const servicePort = integer('service-port', 0, 0, 65535);
  const parentPid = values.has('parent-pid') ? integer('parent-pid', 0, 1, 2 ** 31 - 1) : undefined;
  const pageCacheText = values.get('page-cache');
  const pageCacheBytes = pageCacheText === undefined ? DEFAULT_PAGE_CACHE_BYTES : parseByteSize(pageCacheText);
  if (!(pageCacheBytes >= SIM_PAGE_SIZE)) problems.push(`--page-cache must be at least ${SIM_PAGE_SIZE} bytes`);
  const diskUri = values.get('disk');
  let disk: NbdDiskAddress | undefined;
  if (diskUri !== undefined) {
    const parsed = parseNbdUri(diskUri);
    if ('error' in parsed) problems.push(`--disk: ${parsed.error}`);
    else disk = parsed;
  }
  if (problems.length > 0) throw new GuestConfigError(problems, { vmId: vmId || undefined });
  return {
    vmId,
    ramFile,
    ramBytes,
    runtimeDir,
    workload: workloadText as SimWorkload,
    seed,
    diskUri,
    disk,
    servicePort,
    incoming,
    parentPid,
    pageCacheBytes,
  };
}

/** The command line that `parseGuestArgs` reads back into `options`. */
export function toGuestArgs(options: GuestOptions): string[] {
  const args = [
    '--vm-id',
    options.vmId,
    '--ram-file',
    options.ramFile,
    '--ram',
    String(options.ramBytes),
    '--runtime-dir',
    options.runtimeDir,
    '--workload',
    options.workload,
    '--seed',
    String(options.seed),
    '--service-port',
    String(options.servicePort),
    '--page-cache',
    String(options.pageCacheBytes),
  ];
  if (options.diskUri !== undefined) args.push('--disk', options.diskUri);
  if (options.parentPid !== undefined) args.push('--parent-pid', String(options.parentPid));
  if (options.incoming) args.push('--incoming');
  return args;
}
