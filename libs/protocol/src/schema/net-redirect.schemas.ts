import {
  NET_MOVED_EVENT_TYPE,
  RelayState,
  RelayStopReason,
  VmNicFraming,
  VmNicState,
  VmRelayRequest,
  VmTunnel,
  type NetMovedConfirmation,
  type NetMovedData,
  type NetMovedEvent,
  type NetMovedHookAnswer,
  type NetMovedReply,
  type RelayConnectionCounts,
  type RelayStatusReply,
  type RouteInPlace,
  type RouteMoveReply,
  type VmNicConnectionCounts,
  type VmNicPort,
  type VmNicRelay,
  type VmNicStatus,
} from '../control/net-redirect.dto.js';
import { CLOUDEVENTS_SPECVERSION } from '../control/migration-event.types.js';
import { dtoSchema } from './dto.schema.js';
import { type JsonSchema } from './json-schema.js';
import {
  amount,
  arrayOf,
  boolean,
  count,
  objectSchema,
  oneOfValues,
  string,
  timestamp,
  uuid,
} from './object.schema.js';

/** Replies of net-redirect's verbs, the move's CloudEvent and what a controller answers on the hook. */

const ip = (description?: string): JsonSchema => ({
  ...(description === undefined ? {} : { description }),
  type: 'string',
  anyOf: [
    { type: 'string', format: 'ipv4' },
    { type: 'string', format: 'ipv6' },
  ],
});
const port = (description?: string): JsonSchema => ({
  ...(description === undefined ? {} : { description }),
  type: 'integer',
  minimum: 0,
  maximum: 65535,
});

export const NET_MOVED_DATA_SCHEMA = objectSchema<NetMovedData>({
  description: 'A VM’s addresses now live at `toSite`.',
  properties: {
    migrationId: uuid(),
    vmId: string(),
    addresses: arrayOf(ip(), 'The VM’s IPv4 and IPv6 addresses.'),
    fromSite: string(),
    toSite: string(),
  },
  optional: {},
});

export const NET_MOVED_EVENT_SCHEMA = objectSchema<NetMovedEvent>({
  description:
    'The move as a CloudEvents 1.0 envelope (JSON structured mode), stored in `WANMIG_EVENTS` under ' +
    '`wanmig.v1.events.migration.<site>.<migrationId>.net-moved` and sent on the hook `wanmig.v1.hooks.net.moved`.',
  properties: {
    specversion: { const: CLOUDEVENTS_SPECVERSION },
    id: uuid('Unique per move; a repeated `net.moved` keeps it.'),
    source: string('`wanmig/net-redirect/<site>`: the site that published it.'),
    type: { const: NET_MOVED_EVENT_TYPE },
    subject: string('The migration id.'),
    time: timestamp(),
    datacontenttype: { const: 'application/json' },
    data: NET_MOVED_DATA_SCHEMA,
  },
  optional: {},
});

export const NET_MOVED_HOOK_ANSWER_SCHEMA = objectSchema<NetMovedHookAnswer>({
  description: 'What an external controller answers on `wanmig.v1.hooks.net.moved`.',
  properties: {
    applied: boolean('The controller applied the move (its load balancer, DNS record, SDN route points at `toSite`).'),
    reason: string('Why it did not.'),
    controller: string('Who answers, for reports and logs.'),
  },
  optional: { reason: true, controller: true },
});

const CONFIRMATION_SCHEMA = objectSchema<NetMovedConfirmation>({
  properties: {
    applied: boolean(),
    reason: string(),
    controller: string(),
    ms: amount('From the request on the hook to this answer.'),
  },
  optional: { reason: true, controller: true },
});

export const NET_MOVED_REPLY_SCHEMA = objectSchema<NetMovedReply>({
  description: 'The move is published; the controllers that answered the hook, and whether that confirms it.',
  properties: {
    migrationId: uuid(),
    eventId: uuid('The CloudEvent’s id.'),
    eventSubject: string('The subject the event is stored under in `WANMIG_EVENTS`.'),
    confirmations: arrayOf(CONFIRMATION_SCHEMA),
    confirmed: boolean('As many controllers as asked for answered `applied`, and none refused.'),
    reason: string('Why the move is not confirmed.'),
  },
  optional: { reason: true },
});

const ROUTE_SCHEMA = objectSchema<RouteInPlace>({
  properties: {
    address: ip(),
    prefix: string('`<address>/32` or `<address>/128`.'),
    via: ip('The next hop of `toSite`.'),
    route: string('`ip route get <address>` in the router’s namespace, after the move.'),
  },
  optional: {},
});

export const ROUTE_MOVE_REPLY_SCHEMA = objectSchema<RouteMoveReply>({
  description: 'The host routes of the addresses point at `toSite`’s next hop.',
  properties: {
    migrationId: uuid(),
    toSite: string(),
    netns: string('The namespace the routes were replaced in; absent: the service’s own.'),
    routes: arrayOf(ROUTE_SCHEMA),
    pinnedFlows: count(
      'Open connections of this site’s VM NIC pinned to this site in the router before the routes moved away.',
    ),
  },
  optional: { netns: true, pinnedFlows: true },
});

const RELAY_COUNTS_SCHEMA = objectSchema<RelayConnectionCounts>({
  properties: {
    accepted: count(),
    active: count(),
    closed: count('Closed, whichever way (`failed` included).'),
    failed: count('Closed by an error: the target refused or was unreachable, a reset.'),
  },
  optional: {},
});

export const RELAY_STATUS_REPLY_SCHEMA = objectSchema<RelayStatusReply>({
  description: 'Where the relay of a migration stands.',
  properties: {
    migrationId: uuid(),
    state: oneOfValues(RelayState),
    listen: objectSchema<RelayStatusReply['listen']>({
      properties: { host: ip(), port: port('As bound (a free one when 0 was asked).'), netns: string() },
      optional: { netns: true },
    }),
    target: objectSchema<RelayStatusReply['target']>({
      properties: { host: ip(), port: port() },
      optional: {},
    }),
    connections: RELAY_COUNTS_SCHEMA,
    bytes: objectSchema<RelayStatusReply['bytes']>({
      description: '`in`: from clients to the target; `out`: from the target back to clients.',
      properties: { in: count(), out: count() },
      optional: {},
    }),
    startedAt: timestamp(),
    stoppedAt: timestamp(),
    stoppedReason: oneOfValues(RelayStopReason),
    error: string('Why the relay failed.'),
    pid: count('The forwarder process inside `listen.netns`.'),
  },
  optional: { stoppedAt: true, stoppedReason: true, error: true, pid: true },
});

const VM_NIC_PORT_SCHEMA = objectSchema<VmNicPort>({
  properties: {
    port: port('A port the VM answers on, at each of its addresses.'),
    tunnelPort: port('The tunnel endpoint on `tunnelHost` for this port (absent: no tunnel host configured).'),
  },
  optional: { tunnelPort: true },
});

const VM_NIC_RELAY_SCHEMA = objectSchema<VmNicRelay>({
  description: 'Where the NIC relays to (the new site’s tunnel endpoints) and its limits.',
  properties: {
    tunnelHost: ip(),
    tunnels: arrayOf(
      objectSchema<VmNicRelay['tunnels'][number]>({
        properties: { port: port(), tunnelPort: port() },
        optional: {},
      }),
    ),
    startedAt: timestamp(),
    maxMs: count(),
    idleMs: count(),
  },
  optional: { idleMs: true },
});

const VM_NIC_COUNTS_SCHEMA = objectSchema<VmNicConnectionCounts>({
  properties: {
    accepted: count(),
    active: count(),
    closed: count('Closed, whichever way (`failed` included).'),
    failed: count('Closed by an error: the guest’s socket or the tunnel refused or was unreachable, a reset.'),
    relayed: count('Carried over to, or accepted for, the new site’s tunnel.'),
  },
  optional: {},
});

export const VM_NIC_STATUS_SCHEMA = objectSchema<VmNicStatus>({
  description: 'A VM’s NIC at one site: where it forwards, its ports and tunnel endpoints, its counters.',
  properties: {
    vmId: string(),
    state: oneOfValues(VmNicState),
    netns: string('The site’s network namespace the addresses and forwarders live in.'),
    addresses: arrayOf(ip(), 'On the namespace’s `lo` as /32 (/128) while not detached.'),
    socket: string('The guest service’s unix socket.'),
    framing: oneOfValues(VmNicFraming),
    ports: arrayOf(VM_NIC_PORT_SCHEMA),
    tunnelHost: ip('Where this NIC’s tunnel endpoints listen.'),
    relay: VM_NIC_RELAY_SCHEMA,
    connections: VM_NIC_COUNTS_SCHEMA,
    bytes: objectSchema<VmNicStatus['bytes']>({
      description: '`in`: from clients to the guest (or the tunnel); `out`: back to clients.',
      properties: { in: count(), out: count() },
      optional: {},
    }),
    stoppedReason: oneOfValues(RelayStopReason),
    error: string('Why the NIC failed.'),
    pids: arrayOf(count(), 'The forwarder processes, one per port.'),
  },
  optional: { tunnelHost: true, relay: true, stoppedReason: true, error: true },
});

/**
 * `net.vm.relay`'s request: generated from its DTO, with `tunnels`' items stated by VmTunnel's own schema (dtoSchema
 * does not map nested DTOs in arrays; the service validates each item with VmTunnel).
 */
export function vmRelayRequestSchema(annotations: Parameters<typeof dtoSchema<VmRelayRequest>>[1]): JsonSchema {
  const schema = dtoSchema(VmRelayRequest, annotations);
  const properties = schema.properties as Record<string, JsonSchema>;
  const { title: _title, ...item } = dtoSchema(VmTunnel);
  properties.tunnels = { ...properties.tunnels, items: item };
  return schema;
}
