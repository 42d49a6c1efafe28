import 'reflect-metadata';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsIP,
  IsObject,
  IsOptional,
  IsUUID,
  Matches,
  Max,
  Min,
} from 'class-validator';
import { NestedDto } from '../nested-dto.decorator.js';
import { SUBJECT_ROOT } from '../subjects.js';
import { checkSite } from './control.subjects.js';
import type { CloudEvent } from './migration-event.types.js';

/**
 * net-redirect: the network side of a switchover, at each site. `net.moved` tells existing infrastructure (load
 * balancers, DNS, SDN controllers) that a VM's addresses now live at another site; `net.route.move` points the
 * router's host routes of those addresses at the new site; `net.relay.*` forwards the connections that still arrive
 * at the old site to the VM at its new place, until they drain or a time limit passes. `net.vm.*` is a VM's virtual
 * NIC at a site: its addresses inside the site's namespace, forwarding to the guest's unix socket, and at the old site
 * the relay (the NIC re-points its open connections and new ones to the new site's NIC through a tunnel endpoint).
 */
export const NetRedirectVerb = {
  /** Publish the move as a CloudEvent and ask external controllers (the hook) to confirm they applied it. */
  Moved: 'net.moved',
  /** Route agent: `ip route replace <addr>/32 via <next hop of toSite>` in the router's namespace. */
  RouteMove: 'net.route.move',
  /** Relay at the old site: forward TCP connections arriving at `listen` to `target`. */
  RelayStart: 'net.relay.start',
  RelayStatus: 'net.relay.status',
  /** Stop relaying: close the listener and let open connections finish (or cut them with `force`). */
  RelayStop: 'net.relay.stop',
  /** The VM's NIC at this site: its addresses on the namespace's `lo`, forwarders to the guest's unix socket. */
  VmAttach: 'net.vm.attach',
  /** The old site's NIC relays: its connections (open ones too, with `lines` framing) go to the new site's tunnels. */
  VmRelay: 'net.vm.relay',
  /** The NIC goes: addresses removed, forwarders stopped, connections cut. */
  VmDetach: 'net.vm.detach',
  VmStatus: 'net.vm.status',
} as const;
export type NetRedirectVerb = (typeof NetRedirectVerb)[keyof typeof NetRedirectVerb];

/** CloudEvents `type` of the move. */
export const NET_MOVED_EVENT_TYPE = 'io.wanmig.net.moved';
/** The last token of the move's event subject. */
export const NET_MOVED_EVENT_KIND = 'net-moved';

export const NetRedirectSubjects = {
  /**
   * Request/reply hook: the move's CloudEvent is sent here, and every external controller that applies moves answers
   * with a NetMovedHookAnswer. Not site-scoped: a controller anywhere on the NATS system can answer.
   */
  movedHook: () => `${SUBJECT_ROOT}.hooks.net.moved`,
  /**
   * Where the move's CloudEvent is stored: beside the migration's own events in the publishing site's stream
   * `WANMIG_EVENTS` (`wanmig.v1.events.migration.<site>.<migrationId>.net-moved`), so a replay of the migration's
   * events includes it.
   */
  movedEvent: (site: string, migrationId: string) =>
    `${SUBJECT_ROOT}.events.migration.${checkSite(site)}.${checkToken(migrationId)}.${NET_MOVED_EVENT_KIND}`,
} as const;

function checkToken(id: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(id)) throw new TypeError(`migration id must be a NATS-safe token, got ${id}`);
  return id;
}

/** Most addresses one VM's move carries. */
export const MAX_VM_ADDRESSES = 64;
const SITE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const VM_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** A network namespace name as `ip netns` keeps it (a file name under /run/netns). */
export const NETNS_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

export class NetMovedConfirm {
  /** How long to wait for the controllers' answers (ms). */
  @IsInt()
  @Min(1)
  @Max(60_000)
  timeoutMs: number = 2_000;

  /** The verb fails unless the controllers confirm (no controller, a refusal or a timeout: an error). */
  @IsBoolean()
  required: boolean = false;

  /** How many controllers must answer `applied` (the wait ends as soon as that many answered). */
  @IsInt()
  @Min(1)
  @Max(16)
  controllers: number = 1;
}

export class NetMovedRequest {
  @IsUUID()
  migrationId!: string;

  @Matches(VM_ID)
  vmId!: string;

  /** The VM's IPv4 and IPv6 addresses (at least one). */
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_VM_ADDRESSES)
  @IsIP(undefined, { each: true })
  addresses!: string[];

  @Matches(SITE)
  fromSite!: string;

  @Matches(SITE)
  toSite!: string;

  /** Absent: the hook is asked with the defaults (2 s, one controller) and its answer only reported. */
  @IsOptional()
  @NestedDto(() => NetMovedConfirm)
  confirm?: NetMovedConfirm;
}

/** `data` of the `io.wanmig.net.moved` CloudEvent. */
export interface NetMovedData {
  migrationId: string;
  vmId: string;
  addresses: string[];
  fromSite: string;
  toSite: string;
}

/** The move's CloudEvent: the migration events' envelope with its own `type`; `source` `wanmig/net-redirect/<site>`. */
export type NetMovedEvent = Omit<CloudEvent<NetMovedData>, 'type'> & { type: typeof NET_MOVED_EVENT_TYPE };

/** What an external controller answers on the hook subject. */
export interface NetMovedHookAnswer {
  applied: boolean;
  /** Why it did not apply the move (with `applied: false`). */
  reason?: string;
  /** Who answers (e.g. `lb-eu-1`), for the reply and the logs. */
  controller?: string;
}

export interface NetMovedConfirmation {
  applied: boolean;
  reason?: string;
  controller?: string;
  /** From the request on the hook to this answer (ms). */
  ms: number;
}

export interface NetMovedReply {
  migrationId: string;
  eventId: string;
  /** The subject the event is stored under in `WANMIG_EVENTS`. */
  eventSubject: string;
  confirmations: NetMovedConfirmation[];
  /** As many controllers as asked for answered `applied`, and none refused. */
  confirmed: boolean;
  /** Why the move is not confirmed (no controller listens, a refusal, too few answers in time). */
  reason?: string;
}

export class RouteMoveRequest {
  @IsUUID()
  migrationId!: string;

  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_VM_ADDRESSES)
  @IsIP(undefined, { each: true })
  addresses!: string[];

  /** The site whose next hop the host routes now use. */
  @Matches(SITE)
  toSite!: string;
}

export interface RouteInPlace {
  address: string;
  /** `<address>/32` or `<address>/128`. */
  prefix: string;
  via: string;
  /** `ip route get <address>` in the router's namespace, after the move. */
  route: string;
}

export interface RouteMoveReply {
  migrationId: string;
  toSite: string;
  /** The namespace the routes were replaced in (absent: the service's own). */
  netns?: string;
  routes: RouteInPlace[];
  /**
   * Open connections of this site's VM NIC to the addresses, pinned to this site in the router before the routes moved
   * away (they keep arriving here, where the NIC relays them); absent when the routes moved here or nothing can pin.
   */
  pinnedFlows?: number;
}

export class RelayListen {
  /** An address of the old site where the VM's connections may still arrive (the VM's own, once it left). */
  @IsIP()
  host!: string;

  /** 0: any free port (reported in the status). */
  @IsInt()
  @Min(0)
  @Max(65535)
  port!: number;

  /** Listen inside this network namespace (a forwarder process started with `ip netns exec`). */
  @IsOptional()
  @Matches(NETNS_NAME)
  netns?: string;
}

export class RelayTarget {
  /** The VM at its new place. */
  @IsIP()
  host!: string;

  @IsInt()
  @Min(1)
  @Max(65535)
  port!: number;
}

export const MAX_RELAY_MS = 24 * 3600 * 1000;

export class StartRelayRequest {
  @IsUUID()
  migrationId!: string;

  @NestedDto(() => RelayListen)
  listen!: RelayListen;

  @NestedDto(() => RelayTarget)
  target!: RelayTarget;

  /** Hard limit (ms): the listener and every relayed connection are closed then. */
  @IsInt()
  @Min(100)
  @Max(MAX_RELAY_MS)
  maxMs!: number;

  /** Stop once no connection has been open for this long (ms); absent: only `maxMs` or a stop ends it. */
  @IsOptional()
  @IsInt()
  @Min(10)
  @Max(MAX_RELAY_MS)
  idleMs?: number;
}

export class StopRelayRequest {
  @IsUUID()
  migrationId!: string;

  /** Cut open connections at once rather than letting them finish (still bounded by `maxMs`). */
  @IsBoolean()
  force: boolean = false;
}

export const RelayState = {
  /** Accepting and forwarding connections. */
  Listening: 'listening',
  /** The listener is closed; open connections go on until they end. */
  Draining: 'draining',
  Stopped: 'stopped',
} as const;
export type RelayState = (typeof RelayState)[keyof typeof RelayState];

export const RelayStopReason = {
  /** `maxMs` passed. */
  MaxTime: 'max-time',
  /** No connection was open for `idleMs`. */
  Idle: 'idle',
  /** `net.relay.stop`. */
  Requested: 'requested',
  /** The forwarder died or could not go on (`error` says why). */
  Failed: 'failed',
  /** The service shut down. */
  Shutdown: 'shutdown',
} as const;
export type RelayStopReason = (typeof RelayStopReason)[keyof typeof RelayStopReason];

export interface RelayConnectionCounts {
  accepted: number;
  active: number;
  /** Closed, whichever way (of which `failed`). */
  closed: number;
  /** Closed by an error: the target refused or could not be reached, a reset. */
  failed: number;
}

export interface RelayStatusReply {
  migrationId: string;
  state: RelayState;
  /** As listening (the port actually bound when 0 was asked). */
  listen: { host: string; port: number; netns?: string };
  target: { host: string; port: number };
  connections: RelayConnectionCounts;
  /** `in`: from clients to the target; `out`: from the target back to clients. */
  bytes: { in: number; out: number };
  startedAt: string;
  stoppedAt?: string;
  stoppedReason?: RelayStopReason;
  error?: string;
  /** The forwarder process (with `netns`). */
  pid?: number;
}

/** Most addresses, and ports, of one VM NIC. */
export const MAX_VM_NIC_ADDRESSES = 8;
export const MAX_VM_NIC_PORTS = 16;
/** An absolute unix socket path that fits `sun_path` (108 bytes with its NUL; the length bound is in the pattern so the schema states it). */
const UNIX_SOCKET_PATH = /^\/[^\0]{0,106}$/;
/** Bounds of a NIC relay's `maxMs` (ms). */
export const MIN_VM_RELAY_MS = 1_000;
export const MAX_VM_RELAY_MS = 3_600_000;

/**
 * How a NIC's forwarders see the guest's protocol. `lines`: one request line, one reply line; an open connection can
 * be carried over to another upstream (its unanswered lines replayed). `none`: bytes only; an open connection stays
 * on its upstream until it ends.
 */
export const VmNicFraming = { Lines: 'lines', None: 'none' } as const;
export type VmNicFraming = (typeof VmNicFraming)[keyof typeof VmNicFraming];

export const VmNicState = {
  /** Forwarding to the guest's socket at this site. */
  Attached: 'attached',
  /** Forwarding to the new site's tunnel endpoints, until `maxMs`, an idle `idleMs` or a detach. */
  Relaying: 'relaying',
  Detached: 'detached',
} as const;
export type VmNicState = (typeof VmNicState)[keyof typeof VmNicState];

export class VmAttachRequest {
  @Matches(VM_ID)
  vmId!: string;

  /** Placed as /32 (/128) on the namespace's `lo`. */
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_VM_NIC_ADDRESSES)
  @IsIP(undefined, { each: true })
  addresses!: string[];

  /** TCP ports the VM answers on, at each address. */
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_VM_NIC_PORTS)
  @IsInt({ each: true })
  @Min(1, { each: true })
  @Max(65535, { each: true })
  ports!: number[];

  /** Absolute path of the guest service's unix socket (on the filesystem every namespace shares), fits `sun_path`. */
  @Matches(UNIX_SOCKET_PATH)
  socket!: string;

  @IsOptional()
  @IsIn(Object.values(VmNicFraming))
  framing?: VmNicFraming;

  /** The site's namespace; absent: the service's `WANMIG_VM_NETNS`. */
  @IsOptional()
  @Matches(NETNS_NAME)
  netns?: string;
}

/** One port's tunnel endpoint at the new site (`tunnelHost:tunnelPort` forwards to the VM's `port` there). */
export class VmTunnel {
  @IsInt()
  @Min(1)
  @Max(65535)
  port!: number;

  @IsInt()
  @Min(1)
  @Max(65535)
  tunnelPort!: number;
}

export class VmRelayRequest {
  @Matches(VM_ID)
  vmId!: string;

  /** The new site's tunnel host (its `VmNicStatus.tunnelHost`). */
  @IsIP()
  tunnelHost!: string;

  /**
   * Each attached port's tunnel at the new site (`VmNicStatus.ports` there). Items are VmTunnel objects, checked by
   * the service (class-validator's nested arrays are not stated by dtoSchema; the schema states them by hand).
   */
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_VM_NIC_PORTS)
  @IsObject({ each: true })
  tunnels!: VmTunnel[];

  /** Hard limit (ms): the NIC detaches then. */
  @IsInt()
  @Min(MIN_VM_RELAY_MS)
  @Max(MAX_VM_RELAY_MS)
  maxMs!: number;

  /** Detach once no connection has been open for this long (ms). */
  @IsOptional()
  @IsInt()
  @Min(10)
  @Max(MAX_VM_RELAY_MS)
  idleMs?: number;
}

export class VmDetachRequest {
  @Matches(VM_ID)
  vmId!: string;

  /**
   * Accepted for symmetry with `net.relay.stop`: a NIC's detach always cuts its connections, since the VM's addresses
   * leave this site with it.
   */
  @IsBoolean()
  force: boolean = false;
}

export class VmNicRef {
  @Matches(VM_ID)
  vmId!: string;
}

export interface VmNicPort {
  port: number;
  /** The tunnel endpoint's port on `tunnelHost` (absent: no `WANMIG_VM_TUNNEL_HOST` at this site). */
  tunnelPort?: number;
}

export interface VmNicRelay {
  tunnelHost: string;
  tunnels: Array<{ port: number; tunnelPort: number }>;
  startedAt: string;
  maxMs: number;
  idleMs?: number;
}

export interface VmNicConnectionCounts extends RelayConnectionCounts {
  /** Carried over to, or accepted for, the new site's tunnel. */
  relayed: number;
}

export interface VmNicStatus {
  vmId: string;
  state: VmNicState;
  netns: string;
  addresses: string[];
  socket: string;
  framing: VmNicFraming;
  ports: VmNicPort[];
  /** Where this NIC's tunnel endpoints listen (an address of this site in `netns`). */
  tunnelHost?: string;
  relay?: VmNicRelay;
  connections: VmNicConnectionCounts;
  /** `in`: from clients to the guest (or the tunnel); `out`: back to clients. */
  bytes: { in: number; out: number };
  stoppedReason?: RelayStopReason;
  error?: string;
  /** The forwarder processes, one per port (none once detached). */
  pids: number[];
}
