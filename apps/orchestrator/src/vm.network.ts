/**
 * What the orchestrator asks of a site's net-redirect for a VM with addresses: its NIC (the addresses inside the
 * site's network, forwarding to the guest), the route agent (the VM's /32s at the router), the relay (the old site's
 * NIC carries what still arrives there to the new one) and the `net.moved` event. Every call is idempotent, so a
 * restarted orchestrator or a retried step may repeat it.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  ErrorCode,
  GUEST_SERVICE_PORT,
  NetRedirectVerb,
  ServiceName,
  WanmigError,
  type NetMovedReply,
  type RouteMoveReply,
  type VmNicStatus,
} from '@wanmig/protocol';

/** `ip` commands run inside net-redirect: give them more than a status poll. */
const NET_TIMEOUT_MS = 15_000;
/** How long the old site relays after a move, at most, and how long it waits for an idle moment to stop. */
export const RELAY_MAX_MS = 10 * 60_000;
export const RELAY_IDLE_MS = 30_000;

export class VmNetwork {
  constructor(private readonly nc: NatsConnection) {}

  /** The VM's addresses on its NIC at `site`, forwarding to the guest's unix socket there. */
  attach(site: string, vmId: string, addresses: string[], socket: string): Promise<VmNicStatus> {
    return this.call<VmNicStatus>(site, NetRedirectVerb.VmAttach, {
      vmId,
      addresses,
      ports: [GUEST_SERVICE_PORT],
      socket,
      // The embedded guest answers one line per request line: a relay can carry an open connection over.
      framing: 'lines',
    });
  }

  /** Stops the NIC at `site` (its addresses go); nothing there is fine. */
  async detach(site: string, vmId: string): Promise<void> {
    await this.call(site, NetRedirectVerb.VmDetach, { vmId, force: true }).catch(notFound);
  }

  status(site: string, vmId: string): Promise<VmNicStatus> {
    return this.call<VmNicStatus>(site, NetRedirectVerb.VmStatus, { vmId });
  }

  /** The old site's NIC carries its connections, and new ones, to the new site's tunnel endpoints. */
  relay(site: string, vmId: string, to: VmNicStatus): Promise<VmNicStatus> {
    const tunnels = to.ports.flatMap((p) =>
      p.tunnelPort === undefined ? [] : [{ port: p.port, tunnelPort: p.tunnelPort }],
    );
    if (!to.tunnelHost || tunnels.length === 0) {
      throw new WanmigError(
        ErrorCode.Unavailable,
        `the NIC of ${vmId} at ${to.netns ?? 'the destination'} has no tunnel endpoint: set WANMIG_VM_TUNNEL_HOST there`,
      );
    }
    return this.call<VmNicStatus>(site, NetRedirectVerb.VmRelay, {
      vmId,
      tunnelHost: to.tunnelHost,
      tunnels,
      maxMs: RELAY_MAX_MS,
      idleMs: RELAY_IDLE_MS,
    });
  }

  /** Points the VM's /32s at `toSite` (the route agent of `site`, which knows the router). */
  moveRoute(site: string, migrationId: string, addresses: string[], toSite: string): Promise<RouteMoveReply> {
    return this.call<RouteMoveReply>(site, NetRedirectVerb.RouteMove, { migrationId, addresses, toSite });
  }

  /** The move's CloudEvent and the controllers' hook; with `confirm`, an error until they confirm. */
  moved(
    site: string,
    move: { migrationId: string; vmId: string; addresses: string[]; fromSite: string; toSite: string },
    confirm?: { controllers: number; timeoutMs: number },
  ): Promise<NetMovedReply> {
    return this.call<NetMovedReply>(site, NetRedirectVerb.Moved, {
      ...move,
      ...(confirm ? { confirm: { required: true, ...confirm } } : {}),
    });
  }

  private async call<T>(site: string, verb: string, body: object): Promise<T> {
    try {
      return await callControl<T>(this.nc, controlSubject(site, ServiceName.NetRedirect, verb), body, NET_TIMEOUT_MS);
    } catch (err) {
      if (err instanceof WanmigError && err.code === ErrorCode.Unavailable && /^no answer on /.test(err.message)) {
        throw new WanmigError(
          ErrorCode.Unavailable,
          `net-redirect at ${site} does not answer (${verb}): a VM with addresses needs it running there`,
          { cause: err },
        );
      }
      throw err;
    }
  }
}

function notFound(err: unknown): undefined {
  if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return undefined;
  throw err;
}
