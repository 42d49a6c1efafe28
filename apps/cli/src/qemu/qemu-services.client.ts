import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  DEFAULT_CONTROL_TIMEOUT_MS,
  QemuIncomingVerb,
  QemuRelayVerb,
  ServiceName,
  type AbortQemuIncomingReply,
  type OpenQemuRelayReply,
  type QemuIncomingStatusReply,
  type QemuRelayStatusReply,
  type ResumeQemuReply,
  type StartQemuIncomingReply,
  type StartQemuIncomingRequest,
} from '@wanmig/protocol';

/**
 * The destination's launch spec and sizes: the source QEMU's, so that the stream loads (see StartQemuIncomingRequest);
 * `postcopy` when the source may switch to post-copy (then open the relay with `returnPath`).
 */
export type QemuIncomingLaunch = Pick<StartQemuIncomingRequest, 'ramMiB' | 'kernel' | 'initrd'> &
  Partial<
    Pick<
      StartQemuIncomingRequest,
      'diskPath' | 'append' | 'machine' | 'accel' | 'cpus' | 'servicePort' | 'guestPort' | 'postcopy' | 'network'
    >
  >;

/** How the relay is opened (see OpenQemuRelayRequest); `returnPath` for a destination started with `postcopy`. */
export interface QemuRelayOptions {
  windowBytes?: number;
  bandwidthBps?: number;
  returnPath?: boolean;
}

/** Bounds on each call (ms): QEMU starting and stopping, the relay probing its receiver across the WAN. */
export const QEMU_SERVICE_TIMEOUTS = {
  openRelay: 20_000,
  startIncoming: 45_000,
  abortIncoming: 30_000,
  /** Beyond the resume's own `loadTimeoutMs`. */
  resumeMargin: 10_000,
};
const DEFAULT_LOAD_TIMEOUT_MS = 30_000;

/**
 * The memory half of a QEMU VM migration, as calls to the services that own its pieces: memory-precopy's relay of
 * QEMU's stream at the source site, delta-apply's destination QEMU and its feed at the destination site. Order:
 * `startIncoming`, then `openRelay`, QMP `migrate` to its socket, and `resume` once the source completed (in
 * post-copy: once it is `postcopy-active`); on a failure before the resume, `closeRelay` and `abortIncoming`.
 * Options left at their defaults are not sent, so that a service from before them still understands the request.
 */
export class QemuServicesClient {
  constructor(
    private readonly nc: NatsConnection,
    private readonly sourceSite: string,
    private readonly destSite: string,
  ) {}

  private relay(verb: QemuRelayVerb): string {
    return controlSubject(this.sourceSite, ServiceName.MemoryPrecopy, verb);
  }

  private incoming(verb: QemuIncomingVerb): string {
    return controlSubject(this.destSite, ServiceName.DeltaApply, verb);
  }

  /** Starts the destination QEMU on the image delta-apply holds for the migration, paused on `-incoming`. */
  startIncoming(migrationId: string, launch: QemuIncomingLaunch): Promise<StartQemuIncomingReply> {
    const { postcopy, ...spec } = launch;
    return callControl<StartQemuIncomingReply>(
      this.nc,
      this.incoming(QemuIncomingVerb.Start),
      { migrationId, ...spec, ...(postcopy ? { postcopy } : {}) },
      QEMU_SERVICE_TIMEOUTS.startIncoming,
    );
  }

  incomingStatus(migrationId: string): Promise<QemuIncomingStatusReply> {
    return callControl<QemuIncomingStatusReply>(this.nc, this.incoming(QemuIncomingVerb.Status), { migrationId });
  }

  /** Waits (up to `loadTimeoutMs`) for the destination to load the stream, then runs it. */
  resume(
    migrationId: string,
    options: { loadTimeoutMs?: number; announceRounds?: number } = {},
  ): Promise<ResumeQemuReply> {
    const loadTimeoutMs = options.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS;
    return callControl<ResumeQemuReply>(
      this.nc,
      this.incoming(QemuIncomingVerb.Resume),
      {
        migrationId,
        loadTimeoutMs,
        ...(options.announceRounds === undefined ? {} : { announceRounds: options.announceRounds }),
      },
      loadTimeoutMs + QEMU_SERVICE_TIMEOUTS.resumeMargin,
    );
  }

  /** Stops the destination's feed and QEMU (never to run); `stopRunning` also stops one that runs already. */
  abortIncoming(migrationId: string, options: { stopRunning?: boolean } = {}): Promise<AbortQemuIncomingReply> {
    return callControl<AbortQemuIncomingReply>(
      this.nc,
      this.incoming(QemuIncomingVerb.Abort),
      { migrationId, stopRunning: options.stopRunning ?? false },
      QEMU_SERVICE_TIMEOUTS.abortIncoming,
    );
  }

  /** Opens the source's relay (after startIncoming): QEMU then migrates to `unix:<socketPath>`. */
  openRelay(migrationId: string, options: QemuRelayOptions = {}): Promise<OpenQemuRelayReply> {
    const { windowBytes, bandwidthBps, returnPath } = options;
    return callControl<OpenQemuRelayReply>(
      this.nc,
      this.relay(QemuRelayVerb.Open),
      {
        migrationId,
        ...(windowBytes === undefined ? {} : { windowBytes: Math.round(windowBytes) }),
        ...(bandwidthBps ? { bandwidthBps: Math.round(bandwidthBps) } : {}),
        ...(returnPath ? { returnPath } : {}),
      },
      QEMU_SERVICE_TIMEOUTS.openRelay,
    );
  }

  relayStatus(migrationId: string): Promise<QemuRelayStatusReply> {
    return callControl<QemuRelayStatusReply>(this.nc, this.relay(QemuRelayVerb.Status), { migrationId });
  }

  /** Stops relaying: the source QEMU's migration fails and its guest runs on. */
  closeRelay(migrationId: string): Promise<QemuRelayStatusReply> {
    return callControl<QemuRelayStatusReply>(
      this.nc,
      this.relay(QemuRelayVerb.Close),
      { migrationId },
      DEFAULT_CONTROL_TIMEOUT_MS,
    );
  }
}
