/**
 * A running QEMU's command line read back (`/proc/<pid>/cmdline`): the machine a migration's destination would have
 * to start, and the unix sockets of its QMP monitors. A destination starts one shape (guestArgs): direct kernel
 * boot, `-nodefaults`, the disk as a raw file image on a virtio-blk-pci, then one virtio-net-pci on a user-mode
 * netdev forwarding one TCP port from 127.0.0.1. QEMU migrates RAM and device state, not the machine's shape, so
 * anything else on the command line would make the destination refuse the stream: it is named as a problem here
 * instead of failing a migration later. Pure: argv in, findings out.
 */
import { resolve } from 'node:path';
import type { QemuVmSpec } from './qemu.vm.js';
import { Accelerator } from './marker.boot.js';
import { QemuMachine } from './qemu.driver.js';

/** One option of a QEMU command line: `-name value`, or a flag without value. */
export interface QemuOption {
  name: string;
  value?: string;
}

/**
 * The machine a QEMU runs, as its command line gives it (the fields of QemuVmSpec but the VM id). Its `accel` is the
 * first accelerator asked for (QEMU falls back to the next when it cannot start it): QMP knows for sure.
 */
export type QemuCommandLineMachine = Omit<QemuVmSpec, 'vmId'>;

export interface QemuCommandLineReading {
  /** Present when there are no problems. */
  machine?: QemuCommandLineMachine;
  /** Why a destination could not start the same machine, one line each, naming the option. */
  problems: string[];
}

/** Options that take no value (a value would otherwise be read as the next word). */
const FLAGS = new Set([
  'nodefaults',
  'no-user-config',
  'no-reboot',
  'no-shutdown',
  'daemonize',
  'S',
  's',
  'enable-kvm',
  'nographic',
  'snapshot',
  'usb',
  'no-acpi',
  'no-hpet',
  'enable-fips',
  'only-migratable',
  'preconfig',
  'full-screen',
  'no-fd-bootchk',
]);
/** Options read below, which take a value even when it starts with '-'. */
const VALUED = new Set([
  'kernel',
  'initrd',
  'append',
  'm',
  'smp',
  'machine',
  'M',
  'accel',
  'netdev',
  'blockdev',
  'device',
]);
/** Options that shape nothing the guest sees (monitors, logs, the host process): a destination need not repeat them. */
const HOST_SIDE = new Set([
  'name',
  'display',
  'nographic',
  'vnc',
  'no-user-config',
  'no-reboot',
  'no-shutdown',
  'daemonize',
  'pidfile',
  'qmp',
  'qmp-pretty',
  'mon',
  'monitor',
  'chardev',
  'D',
  'd',
  'msg',
  'trace',
  'sandbox',
  'runas',
  'run-with',
  'S',
  's',
  'only-migratable',
  'enable-fips',
  'full-screen',
  'preconfig',
]);
/** Disks given otherwise than as `-blockdev` (a bare word is a disk image too: `-hda`). */
const LEGACY_DISKS = new Set(['drive', 'hda', 'hdb', 'hdc', 'hdd', 'cdrom', 'fda', 'fdb', 'sd', 'mtdblock', 'pflash']);
const LEGACY_NICS = new Set(['nic', 'net']);
/** TCG's tuning knobs: they change nothing the guest or its migration stream sees. */
const TCG_PROPERTIES = new Set(['thread', 'tb-size', 'one-insn-per-tb']);
const DEFAULT_RAM_MIB = 128;
const MIB = 2 ** 20;
const SIZE_SUFFIX: Record<string, number> = { B: 1, K: 2 ** 10, M: MIB, G: 2 ** 30, T: 2 ** 40 };
const DISK_DEVICE = 'virtio-blk-pci';
const NIC_DEVICE = 'virtio-net-pci';
const UNIX_PREFIX = 'unix:';

/** Splits QEMU's arguments (without argv[0]) into options; a bare word becomes `-hda`, as QEMU reads it. */
export function qemuOptions(args: readonly string[]): QemuOption[] {
  const options: QemuOption[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (!arg.startsWith('-') || arg === '-') {
      options.push({ name: 'hda', value: arg });
      continue;
    }
    const name = arg.replace(/^--?/, '');
    const next = args[i + 1];
    if (FLAGS.has(name) || next === undefined || (!VALUED.has(name) && next.startsWith('-'))) {
      options.push({ name });
    } else {
      options.push({ name, value: next });
      i++;
    }
  }
  return options;
}

/**
 * QEMU's option syntax: `a,b=c,,d` → `[['<implied>', 'a'], ['b', 'c,d']]` (a doubled comma is a comma; a first part
 * without `=` is the implied key's value; a later one is a flag, `on`).
 */
export function qemuOpts(text: string, implied: string): [string, string][] {
  const parts: string[] = [];
  let part = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== ',') part += text[i];
    else if (text[i + 1] === ',') {
      part += ',';
      i++;
    } else {
      parts.push(part);
      part = '';
    }
  }
  parts.push(part);
  return parts.map((p, i) => {
    const eq = p.indexOf('=');
    if (eq >= 0) return [p.slice(0, eq), p.slice(eq + 1)];
    return i === 0 ? [implied, p] : [p, 'on'];
  });
}

/**
 * The unix sockets of a QEMU's QMP monitors (`-qmp unix:PATH`, or a socket `-chardev` that a `-mon mode=control`
 * uses), resolved against the QEMU's working directory.
 */
export function qmpSocketPaths(argv: readonly string[], cwd = '/'): string[] {
  const options = qemuOptions(argv.slice(1));
  const chardevs = new Map<string, string>();
  for (const { name, value } of options) {
    if (name !== 'chardev' || value === undefined) continue;
    const opts = new Map(qemuOpts(value, 'backend'));
    const id = opts.get('id');
    const path = opts.get('path');
    if (opts.get('backend') === 'socket' && id !== undefined && path !== undefined) chardevs.set(id, path);
  }
  const paths: string[] = [];
  for (const { name, value } of options) {
    if (value === undefined) continue;
    if (name === 'qmp' || name === 'qmp-pretty') {
      const spec = qemuOpts(value, 'spec')[0][1];
      if (spec.startsWith(UNIX_PREFIX)) paths.push(spec.slice(UNIX_PREFIX.length));
    } else if (name === 'mon') {
      const opts = new Map(qemuOpts(value, 'chardev'));
      const path = chardevs.get(opts.get('chardev') ?? '');
      if (opts.get('mode') === 'control' && path !== undefined) paths.push(path);
    }
  }
  return paths.map((path) => resolve(cwd, path));
}

/**
 * Reads the machine of a QEMU's command line (`argv` as in /proc/<pid>/cmdline, argv[0] the binary) whose disk is
 * block node `diskNode`; relative paths are resolved against `cwd`, the QEMU's working directory.
 */
export function readQemuCommandLine(
  argv: readonly string[],
  o: { diskNode: string; cwd?: string },
): QemuCommandLineReading {
  const cwd = o.cwd ?? '/';
  const options = qemuOptions(argv.slice(1));
  const values = (name: string) => options.filter((opt) => opt.name === name).map((opt) => opt.value ?? '');
  const last = (name: string) => values(name).at(-1);
  const problems: string[] = [];

  for (const { name, value } of options) {
    if (VALUED.has(name) || FLAGS.has(name) || HOST_SIDE.has(name) || name === 'serial') continue;
    const shown = `-${name}${value === undefined ? '' : ` ${value}`}`;
    if (LEGACY_DISKS.has(name)) problems.push(`${shown}: only raw file images given as -blockdev are supported`);
    else if (LEGACY_NICS.has(name))
      problems.push(`${shown}: only user-mode NICs given as -netdev user with -device ${NIC_DEVICE} are supported`);
    else problems.push(`${shown}: a destination would start the VM without it`);
  }
  for (const flag of FLAGS) {
    if (flag === 'nodefaults' || flag === 'enable-kvm' || HOST_SIDE.has(flag) || !values(flag).length) continue;
    problems.push(`-${flag}: a destination would start the VM without it`);
  }
  if (!values('nodefaults').length)
    problems.push('no -nodefaults: QEMU adds default devices (VGA, CD-ROM...) that a destination does not start');
  if (values('serial').length > 1) problems.push('more than one -serial: a destination starts one serial port');

  const kernel = last('kernel');
  const initrd = last('initrd');
  if (kernel === undefined || initrd === undefined)
    problems.push('no -kernel and -initrd: only direct kernel boot is supported (a destination boots the same files)');

  const machine = readMachine(values('machine').concat(values('M')), problems);
  const accel = readAccel(options, machine.accels, problems);
  const ramMiB = readRam(last('m'), problems);
  const cpus = readCpus(last('smp'), problems);
  const diskPath = readDisk(values('blockdev'), o.diskNode, cwd, problems);
  const nic = readDevices(values('device'), values('netdev'), o.diskNode, problems);

  if (problems.length > 0 || kernel === undefined || initrd === undefined || !diskPath || !nic) return { problems };
  return {
    machine: {
      kernel: resolve(cwd, kernel),
      initrd: resolve(cwd, initrd),
      append: last('append') ?? '',
      machine: machine.type as QemuMachine,
      accel,
      ramMiB,
      cpus,
      diskPath,
      diskNode: o.diskNode,
      ...nic,
    },
    problems,
  };
}

function readMachine(specs: string[], problems: string[]): { type: string; accels: string[] } {
  // QEMU's default machine for x86_64; several -machine options merge, later keys winning.
  let type: string = QemuMachine.Pc;
  const accels: string[] = [];
  for (const spec of specs) {
    for (const [key, value] of qemuOpts(spec, 'type')) {
      if (key === 'type') type = value;
      else if (key === 'accel') accels.push(...value.split(':'));
      else problems.push(`-machine ${key}=${value}: a destination starts the machine without it`);
    }
  }
  if (!(Object.values(QemuMachine) as string[]).includes(type))
    problems.push(`-machine ${type}: a destination starts ${Object.values(QemuMachine).join(' or ')}`);
  return { type, accels };
}

function readAccel(options: QemuOption[], fromMachine: string[], problems: string[]): Accelerator {
  const asked = [...fromMachine];
  for (const { name, value } of options) {
    if (name === 'enable-kvm') asked.push(Accelerator.Kvm);
    if (name !== 'accel' || value === undefined) continue;
    const [[, accel], ...properties] = qemuOpts(value, 'accel');
    asked.push(accel);
    for (const [key, v] of properties) {
      if (!(accel === Accelerator.Tcg && TCG_PROPERTIES.has(key)))
        problems.push(`-accel ${accel},${key}=${v}: a destination starts the accelerator without it`);
    }
  }
  for (const accel of new Set(asked)) {
    if (!(Object.values(Accelerator) as string[]).includes(accel))
      problems.push(`accelerator ${accel}: a destination runs ${Object.values(Accelerator).join(' or ')}`);
  }
  // QEMU's default for qemu-system-x86_64 is TCG.
  return (asked[0] as Accelerator | undefined) ?? Accelerator.Tcg;
}

function readRam(spec: string | undefined, problems: string[]): number {
  if (spec === undefined) return DEFAULT_RAM_MIB;
  let ramMiB = NaN;
  for (const [key, value] of qemuOpts(spec, 'size')) {
    if (key === 'size') {
      const m = /^(\d+(?:\.\d+)?)([BKMGT])?$/i.exec(value);
      ramMiB = m ? (Number(m[1]) * SIZE_SUFFIX[(m[2] ?? 'M').toUpperCase()]) / MIB : NaN;
    } else problems.push(`-m ${key}=${value}: memory hotplug is not supported (a destination starts -m SIZE)`);
  }
  if (!Number.isSafeInteger(ramMiB) || ramMiB < 1) {
    problems.push(`-m ${spec}: not a whole number of MiB`);
    return DEFAULT_RAM_MIB;
  }
  return ramMiB;
}

function readCpus(spec: string | undefined, problems: string[]): number {
  if (spec === undefined) return 1;
  const opts = new Map(qemuOpts(spec, 'cpus'));
  const cpus = Number(opts.get('cpus'));
  for (const [key, value] of opts) {
    if (key === 'cpus' || (key === 'maxcpus' && Number(value) === cpus)) continue;
    problems.push(`-smp ${key}=${value}: a destination starts -smp N (no topology, no CPU hotplug)`);
  }
  if (!Number.isSafeInteger(cpus) || cpus < 1) {
    problems.push(`-smp ${spec}: no CPU count`);
    return 1;
  }
  return cpus;
}

/** The raw file image behind block node `diskNode`: a `raw` node on a `file` node, or a `file` node itself. */
function readDisk(specs: string[], diskNode: string, cwd: string, problems: string[]): string | undefined {
  const nodes = new Map<string, Record<string, unknown>>();
  for (const spec of specs) {
    const node = blockdevObject(spec);
    if (node === undefined) problems.push(`-blockdev ${spec}: cannot be read`);
    else if (typeof node['node-name'] === 'string') nodes.set(node['node-name'], node);
  }
  const root = nodes.get(diskNode);
  if (root === undefined) {
    problems.push(`no -blockdev with node-name ${diskNode}: the disk must be given as -blockdev nodes`);
    return undefined;
  }
  let file: unknown = root;
  if (root.driver === 'raw') {
    if (root.offset !== undefined || root.size !== undefined)
      problems.push(`node ${diskNode}: a raw node with offset or size is not supported`);
    file = typeof root.file === 'string' ? nodes.get(root.file) : root.file;
  } else if (root.driver !== 'file') {
    problems.push(`node ${diskNode} is ${String(root.driver)}: only raw file images are supported`);
    return undefined;
  }
  if (!isObject(file)) {
    problems.push(`node ${diskNode}: its file node is not given as -blockdev`);
    return undefined;
  }
  if (file.driver !== 'file' || typeof file.filename !== 'string') {
    problems.push(`node ${diskNode} stands on a ${String(file.driver)} node: only raw file images are supported`);
    return undefined;
  }
  return resolve(cwd, file.filename);
}

/** `-blockdev` as JSON, or as dotted keys (`driver=raw,file.driver=file,file.filename=/x`). */
function blockdevObject(spec: string): Record<string, unknown> | undefined {
  if (spec.startsWith('{')) {
    try {
      const parsed: unknown = JSON.parse(spec);
      return isObject(parsed) ? parsed : undefined;
    } catch {
      return undefined;
    }
  }
  const root: Record<string, unknown> = {};
  for (const [key, value] of qemuOpts(spec, 'driver')) {
    const path = key.split('.');
    let at = root;
    for (const step of path.slice(0, -1)) {
      const next = at[step];
      at = isObject(next) ? next : (at[step] = {});
    }
    at[path[path.length - 1]] = value;
  }
  return root;
}

/**
 * The devices: the disk's virtio-blk-pci, then one virtio-net-pci on a user-mode netdev that forwards one TCP port
 * (the order a destination adds them in: it decides their PCI slots). Returns the forwarded ports.
 */
function readDevices(
  devices: string[],
  netdevSpecs: string[],
  diskNode: string,
  problems: string[],
): { servicePort: number; guestPort: number } | undefined {
  const netdevs = new Map<string, Map<string, string>>();
  const hostfwds = new Map<string, string[]>();
  for (const spec of netdevSpecs) {
    const entries = qemuOpts(spec, 'type');
    const opts = new Map(entries);
    const id = opts.get('id') ?? '';
    netdevs.set(id, opts);
    hostfwds.set(
      id,
      entries.filter(([key]) => key === 'hostfwd').map(([, value]) => value),
    );
  }
  let diskAt = -1;
  let nicAt = -1;
  let ports: { servicePort: number; guestPort: number } | undefined;
  for (const [i, spec] of devices.entries()) {
    const opts = new Map(qemuOpts(spec, 'driver'));
    const driver = opts.get('driver') ?? '';
    const extra = (allowed: string[]) =>
      [...opts].filter(([key]) => key !== 'driver' && !allowed.includes(key)).map(([key, v]) => `${key}=${v}`);
    if (driver === DISK_DEVICE && opts.get('drive') === diskNode && diskAt < 0) {
      diskAt = i;
      for (const option of extra(['id', 'drive']))
        problems.push(`-device ${DISK_DEVICE} ${option}: a destination starts the disk's device without it`);
    } else if (opts.has('netdev')) {
      if (driver !== NIC_DEVICE || nicAt >= 0) {
        problems.push(`-device ${spec}: one NIC, a ${NIC_DEVICE} on -netdev user, is supported`);
        continue;
      }
      nicAt = i;
      for (const option of extra(['id', 'netdev', 'mac', 'romfile']))
        problems.push(`-device ${NIC_DEVICE} ${option}: a destination starts the NIC without it`);
      // A destination's NIC has no option ROM: a ROM is migrated as RAM the destination would not have.
      if (opts.get('romfile') !== '')
        problems.push(`-device ${NIC_DEVICE} without romfile=: a destination starts the NIC without an option ROM`);
      const netdevId = opts.get('netdev') ?? '';
      ports = readNetdev(netdevId, netdevs.get(netdevId), hostfwds.get(netdevId) ?? [], problems);
    } else if (opts.has('drive')) {
      problems.push(`-device ${spec}: its drive is not node ${diskNode} (one disk, on a ${DISK_DEVICE}, is supported)`);
    } else {
      problems.push(`-device ${spec}: a destination starts only the disk's ${DISK_DEVICE} and the NIC's ${NIC_DEVICE}`);
    }
  }
  if (diskAt < 0) problems.push(`no -device ${DISK_DEVICE},drive=${diskNode}: the disk must be a ${DISK_DEVICE}`);
  if (nicAt < 0)
    problems.push(
      `no NIC: a destination forwards the guest's service through a user-mode NIC (-netdev user,hostfwd=tcp:127.0.0.1:PORT-:GUESTPORT with -device ${NIC_DEVICE})`,
    );
  if (diskAt >= 0 && nicAt >= 0 && nicAt < diskAt)
    problems.push(`the NIC comes before the disk: a destination adds the disk's device first (PCI slots follow)`);
  return ports;
}

function readNetdev(
  id: string,
  netdev: Map<string, string> | undefined,
  hostfwds: string[],
  problems: string[],
): { servicePort: number; guestPort: number } | undefined {
  if (netdev === undefined) {
    problems.push(`the NIC's netdev ${id} is not given as -netdev`);
    return undefined;
  }
  const type = netdev.get('type');
  if (type !== 'user') {
    problems.push(`-netdev ${type ?? '?'},id=${id}: only user-mode NICs (-netdev user) are supported`);
    return undefined;
  }
  if (hostfwds.length !== 1) {
    problems.push(
      `-netdev user,id=${id} forwards ${hostfwds.length} ports: a destination forwards one (hostfwd=tcp:127.0.0.1:PORT-:GUESTPORT)`,
    );
    return undefined;
  }
  const m = /^(tcp)?:(127\.0\.0\.1)?:(\d+)-:(\d+)$/.exec(hostfwds[0]);
  const servicePort = Number(m?.[3]);
  const guestPort = Number(m?.[4]);
  if (!m || !(servicePort > 0 && servicePort < 65536) || !(guestPort > 0 && guestPort < 65536)) {
    problems.push(`hostfwd=${hostfwds[0]}: a destination forwards tcp:127.0.0.1:PORT-:GUESTPORT`);
    return undefined;
  }
  return { servicePort, guestPort };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
