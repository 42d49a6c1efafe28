import {
  RelayStopReason,
  VmNicState,
  type VmNicFraming,
  type VmNicRelay,
  type VmNicStatus,
  type VmRelayRequest,
} from '@wanmig/protocol';
import type { ForwarderHandle } from '../relay/forwarder.handle.js';
import type { OpenFlow } from '../relay/tcp.forwarder.js';
import type { LoopbackAddresses } from './loopback.addresses.js';

/** What a NIC was attached with (the registry compares repeats against it). */
export interface VmNicSpec {
  vmId: string;
  netns: string;
  addresses: string[];
  ports: number[];
  socket: string;
  framing: VmNicFraming;
  tunnelHost?: string;
}

/** One port's forwarder and, when the site has a tunnel host, its tunnel endpoint's port. */
export interface VmNicPortForwarder {
  port: number;
  tunnelPort?: number;
  handle: ForwarderHandle;
}

/**
 * A VM's NIC at this site: its addresses on the namespace's `lo` and one forwarder per port to the guest's unix socket
 * (`attached`). As the old site's relay (`relaying`) its forwarders point at the new site's tunnel endpoints; it
 * detaches itself at `maxMs` or once idle for `idleMs`, and a repeat of the attach points it back at the guest (the
 * rollback). Detached, it keeps its counters for the status.
 */
export class VmNic {
  private state: VmNicState = VmNicState.Attached;
  private socket: string;
  private relayInfo?: VmNicRelay;
  private relayRequest?: VmRelayRequest;
  private stoppedReason?: RelayStopReason;
  private error?: string;
  private maxTimer?: NodeJS.Timeout;
  private idleTimer?: NodeJS.Timeout;
  private detaching?: Promise<void>;

  constructor(
    readonly spec: VmNicSpec,
    private readonly forwarders: VmNicPortForwarder[],
    private readonly loopback: LoopbackAddresses,
    /** Told once the NIC is detached (its addresses' flow pins in the router go). */
    private readonly onDetached: (nic: VmNic) => Promise<void> = () => Promise.resolve(),
    private readonly now: () => Date = () => new Date(),
  ) {
    this.socket = spec.socket;
    for (const f of forwarders) f.handle.onChange((error) => this.changed(error));
  }

  get current(): VmNicState {
    return this.state;
  }

  /** A detach is under way or done (its timers may have started it). */
  get detachStarted(): boolean {
    return this.detaching !== undefined;
  }

  /** The attach again (its addresses and ports checked by the registry): forward to `socket`, not relaying. */
  async pointAt(socket: string): Promise<void> {
    if (this.state === VmNicState.Attached && socket === this.socket) return;
    this.stopTimers();
    await Promise.all(this.forwarders.map((f) => f.handle.retarget({ path: socket }, false)));
    this.socket = socket;
    this.state = VmNicState.Attached;
    this.relayInfo = undefined;
    this.relayRequest = undefined;
  }

  /** Forward each tunnel's port to `tunnelHost:tunnelPort` (a relay); the limits start now. A same repeat: nothing. */
  async relay(request: VmRelayRequest): Promise<void> {
    if (this.state === VmNicState.Relaying && sameRelay(this.relayRequest, request)) return;
    this.stopTimers();
    for (const tunnel of request.tunnels) {
      const forwarder = this.forwarders.find((f) => f.port === tunnel.port);
      await forwarder?.handle.retarget({ host: request.tunnelHost, port: tunnel.tunnelPort }, true);
    }
    this.state = VmNicState.Relaying;
    this.relayRequest = request;
    this.relayInfo = {
      tunnelHost: request.tunnelHost,
      tunnels: request.tunnels.map((t) => ({ port: t.port, tunnelPort: t.tunnelPort })),
      startedAt: this.now().toISOString(),
      maxMs: request.maxMs,
      ...(request.idleMs === undefined || request.idleMs === null ? {} : { idleMs: request.idleMs }),
    };
    this.maxTimer = setTimeout(() => void this.detach(RelayStopReason.MaxTime), request.maxMs);
    this.armIdle();
  }

  /** Forwarders stopped (connections cut), addresses off `lo`. Idempotent; resolves once done. */
  detach(reason: RelayStopReason): Promise<void> {
    this.detaching ??= (async () => {
      this.stopTimers();
      await Promise.allSettled(this.forwarders.map((f) => f.handle.destroy()));
      try {
        await this.loopback.removeAll(this.spec.netns, this.spec.addresses);
      } catch (err) {
        this.error ??= `cannot remove its addresses: ${err instanceof Error ? err.message : String(err)}`;
      }
      this.state = VmNicState.Detached;
      this.stoppedReason = reason;
      await this.onDetached(this).catch(() => undefined);
    })();
    return this.detaching;
  }

  /** Does one of this NIC's own forwarders listen at `host:port` (a VM address or its tunnel endpoint)? */
  listensAt(host: string, port: number): boolean {
    return this.forwarders.some((f) => f.handle.addresses.some((a) => a.host === host && a.port === port));
  }

  /** The open client connections to the VM's addresses (not those through the tunnel endpoints). */
  async flows(): Promise<OpenFlow[]> {
    if (this.detaching !== undefined) return [];
    const all = await Promise.all(this.forwarders.map((f) => f.handle.flows().catch(() => [])));
    return all.flat().filter((flow) => this.spec.addresses.includes(flow.address));
  }

  status(): VmNicStatus {
    const { vmId, netns, addresses, framing, tunnelHost } = this.spec;
    const c = this.forwarders.map((f) => f.handle.counters());
    const sum = (key: keyof (typeof c)[number]) => c.reduce((total, counters) => total + counters[key], 0);
    const live = this.state !== VmNicState.Detached && this.detaching === undefined;
    return {
      vmId,
      state: this.state,
      netns,
      addresses: [...addresses],
      socket: this.socket,
      framing,
      ports: this.forwarders.map((f) => ({
        port: f.port,
        ...(f.tunnelPort === undefined ? {} : { tunnelPort: f.tunnelPort }),
      })),
      ...(tunnelHost === undefined ? {} : { tunnelHost }),
      ...(this.relayInfo ? { relay: this.relayInfo } : {}),
      connections: {
        accepted: sum('accepted'),
        active: sum('active'),
        closed: sum('closed'),
        failed: sum('failed'),
        relayed: sum('relayed'),
      },
      bytes: { in: sum('bytesIn'), out: sum('bytesOut') },
      ...(this.stoppedReason ? { stoppedReason: this.stoppedReason } : {}),
      ...(this.error ? { error: this.error } : {}),
      pids: live ? this.forwarders.flatMap((f) => (f.handle.pid === undefined ? [] : [f.handle.pid])) : [],
    };
  }

  private active(): number {
    return this.forwarders.reduce((total, f) => total + f.handle.counters().active, 0);
  }

  private changed(error?: string): void {
    if (this.detaching !== undefined) return;
    if (error !== undefined) {
      this.error = error;
      void this.detach(RelayStopReason.Failed);
      return;
    }
    if (this.state === VmNicState.Relaying) this.armIdle();
  }

  /** While relaying with `idleMs`: the clock runs while no connection is open, and stops while one is. */
  private armIdle(): void {
    const idleMs = this.relayRequest?.idleMs;
    if (idleMs === undefined || idleMs === null) return;
    if (this.active() > 0) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    } else if (this.idleTimer === undefined) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = undefined;
        if (this.active() === 0) void this.detach(RelayStopReason.Idle);
      }, idleMs);
    }
  }

  private stopTimers(): void {
    clearTimeout(this.maxTimer);
    clearTimeout(this.idleTimer);
    this.maxTimer = undefined;
    this.idleTimer = undefined;
  }
}

function sameRelay(a: VmRelayRequest | undefined, b: VmRelayRequest): boolean {
  if (a === undefined) return false;
  const tunnels = (r: VmRelayRequest) =>
    r.tunnels
      .map((t) => `${t.port}>${t.tunnelPort}`)
      .sort()
      .join(',');
  return (
    a.tunnelHost === b.tunnelHost &&
    tunnels(a) === tunnels(b) &&
    a.maxMs === b.maxMs &&
    (a.idleMs ?? undefined) === (b.idleMs ?? undefined)
  );
}
