/**
 * A QEMU someone else started, taken over as one of this site's VMs (vm.import). Its QMP socket leads to it: QMP says
 * whether it runs and which block nodes it has; its process (the qemu-system whose command line names that socket)
 * says how it was started, which is the machine a migration's destination must start. Nothing is started or copied:
 * the VM keeps running on its own image, and is recorded the way a VM wanmig launched is (registerQemuVm).
 */
import { constants } from 'node:fs';
import { access, lstat, readdir, readFile, readlink, realpath, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { ErrorCode, QemuMachineSpec, validateDto, ValidationError, WanmigError } from '@wanmig/protocol';
import { Accelerator } from './marker.boot.js';
import { qmpSocketPaths, readQemuCommandLine, type QemuCommandLineMachine } from './qemu.command-line.js';
import { QemuImportError } from './qemu.errors.js';
import { qemuVmExists, qemuVmIdOfPid, registerQemuVm, type QemuVmSpec } from './qemu.vm.js';
import { QmpClient } from './qmp.client.js';
import type { QmpStatus } from './qmp.types.js';

export interface QemuImportRequest {
  vmId: string;
  /** Absolute path of the QEMU's QMP unix socket. */
  qmpSocket: string;
  /** The block node of its disk: the node a migration mirrors. */
  diskNode: string;
}

/** A running QEMU, as its process shows it. */
export interface QemuProcessInfo {
  pid: number;
  argv: string[];
  cwd: string;
}

/** QMP's `query-named-block-nodes` entry, the fields read here. */
interface QmpBlockNode {
  'node-name': string;
  drv: string;
  file: string;
}

const QMP_TIMEOUT_MS = 10_000;
/** Run states a VM is taken over in: anything else is in the middle of something (a migration, a shutdown). */
const IMPORTABLE_STATES = ['running', 'paused'];
const QEMU_BINARY_PREFIX = 'qemu-system';

/**
 * Takes over the QEMU answering on `req.qmpSocket` as VM `req.vmId` of the site whose runtime dir is `runtimeDir`.
 * Rejects, having recorded nothing: NOT_FOUND (no such path, or no QEMU process names it), INVALID_REQUEST (not a
 * socket; no such block node; a machine a destination could not start the same: QemuImportError, naming each
 * problem), UNAVAILABLE (the socket does not answer as QEMU's QMP, or another client holds the monitor), CONFLICT
 * (QEMU is neither running nor paused, or is a VM of this site already).
 */
export async function importQemuVm(runtimeDir: string, req: QemuImportRequest): Promise<QemuVmSpec> {
  const { qmpSocket, diskNode } = req;
  const info = await lstat(qmpSocket).catch(() => undefined);
  if (!info) throw new WanmigError(ErrorCode.NotFound, `${qmpSocket} does not exist`);
  if (!(info.isSocket() || (info.isSymbolicLink() && (await stat(qmpSocket).catch(() => undefined))?.isSocket())))
    throw new WanmigError(ErrorCode.InvalidRequest, `${qmpSocket} is not a unix socket`);
  const qmp = await QmpClient.connect(qmpSocket, { timeoutMs: QMP_TIMEOUT_MS }).catch((err: unknown) => {
    throw new WanmigError(
      ErrorCode.Unavailable,
      `${qmpSocket} does not answer as a QEMU QMP monitor (or another client holds it): ${messageOf(err)}`,
      { cause: err },
    );
  });
  let status: string;
  let nodes: QmpBlockNode[];
  let kvm: boolean;
  try {
    status = (await qmp.execute<QmpStatus>('query-status')).status;
    nodes = await qmp.execute<QmpBlockNode[]>('query-named-block-nodes', { flat: true });
    kvm = (await qmp.execute<{ enabled: boolean }>('query-kvm')).enabled;
  } finally {
    await qmp.close();
  }
  if (!IMPORTABLE_STATES.includes(status))
    throw new WanmigError(ErrorCode.Conflict, `the QEMU at ${qmpSocket} is ${status}: only a running VM is imported`);
  const node = nodes.find((n) => n['node-name'] === diskNode);
  if (!node) {
    const names = nodes.map((n) => n['node-name']).filter((name) => name && !name.startsWith('#'));
    throw new WanmigError(
      ErrorCode.InvalidRequest,
      `the QEMU at ${qmpSocket} has no block node ${diskNode} (its nodes: ${names.join(', ') || 'none'}): its disk cannot be mirrored`,
    );
  }

  const proc = await findQemuProcess(qmpSocket);
  const what = `the QEMU at ${qmpSocket} (pid ${proc.pid})`;
  const reading = readQemuCommandLine(proc.argv, { diskNode, cwd: proc.cwd });
  const problems = [...reading.problems];
  if (node.drv !== 'raw' && node.drv !== 'file')
    problems.push(`node ${diskNode} is ${node.drv} now: only raw file images are supported`);
  const machine = reading.machine && { ...reading.machine, accel: kvm ? Accelerator.Kvm : Accelerator.Tcg };
  if (machine) problems.push(...(await machineProblems(machine, node)));
  if (problems.length > 0 || !machine) throw new QemuImportError(what, problems, { vmId: req.vmId, pid: proc.pid });

  const owner = await qemuVmIdOfPid(runtimeDir, proc.pid);
  if (owner !== undefined) throw new WanmigError(ErrorCode.Conflict, `${what} is VM ${owner} of this site already`);
  if (await qemuVmExists(runtimeDir, req.vmId))
    throw new WanmigError(ErrorCode.Conflict, `a QEMU VM ${req.vmId} already runs at this site`);
  return registerQemuVm(runtimeDir, { vmId: req.vmId, ...machine }, qmpSocket, proc.pid);
}

/**
 * The qemu-system process whose command line names `qmpSocket` as a QMP monitor (NOT_FOUND without one; CONFLICT
 * when several do, since the socket cannot tell which of them answers).
 */
export async function findQemuProcess(qmpSocket: string): Promise<QemuProcessInfo> {
  const wanted = resolve(qmpSocket);
  const target = await realpath(wanted).catch(() => wanted);
  const found: QemuProcessInfo[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv.at(-1) === '') argv.pop();
    if (!basename(argv[0] ?? '').startsWith(QEMU_BINARY_PREFIX)) continue;
    const cwd = await readlink(`/proc/${entry}/cwd`).catch(() => '/');
    for (const path of qmpSocketPaths(argv, cwd)) {
      if (path === wanted || (await realpath(path).catch(() => path)) === target) {
        found.push({ pid: Number(entry), argv, cwd });
        break;
      }
    }
  }
  if (found.length === 0)
    throw new WanmigError(ErrorCode.NotFound, `no ${QEMU_BINARY_PREFIX} process names ${qmpSocket} as its QMP socket`);
  if (found.length > 1) {
    const pids = found.map((p) => p.pid).join(', ');
    throw new WanmigError(ErrorCode.Conflict, `several QEMU processes name ${qmpSocket} (pids ${pids})`);
  }
  return found[0];
}

/** What a destination (and the adopting site's record, QemuMachineSpec) could not take of the machine read. */
async function machineProblems(machine: QemuCommandLineMachine, node: QmpBlockNode): Promise<string[]> {
  const problems: string[] = [];
  try {
    validateDto(
      QemuMachineSpec,
      {
        kernel: machine.kernel,
        initrd: machine.initrd,
        append: machine.append,
        machine: machine.machine,
        accel: machine.accel,
        ramMiB: machine.ramMiB,
        cpus: machine.cpus,
        guestPort: machine.guestPort,
      },
      'machine',
    );
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    problems.push(...err.problems);
  }
  for (const [what, path] of [
    ['kernel', machine.kernel],
    ['initrd', machine.initrd],
  ] as const) {
    await access(path, constants.R_OK).catch(() => problems.push(`${what} ${path} is not readable here`));
  }
  if (!(await stat(machine.diskPath).catch(() => undefined))?.isFile())
    problems.push(`disk ${machine.diskPath} is not a file`);
  // A node reopened on another file since QEMU started: the command line no longer tells the disk.
  if (node.file && !node.file.startsWith('json:') && resolve(node.file) !== machine.diskPath)
    problems.push(`node ${node['node-name']} reads ${node.file}, not ${machine.diskPath} as started`);
  return problems;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
