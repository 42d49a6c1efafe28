import { mkdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { GuestConfigError, GuestDiedError, GuestExistsError, GuestNotFoundError, GuestStateError } from '../errors.js';
import { VmRunState, type HypervisorDriver, type IncomingVmSpec } from '../hypervisor.driver.js';
import { GuestLink } from './guest.link.js';
import { simGuestEntry } from './guest.entry.js';
import { type GuestOptions, ramSizeProblems, toGuestArgs, vmIdProblems } from './guest.options.js';
import { SimGuestProcess } from './guest.process.js';
import { parseNbdUri } from './nbd.uri.js';
import { guestPaths, isProcessAlive, readLogTail, readRuntimeInfo, type GuestPaths } from './runtime.paths.js';
import {
  DEFAULT_PAGE_CACHE_BYTES,
  MAX_SOCKET_PATH,
  SIM_WORKLOADS,
  isSimWorkload,
  type SimWorkload,
} from './sim.constants.js';
import { SimIncomingVm } from './sim-incoming.vm.js';
import { SimSourceVm } from './sim-source.vm.js';

/** Runtime directory when none is given: control sockets, runtime info and logs of the guests. */
export const DEFAULT_SIM_RUNTIME_DIR = join(tmpdir(), 'wanmig-sim');
export const DEFAULT_CONTROL_TIMEOUT_MS = 10_000;
/** Time for a guest to come up: Node's start plus the boot fill of its RAM (about 0.5 s per 128 MiB). */
const START_BASE_MS = 20_000;
const START_PER_GIB_MS = 8_000;

export interface SimDriverOptions {
  /** Where guests publish their control socket and runtime info; attach() looks here. Default DEFAULT_SIM_RUNTIME_DIR. */
  runtimeDir?: string;
  /** The built guest program; default the one next to this driver in dist/. */
  guestEntry?: string;
  controlTimeoutMs?: number;
}

interface CommonSpec {
  vmId: string;
  /** Overrides the driver's runtime directory for this guest. */
  runtimeDir?: string;
  diskUri?: string;
  /** Port of the guest's service on 127.0.0.1; 0 (default) picks a free one. */
  servicePort?: number;
  /** Let the guest outlive this process; by default it exits when this process does. */
  detached?: boolean;
  /** Most RAM the guest keeps in its in-process page cache (default 256 MiB). */
  pageCacheBytes?: number;
}

export interface SimLaunchSpec extends CommonSpec {
  ramBytes: number;
  workload: SimWorkload;
  seed: number;
  /** Default `<runtimeDir>/<vmId>.ram`. */
  ramPath?: string;
}

export interface SimIncomingSpec extends IncomingVmSpec, Omit<CommonSpec, 'vmId' | 'diskUri' | 'servicePort'> {}

/**
 * The `sim` hypervisor: guests are processes running the built `sim-guest.main.js`, found through
 * a runtime directory by vm id, so a driver in any process on the host can attach to them.
 */
export class SimDriver implements HypervisorDriver {
  readonly name = 'sim';
  readonly runtimeDir: string;
  private readonly controlTimeoutMs: number;

  constructor(private readonly options: SimDriverOptions = {}) {
    this.runtimeDir = resolve(options.runtimeDir ?? DEFAULT_SIM_RUNTIME_DIR);
    this.controlTimeoutMs = options.controlTimeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS;
  }

  /** Starts a source guest: fills its RAM (unless the file holds it already) and runs its workload. */
  async launch(spec: SimLaunchSpec): Promise<SimSourceVm> {
    const problems = [
      ...this.commonProblems(spec),
      ...ramSizeProblems(spec.ramBytes),
      ...(isSimWorkload(spec.workload) ? [] : [`workload must be one of ${SIM_WORKLOADS.join(', ')}`]),
      ...(Number.isInteger(spec.seed) && spec.seed >= 0 && spec.seed < 2 ** 32 ? [] : ['seed must be a u32']),
    ];
    if (spec.ramPath !== undefined && !isAbsolute(spec.ramPath)) problems.push('ramPath must be absolute');
    if (problems.length > 0) throw new GuestConfigError(problems, { vmId: spec.vmId });
    const runtimeDir = resolve(spec.runtimeDir ?? this.runtimeDir);
    const paths = guestPaths(runtimeDir, spec.vmId);
    return new SimSourceVm(
      await this.start(paths, runtimeDir, spec, {
        vmId: spec.vmId,
        ramFile: spec.ramPath ?? paths.ramFile,
        ramBytes: spec.ramBytes,
        runtimeDir,
        workload: spec.workload,
        seed: spec.seed,
        diskUri: spec.diskUri,
        servicePort: spec.servicePort ?? 0,
        incoming: false,
        pageCacheBytes: spec.pageCacheBytes ?? DEFAULT_PAGE_CACHE_BYTES,
      }),
    );
  }

  /**
   * Starts a guest that waits for migrated RAM and state: `ramPath` is the file the destination
   * writes pages into (created sparse if missing); the guest holds its service port and runs only
   * when resumed.
   */
  async startIncoming(spec: SimIncomingSpec): Promise<SimIncomingVm> {
    const problems = [...this.commonProblems(spec), ...ramSizeProblems(spec.ramBytes)];
    if (!isAbsolute(spec.ramPath)) problems.push('ramPath must be absolute');
    else {
      const size = await stat(spec.ramPath).then(
        (s) => s.size,
        () => 0,
      );
      if (size > spec.ramBytes)
        problems.push(`${spec.ramPath} holds ${size} bytes, more than ramBytes ${spec.ramBytes}`);
    }
    if (problems.length > 0) throw new GuestConfigError(problems, { vmId: spec.vmId });
    const runtimeDir = resolve(spec.runtimeDir ?? this.runtimeDir);
    const paths = guestPaths(runtimeDir, spec.vmId);
    return new SimIncomingVm(
      await this.start(paths, runtimeDir, spec, {
        vmId: spec.vmId,
        ramFile: spec.ramPath,
        ramBytes: spec.ramBytes,
        runtimeDir,
        workload: 'idle',
        seed: 0,
        diskUri: spec.diskUri,
        servicePort: spec.servicePort ?? 0,
        incoming: true,
        pageCacheBytes: spec.pageCacheBytes ?? DEFAULT_PAGE_CACHE_BYTES,
      }),
    );
  }

  /** A guest started by this or any other process, found by vm id under the runtime directory. */
  async attach(vmId: string): Promise<SimSourceVm> {
    const vm = new SimSourceVm(await this.link(vmId));
    await vm.describe();
    return vm;
  }

  /**
   * A guest that waits for its migration (started incoming by this or an earlier process, e.g. a destination service
   * killed and restarted): adopted as it is. GuestStateError (CONFLICT) when it runs already, or waits on another RAM
   * file than `ramPath` (another migration's).
   */
  async attachIncoming(spec: Pick<IncomingVmSpec, 'vmId' | 'ramPath'>): Promise<SimIncomingVm> {
    const { vmId } = spec;
    const vm = new SimIncomingVm(await this.link(vmId));
    const { state } = await vm.describe();
    if (state !== VmRunState.Incoming) throw new GuestStateError(vmId, 'be adopted as incoming', state);
    if (resolve(vm.ramFile) !== resolve(spec.ramPath)) {
      throw new GuestStateError(vmId, 'be adopted as incoming', `waiting on ${vm.ramFile}, not ${spec.ramPath}`);
    }
    return vm;
  }

  private async link(vmId: string): Promise<GuestLink> {
    if (vmIdProblems(vmId).length > 0) throw new GuestNotFoundError(vmId, this.runtimeDir);
    const paths = guestPaths(this.runtimeDir, vmId);
    const info = await readRuntimeInfo(paths.infoFile);
    if (!info) throw new GuestNotFoundError(vmId, this.runtimeDir);
    if (!isProcessAlive(info.pid)) throw new GuestDiedError(vmId, { stderrTail: readLogTail(paths.logFile) });
    return new GuestLink({ vmId, runtimeDir: this.runtimeDir, paths, info, controlTimeoutMs: this.controlTimeoutMs });
  }

  private commonProblems(spec: CommonSpec): string[] {
    const problems = vmIdProblems(spec.vmId);
    const port = spec.servicePort ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) problems.push('servicePort must be in [0, 65535]');
    if (spec.diskUri !== undefined) {
      const parsed = parseNbdUri(spec.diskUri);
      if ('error' in parsed) problems.push(`diskUri: ${parsed.error}`);
    }
    const runtimeDir = resolve(spec.runtimeDir ?? this.runtimeDir);
    const socket = guestPaths(runtimeDir, spec.vmId).controlSocket;
    if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
      problems.push(`control socket path ${socket} is longer than ${MAX_SOCKET_PATH} bytes: use a shorter runtimeDir`);
    }
    return problems;
  }

  private async start(
    paths: GuestPaths,
    runtimeDir: string,
    spec: CommonSpec,
    options: GuestOptions,
  ): Promise<GuestLink> {
    await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
    const existing = await readRuntimeInfo(paths.infoFile).catch(() => undefined);
    if (existing && isProcessAlive(existing.pid)) throw new GuestExistsError(spec.vmId, existing.pid);
    const detached = spec.detached ?? false;
    const { process, info } = await SimGuestProcess.spawn({
      vmId: spec.vmId,
      entry: this.options.guestEntry ?? simGuestEntry(),
      args: toGuestArgs({ ...options, parentPid: detached ? undefined : globalThis.process.pid }),
      logFile: paths.logFile,
      detached,
      readyTimeoutMs: START_BASE_MS + (START_PER_GIB_MS * options.ramBytes) / 2 ** 30,
    });
    return new GuestLink({
      vmId: spec.vmId,
      runtimeDir,
      paths,
      info,
      process: detached ? undefined : process,
      controlTimeoutMs: this.controlTimeoutMs,
    });
  }
}
