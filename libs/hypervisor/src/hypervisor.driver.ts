import type { BlockMap } from '@wanmig/blockmap';

/** What a migration needs to know about a VM before it starts. */
export interface VmDescription {
  vmId: string;
  ramBytes: number;
  /** Bytes per page of the dirty log (4096 for every driver so far). */
  pageSize: number;
  diskBytes: number;
  /** The disk as the source serves it (NBD), when the driver's guest reaches its disk that way. */
  diskUri?: string;
  nics: Array<{ mac: string; addresses: string[] }>;
  /** Where a client reaches the guest's service (host:port). */
  serviceAddress: string;
  /** The same service on a unix socket, when the driver offers one (a site's NIC forwards to it). */
  serviceSocket?: string;
  state: VmRunState;
}

export const VmRunState = {
  Running: 'running',
  Paused: 'paused',
  /** Started at the destination, waiting for its memory and state. */
  Incoming: 'incoming',
  Stopped: 'stopped',
} as const;
export type VmRunState = (typeof VmRunState)[keyof typeof VmRunState];

/**
 * Memory a driver exposes page by page, with a dirty log (KVM's role): the sim driver and any
 * hypervisor that lets us read guest RAM. QEMU exposes an opaque migration stream instead.
 */
export interface PageMemory {
  readonly ramBytes: number;
  readonly pageSize: number;
  /** Reads guest RAM (a page-aligned range). Pages may change right after; the dirty log says so. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Starts dirty logging (first call) and returns the pages written since the previous call,
   * atomically: a page written after the call is in the next one. A page is marked only after
   * its new content is readable, so a page read after it was drained is either current or dirty again.
   */
  drainDirty(): Promise<BlockMap>;
  /** Stops dirty logging (after a migration ends or is abandoned). */
  stopDirtyLog(): Promise<void>;
}

/** CPU and device state at pause: opaque to wanmig, checked by size and checksum. */
export interface DeviceState {
  blob: Buffer;
  sha256: string;
}

/** A running VM as a migration sees it, on the source host. */
export interface SourceVm {
  describe(): Promise<VmDescription>;
  memory(): PageMemory;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Auto-converge: slow the guest's vCPUs to (100 - percent) % of their time; 0 releases. */
  throttle(percent: number): Promise<void>;
  deviceState(): Promise<DeviceState>;
  /** The migration committed: the source releases the VM for good. */
  release(): Promise<void>;
  /**
   * Asks the guest's service a question and answers at once, even while paused (a monitor): used
   * to record what the VM answered at pause, to compare with the destination after the move.
   */
  query?(command: string): Promise<string>;
  /**
   * Lets go of the VM without changing it: closes what this handle holds (control connection, RAM
   * file). Optional so that stand-ins written for tests need not implement it: call `vm.detach?.()`.
   */
  detach?(): Promise<void>;
}

export interface IncomingVmSpec {
  vmId: string;
  ramPath: string;
  ramBytes: number;
  /** The destination disk as an NBD URI (the migrated image, served at the destination). */
  diskUri?: string;
  /** Port for the guest's service at the destination (0: any free one). */
  servicePort?: number;
}

/** A VM started at the destination to receive, then resumed from received RAM, state and disk. */
export interface IncomingVm {
  describe(): Promise<VmDescription>;
  /** Loads the RAM file and the device state and runs the guest. */
  resume(state: DeviceState): Promise<void>;
  /** Answers a service query from the received RAM before the guest runs (as `SourceVm.query`). */
  query?(command: string): Promise<string>;
  stop(): Promise<void>;
}

/** What a hypervisor driver offers: find a VM, start one to receive a migration. */
export interface HypervisorDriver {
  readonly name: string;
  attach(vmId: string): Promise<SourceVm>;
  startIncoming(spec: IncomingVmSpec): Promise<IncomingVm>;
  /**
   * A VM that waits, incoming, started by this or an earlier process (a destination service restarted mid-migration):
   * adopted rather than started twice. NOT_FOUND when there is none, CONFLICT when it runs already or waits on
   * another RAM file (another migration's).
   */
  attachIncoming?(spec: Pick<IncomingVmSpec, 'vmId' | 'ramPath'>): Promise<IncomingVm>;
}
