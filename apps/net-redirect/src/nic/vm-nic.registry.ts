import { Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import {
  RelayStopReason,
  validateDto,
  VmAttachRequest,
  VmDetachRequest,
  VmNicFraming,
  VmNicRef,
  VmNicState,
  VmRelayRequest,
  VmTunnel,
  type VmNicStatus,
} from '@wanmig/protocol';
import {
  ShuttingDownError,
  VmNicConflictError,
  VmNicInvalidRequestError,
  VmNicNotFoundError,
  VmNicPortInUseError,
  VmNicUnavailableError,
} from '../errors.js';
import { ForwarderStartError } from '../relay/forwarder.handle.js';
import type { OpenFlow } from '../relay/tcp.forwarder.js';
import type { FlowSource } from '../route/flow.pins.js';
import type { ForwarderStarter } from '../relay/relay.registry.js';
import { RELAY_REPORT_MS } from '../relay/relay.registry.js';
import { CommandFailedError, type CommandExecutor } from '../route/command.executor.js';
import { LoopbackAddresses } from './loopback.addresses.js';
import { VmNic, type VmNicPortForwarder, type VmNicSpec } from './vm.nic.js';

export interface VmNicRegistryOptions {
  /** The site's namespace (`WANMIG_VM_NETNS`); a request may name its own. */
  netns?: string;
  /** An address of the site inside that namespace where tunnel endpoints listen (`WANMIG_VM_TUNNEL_HOST`). */
  tunnelHost?: string;
  /** How long a `lines` connection whose guest went away with requests unanswered is held (TcpForwarderOptions). */
  holdMs?: number;
  ipBin: string;
  commandTimeoutMs: number;
}

/** NICs whose status stays known after they were detached. */
const REMEMBERED_NICS = 1024;

/**
 * The VM NICs of this site (`net.vm.*`), one per VM. Requests about one VM run one at a time. An attach either
 * completes (addresses on `lo`, a forwarder per port) or leaves nothing behind; a repeat answers the NIC as it is, or
 * points a relaying NIC back at the guest. At shutdown every NIC is detached.
 */
export class VmNicRegistry implements BeforeApplicationShutdown, FlowSource {
  private readonly logger = new Logger('net-redirect');
  private readonly nics = new Map<string, VmNic>();
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly loopback: LoopbackAddresses;
  private stopping = false;

  constructor(
    private readonly options: VmNicRegistryOptions,
    executor: CommandExecutor,
    private readonly startForwarder: ForwarderStarter,
    /** Called once a NIC is detached, with its addresses (the route agent removes their flow pins). */
    private readonly detached: (addresses: string[]) => Promise<void> = () => Promise.resolve(),
  ) {
    this.loopback = new LoopbackAddresses(options, executor);
  }

  async attach(body: unknown): Promise<VmNicStatus> {
    const request = validateDto(VmAttachRequest, body);
    return await this.serial(request.vmId, () => this.attachNow(request));
  }

  async relay(body: unknown): Promise<VmNicStatus> {
    const request = validateDto(VmRelayRequest, body);
    // validateDto leaves the items plain (dtoSchema maps no nested DTO arrays): each is checked here, INVALID_REQUEST.
    request.tunnels = request.tunnels.map((tunnel, i) => validateDto(VmTunnel, tunnel, `VmRelayRequest.tunnels[${i}]`));
    return await this.serial(request.vmId, () => this.relayNow(request));
  }

  async detach(body: unknown): Promise<VmNicStatus> {
    const { vmId } = validateDto(VmDetachRequest, body);
    return await this.serial(vmId, async () => {
      const nic = this.nic(vmId);
      await nic.detach(RelayStopReason.Requested);
      return nic.status();
    });
  }

  status(body: unknown): VmNicStatus {
    return this.nic(validateDto(VmNicRef, body).vmId).status();
  }

  /** The open connections of this site's NICs to any of `addresses`. */
  async openFlows(addresses: readonly string[]): Promise<OpenFlow[]> {
    const nics = [...this.nics.values()].filter(
      (nic) => nic.current !== VmNicState.Detached && nic.spec.addresses.some((a) => addresses.includes(a)),
    );
    const flows = await Promise.all(nics.map((nic) => nic.flows()));
    return flows.flat().filter((flow) => addresses.includes(flow.address));
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    await Promise.allSettled([...this.queues.values()]);
    await Promise.allSettled([...this.nics.values()].map((nic) => nic.detach(RelayStopReason.Shutdown)));
  }

  private async attachNow(request: VmAttachRequest): Promise<VmNicStatus> {
    const { vmId } = request;
    const netns = request.netns ?? this.options.netns;
    if (netns === undefined || netns === '') {
      throw new VmNicUnavailableError(
        vmId,
        'no network namespace for it: set WANMIG_VM_NETNS at this site or give `netns` in the request',
      );
    }
    const spec: VmNicSpec = {
      vmId,
      netns,
      addresses: [...new Set(request.addresses)],
      ports: [...new Set(request.ports)],
      socket: request.socket,
      framing: request.framing ?? VmNicFraming.None,
      ...(this.options.tunnelHost ? { tunnelHost: this.options.tunnelHost } : {}),
    };
    const known = this.nics.get(vmId);
    // A detach its own timers started is let finish: the attach then builds a new NIC.
    if (known?.detachStarted) await known.detach(RelayStopReason.Requested);
    if (known && known.current !== VmNicState.Detached) {
      const differs = difference(known.spec, spec);
      if (differs) throw new VmNicConflictError(vmId, `it is attached with other settings (${differs})`);
      await known.pointAt(spec.socket).catch((err: unknown) => {
        throw new VmNicUnavailableError(vmId, `cannot point it back at ${spec.socket}: ${message(err)}`, {
          cause: err,
        });
      });
      return known.status();
    }
    if (this.stopping) throw new ShuttingDownError();
    for (const [otherId, other] of this.nics) {
      if (other.current === VmNicState.Detached || other.spec.netns !== netns) continue;
      const shared = other.spec.addresses.filter((a) => spec.addresses.includes(a));
      if (shared.length > 0) throw new VmNicConflictError(vmId, `${shared.join(', ')} belong to VM ${otherId}'s NIC`);
    }
    const nic = new VmNic(spec, await this.build(spec), this.loopback, (n) => this.detached(n.spec.addresses));
    this.nics.delete(vmId);
    this.nics.set(vmId, nic);
    this.forgetOldest();
    const ports = nic.status().ports.map((p) => (p.tunnelPort ? `${p.port} (tunnel ${p.tunnelPort})` : `${p.port}`));
    this.logger.log(
      `NIC of VM ${vmId} in ${netns}: ${spec.addresses.join(', ')} ports ${ports.join(', ')} to ${spec.socket}`,
    );
    return nic.status();
  }

  /** Addresses, then one forwarder per port; on any failure what was done is undone before it throws. */
  private async build(spec: VmNicSpec): Promise<VmNicPortForwarder[]> {
    const { vmId, netns, addresses, tunnelHost } = spec;
    const added: string[] = [];
    const forwarders: VmNicPortForwarder[] = [];
    const undo = async () => {
      await Promise.allSettled(forwarders.map((f) => f.handle.destroy()));
      await this.loopback.removeAll(netns, added).catch((err: unknown) => {
        this.logger.warn(`NIC of VM ${vmId}: cannot remove ${added.join(', ')} from ${netns}: ${message(err)}`);
      });
    };
    try {
      for (const address of addresses) {
        await this.loopback.add(netns, address);
        added.push(address);
      }
      for (const port of spec.ports) {
        const [first, ...rest] = addresses.map((host) => ({ host, port }));
        const handle = await this.startForwarder(
          {
            listen: first,
            alsoListen: [...rest, ...(tunnelHost ? [{ host: tunnelHost, port: 0 }] : [])],
            target: { path: spec.socket },
            framing: spec.framing,
            ...(spec.framing === VmNicFraming.Lines && this.options.holdMs ? { holdMs: this.options.holdMs } : {}),
            reportMs: RELAY_REPORT_MS,
          },
          netns,
        );
        const tunnelPort = tunnelHost ? handle.addresses[addresses.length]?.port : undefined;
        forwarders.push({ port, handle, ...(tunnelPort === undefined ? {} : { tunnelPort }) });
      }
    } catch (err) {
      await undo();
      if (err instanceof ForwarderStartError && err.code === 'EADDRINUSE') {
        const port = spec.ports[forwarders.length];
        throw new VmNicPortInUseError(vmId, port, `${addresses.join(', ')}${tunnelHost ? `, ${tunnelHost}` : ''}`, err);
      }
      const command = err instanceof CommandFailedError ? err.argv.join(' ') : undefined;
      throw new VmNicUnavailableError(vmId, `cannot attach in ${netns}: ${message(err)}`, { command, cause: err });
    }
    return forwarders;
  }

  private async relayNow(request: VmRelayRequest): Promise<VmNicStatus> {
    const { vmId } = request;
    const nic = this.nic(vmId);
    if (nic.current === VmNicState.Detached) throw new VmNicConflictError(vmId, 'it is detached: attach it first');
    const unknown = request.tunnels.filter((t) => !nic.spec.ports.includes(t.port)).map((t) => t.port);
    if (unknown.length > 0) {
      throw new VmNicInvalidRequestError(vmId, `port(s) ${unknown.join(', ')} are not attached`);
    }
    // Its own endpoint would take each relayed connection and relay it there again: connections without end.
    const loops = request.tunnels
      .filter((t) => nic.listensAt(request.tunnelHost, t.tunnelPort))
      .map((t) => t.tunnelPort);
    if (loops.length > 0) {
      throw new VmNicInvalidRequestError(
        vmId,
        `${request.tunnelHost} port(s) ${loops.join(', ')} are its own endpoints: a relay there would loop back into it`,
      );
    }
    try {
      await nic.relay(request);
    } catch (err) {
      throw new VmNicUnavailableError(vmId, `cannot relay to ${request.tunnelHost}: ${message(err)}`, { cause: err });
    }
    this.logger.log(
      `NIC of VM ${vmId} relays to ${request.tunnelHost} ` +
        `(${request.tunnels.map((t) => `${t.port}>${t.tunnelPort}`).join(', ')}) for at most ${request.maxMs} ms`,
    );
    return nic.status();
  }

  /** Runs `task` after every earlier request about the same VM has finished. */
  private serial<T>(vmId: string, task: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(vmId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(task);
    this.queues.set(vmId, run);
    void run
      .catch(() => undefined)
      .then(() => {
        if (this.queues.get(vmId) === run) this.queues.delete(vmId);
      });
    return run;
  }

  /** Keeps the statuses of at most REMEMBERED_NICS NICs: the oldest detached ones are forgotten. */
  private forgetOldest(): void {
    for (const [id, nic] of this.nics) {
      if (this.nics.size <= REMEMBERED_NICS) return;
      if (nic.current === VmNicState.Detached) this.nics.delete(id);
    }
  }

  private nic(vmId: string): VmNic {
    const nic = this.nics.get(vmId);
    if (!nic) throw new VmNicNotFoundError(vmId);
    return nic;
  }
}

/** What differs between an attached NIC and a repeat of its attach (the socket may differ: it is re-pointed). */
function difference(known: VmNicSpec, asked: VmNicSpec): string | undefined {
  const set = (values: readonly (string | number)[]) => [...values].map(String).sort().join(',');
  if (known.netns !== asked.netns) return `namespace ${known.netns}`;
  if (set(known.addresses) !== set(asked.addresses)) return `addresses ${known.addresses.join(', ')}`;
  if (set(known.ports) !== set(asked.ports)) return `ports ${known.ports.join(', ')}`;
  if (known.framing !== asked.framing) return `framing ${known.framing}`;
  return undefined;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
