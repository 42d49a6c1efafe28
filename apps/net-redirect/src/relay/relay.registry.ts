import { Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import {
  MigrationRef,
  RelayState,
  RelayStopReason,
  StartRelayRequest,
  StopRelayRequest,
  validateDto,
  type RelayStatusReply,
} from '@wanmig/protocol';
import {
  NetRedirectConflictError,
  RelayAddressInUseError,
  RelayNotFoundError,
  RelayUnavailableError,
  ShuttingDownError,
} from '../errors.js';
import { ForwarderStartError, type ForwarderHandle } from './forwarder.handle.js';
import type { ForwarderChildConfig } from './forwarder.protocol.js';
import { NetRelay } from './net.relay.js';

/** Starts a forwarder: in this process, or (with `netns`) a child inside that namespace. The seam specs replace. */
export type ForwarderStarter = (config: ForwarderChildConfig, netns: string | undefined) => Promise<ForwarderHandle>;

/** Longest a counted byte waits before a namespaced forwarder reports it (ms). */
export const RELAY_REPORT_MS = 100;
/** Relays whose status stays known after they stopped. */
const REMEMBERED_RELAYS = 1024;

/**
 * The relays of this site (`net.relay.*`), one per migration. A repeat of a start answers with the relay's status
 * (whatever its state: a relay is not started twice under one migration id); a start that differs is CONFLICT; a
 * listen address in use is CONFLICT and leaves nothing behind. At shutdown every relay is cut.
 */
export class RelayRegistry implements BeforeApplicationShutdown {
  private readonly logger = new Logger('net-redirect');
  private readonly relays = new Map<string, NetRelay>();
  private readonly starting = new Map<string, Promise<RelayStatusReply>>();
  private stopping = false;

  constructor(private readonly startForwarder: ForwarderStarter) {}

  async start(body: unknown): Promise<RelayStatusReply> {
    const request = validateDto(StartRelayRequest, body);
    const { migrationId } = request;
    const known = this.relays.get(migrationId);
    if (known) return this.repeat(known, request);
    const inFlight = this.starting.get(migrationId);
    if (inFlight) {
      await inFlight.catch(() => undefined);
      return this.start(body);
    }
    if (this.stopping) throw new ShuttingDownError();
    const starting = this.startNow(request);
    this.starting.set(migrationId, starting);
    try {
      return await starting;
    } finally {
      this.starting.delete(migrationId);
    }
  }

  status(body: unknown): RelayStatusReply {
    return this.relay(validateDto(MigrationRef, body).migrationId).status();
  }

  /**
   * Graceful: the listener closes and the reply says `draining` while connections are open (poll the status), or
   * `stopped`; `force` cuts them and replies once stopped. Idempotent.
   */
  async stop(body: unknown): Promise<RelayStatusReply> {
    const request = validateDto(StopRelayRequest, body);
    const relay = this.relay(request.migrationId);
    await relay.stop(request.force);
    return relay.status();
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    await Promise.allSettled([...this.starting.values()]);
    await Promise.allSettled([...this.relays.values()].map((r) => r.stop(true, RelayStopReason.Shutdown)));
  }

  private async startNow(request: StartRelayRequest): Promise<RelayStatusReply> {
    const { migrationId, listen, target } = request;
    const netns = listen.netns ?? undefined;
    const where = `${listen.host}:${listen.port}${netns ? ` in namespace ${netns}` : ''}`;
    let forwarder: ForwarderHandle;
    try {
      forwarder = await this.startForwarder(
        {
          listen: { host: listen.host, port: listen.port },
          target: { host: target.host, port: target.port },
          reportMs: RELAY_REPORT_MS,
        },
        netns,
      );
    } catch (err) {
      if (err instanceof ForwarderStartError && err.code === 'EADDRINUSE') {
        throw new RelayAddressInUseError(migrationId, where, err);
      }
      const reason = err instanceof Error ? err.message : String(err);
      throw new RelayUnavailableError(migrationId, `listen on ${where}: ${reason}`, err);
    }
    const relay = new NetRelay(request, forwarder);
    this.relays.set(migrationId, relay);
    this.forgetOldest();
    void relay.stopped.then(() => {
      const s = relay.status();
      this.logger.log(
        `relay of migration ${migrationId} stopped (${s.stoppedReason}${s.error ? `: ${s.error}` : ''}): ` +
          `${s.connections.accepted} connections, ${s.bytes.in} bytes in, ${s.bytes.out} bytes out`,
      );
    });
    this.logger.log(
      `relay of migration ${migrationId} forwards ${forwarder.address.host}:${forwarder.address.port}` +
        `${netns ? ` (namespace ${netns})` : ''} to ${target.host}:${target.port} for at most ${request.maxMs} ms`,
    );
    return relay.status();
  }

  private repeat(relay: NetRelay, request: StartRelayRequest): RelayStatusReply {
    const asked = relay.request;
    const same =
      asked.listen.host === request.listen.host &&
      asked.listen.port === request.listen.port &&
      (asked.listen.netns ?? undefined) === (request.listen.netns ?? undefined) &&
      asked.target.host === request.target.host &&
      asked.target.port === request.target.port &&
      asked.maxMs === request.maxMs &&
      (asked.idleMs ?? undefined) === (request.idleMs ?? undefined);
    if (!same) throw new NetRedirectConflictError(request.migrationId, 'a relay with other settings exists already');
    return relay.status();
  }

  /** Keeps the statuses of at most REMEMBERED_RELAYS relays: the oldest stopped ones are forgotten. */
  private forgetOldest(): void {
    for (const [id, relay] of this.relays) {
      if (this.relays.size <= REMEMBERED_RELAYS) return;
      if (relay.current === RelayState.Stopped) this.relays.delete(id);
    }
  }

  private relay(migrationId: string): NetRelay {
    const relay = this.relays.get(migrationId);
    if (!relay) throw new RelayNotFoundError(migrationId);
    return relay;
  }
}
