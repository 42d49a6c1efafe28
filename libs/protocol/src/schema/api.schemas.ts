/**
 * The JSON Schemas of the orchestrator API and of the services' own verbs documented beside it, by name: request DTOs generated from their class-validator rules, replies
 * written by hand against their interfaces. Also published as docs/schemas/<Name>.schema.json (see
 * api.schemas.spec.ts for how to regenerate them) and as the components of the HTTP API's OpenAPI document.
 */
import { MigrationRef } from '../control/disk.dto.js';
import { CreateMigrationRequest, ListMigrationsRequest } from '../control/migration.dto.js';
import {
  NetMovedRequest,
  RouteMoveRequest,
  StartRelayRequest,
  StopRelayRequest,
  VmAttachRequest,
  VmDetachRequest,
  VmNicRef,
  VmRelayRequest,
} from '../control/net-redirect.dto.js';
import {
  AbortQemuIncomingRequest,
  OpenQemuRelayRequest,
  ResumeQemuRequest,
  StartQemuIncomingRequest,
} from '../control/qemu-migration.dto.js';
import { CreateVmRequest, ImportVmRequest, VmRef, type VmView } from '../control/vm.dto.js';
import { dtoSchema } from './dto.schema.js';
import { WIRE_ERROR_SCHEMA } from './error.schemas.js';
import { CLOUD_EVENT_SCHEMA } from './event.schemas.js';
import { deepFreeze, JSON_SCHEMA_DIALECT, type JsonSchema } from './json-schema.js';
import { LIST_MIGRATIONS_REPLY_SCHEMA, MIGRATION_VIEW_SCHEMA } from './migration.schemas.js';
import {
  NET_MOVED_EVENT_SCHEMA,
  NET_MOVED_HOOK_ANSWER_SCHEMA,
  NET_MOVED_REPLY_SCHEMA,
  RELAY_STATUS_REPLY_SCHEMA,
  ROUTE_MOVE_REPLY_SCHEMA,
  VM_NIC_STATUS_SCHEMA,
  vmRelayRequestSchema,
} from './net-redirect.schemas.js';
import { objectSchema, string } from './object.schema.js';
import {
  ABORT_QEMU_INCOMING_REPLY_SCHEMA,
  OPEN_QEMU_RELAY_REPLY_SCHEMA,
  QEMU_INCOMING_STATUS_REPLY_SCHEMA,
  QEMU_RELAY_STATUS_REPLY_SCHEMA,
  RESUME_QEMU_REPLY_SCHEMA,
  START_QEMU_INCOMING_REPLY_SCHEMA,
} from './qemu-migration.schemas.js';
import { LIST_SITES_REPLY_SCHEMA, LIST_VMS_REPLY_SCHEMA, SITE_INFO_SCHEMA, VM_VIEW_SCHEMA } from './vm.schemas.js';

/** The request DTOs of the API, by schema name (each validated with validateDto). */
export const API_REQUEST_DTOS = {
  CreateMigrationRequest,
  MigrationRef,
  ListMigrationsRequest,
  CreateVmRequest,
  ImportVmRequest,
  VmRef,
  OpenQemuRelayRequest,
  StartQemuIncomingRequest,
  ResumeQemuRequest,
  AbortQemuIncomingRequest,
  NetMovedRequest,
  RouteMoveRequest,
  StartRelayRequest,
  StopRelayRequest,
  VmAttachRequest,
  VmRelayRequest,
  VmDetachRequest,
  VmNicRef,
} as const;

const schemas = {
  CreateMigrationRequest: dtoSchema(CreateMigrationRequest, {
    description: 'Start moving a VM (disk, memory, network) from the site that runs it to `toSite`.',
    properties: {
      bandwidthBps: 'Bandwidth budget in bits per second for disk and memory together; 0 or absent: the link’s own.',
      downtimeMs: 'Longest pause of the guest the memory pre-copy aims for.',
      policy: 'Memory convergence policy: `smart` is wanmig’s, `kvm` the 30-rounds baseline.',
      verify: 'Check destination disk and RAM against the source at pause before the VM runs there.',
      serviceDeadlineMs:
        'How long a service the migration needs (disk-transfer, memory-precopy, delta-apply) may stay away, killed and not yet restarted, before the migration rolls back.',
    },
  }),
  MigrationRef: dtoSchema(MigrationRef, { description: 'Names one migration.' }),
  ListMigrationsRequest: dtoSchema(ListMigrationsRequest, {
    properties: {
      unfinished: 'Only migrations that have not reached COMMITTED or ROLLED_BACK.',
      vmId: 'Only the migrations of this VM.',
    },
  }),
  CreateVmRequest: dtoSchema(CreateVmRequest, {
    description:
      'A new VM at this site: an embedded (sim) guest, or with `driver` `qemu` a QEMU VM launched from `guest` on a ' +
      'copy of its image (`diskBytes` is then the image’s size).',
    properties: {
      guest: 'qemu only (and required there): the guest to launch.',
      cpus: 'qemu only: vCPUs (1).',
      seed: 'Seed of the simulated guest’s workload: the same seed, the same run.',
      addresses:
        'The VM’s own IPv4/IPv6 addresses: its NIC at the site serves them (port 7777), the route agent points their ' +
        '/32s there, and a migration moves them with it. Needs net-redirect at the site.',
    },
  }),
  ImportVmRequest: dtoSchema(ImportVmRequest, {
    description:
      'A QEMU that runs at this site, started by someone else, becomes its VM: found by its QMP socket, its machine ' +
      'read from its command line (direct kernel boot, user-mode NIC with one forwarded port, raw file image as ' +
      '`-blockdev`). It keeps running on its own image.',
    properties: {
      qmpSocket: 'Absolute path of the QEMU’s QMP unix socket (`-qmp unix:PATH,server=on` or a control `-mon`).',
      diskNode: 'The block node of its disk (e.g. `disk0`): the node a migration mirrors.',
      addresses: 'Not offered for QEMU VMs yet: refused.',
    },
  }),
  VmRef: dtoSchema(VmRef, { description: 'Names one VM.' }),
  MigrationView: MIGRATION_VIEW_SCHEMA,
  ListMigrationsReply: LIST_MIGRATIONS_REPLY_SCHEMA,
  VmView: VM_VIEW_SCHEMA,
  ListVmsReply: LIST_VMS_REPLY_SCHEMA,
  RemoveVmReply: objectSchema<Pick<VmView, 'vmId'>>({
    description: 'The VM that was stopped and whose disk was deleted.',
    properties: { vmId: string() },
    optional: {},
  }),
  SiteInfo: SITE_INFO_SCHEMA,
  ListSitesReply: LIST_SITES_REPLY_SCHEMA,
  CloudEvent: CLOUD_EVENT_SCHEMA,
  WireError: WIRE_ERROR_SCHEMA,
  // The qemu driver's memory verbs: memory-precopy's `mem.qemu.relay*` (source), delta-apply's `mem.qemu.*`.
  OpenQemuRelayRequest: dtoSchema(OpenQemuRelayRequest, {
    description: 'memory-precopy `mem.qemu.relay`: listen for the source QEMU’s `migrate` and relay its stream.',
    properties: {
      windowBytes: 'Bytes of QEMU’s stream in flight over the WAN; default two bandwidth-delay products and 1 MiB.',
      bandwidthBps: 'Bandwidth budget of the stream in bits per second; 0 or absent: the link’s own pace.',
      returnPath: 'Carry the destination QEMU’s return path (post-copy page requests) back to the source QEMU.',
    },
  }),
  OpenQemuRelayReply: OPEN_QEMU_RELAY_REPLY_SCHEMA,
  QemuRelayStatusReply: QEMU_RELAY_STATUS_REPLY_SCHEMA,
  StartQemuIncomingRequest: dtoSchema(StartQemuIncomingRequest, {
    description:
      'delta-apply `mem.qemu.incoming`: start the destination QEMU on the migration’s image, paused on ' +
      '`-incoming`, and feed it the stream; the launch spec is the source’s.',
    properties: {
      diskPath: 'The image delta-apply holds for the migration; absent: that one.',
      ramMiB: 'Guest RAM, as the source’s.',
      kernel: 'The guest kernel at this site.',
      initrd: 'The guest initramfs at this site.',
      append: 'Kernel command line; default `console=ttyS0 panic=-1`.',
      accel: 'The accelerator the source runs under.',
      servicePort: 'Host port on 127.0.0.1 forwarded to `guestPort`; 0 or absent: a free one.',
      guestPort: 'The guest’s service port.',
      postcopy:
        'Post-copy may come: capability `postcopy-ram`, the return path sent back, and loaded once the device ' +
        'state is (`postcopy-active`).',
      network:
        'The NIC on a tap in a network namespace (QEMU runs inside it) instead of user-mode networking; no port is ' +
        'forwarded then (`servicePort` 0 in the reply).',
    },
  }),
  StartQemuIncomingReply: START_QEMU_INCOMING_REPLY_SCHEMA,
  QemuIncomingStatusReply: QEMU_INCOMING_STATUS_REPLY_SCHEMA,
  ResumeQemuRequest: dtoSchema(ResumeQemuRequest, {
    description: 'delta-apply `mem.qemu.resume`: once the stream is loaded, `cont` and `announce-self`.',
    properties: {
      loadTimeoutMs: 'How long to wait for the stream to finish loading before `cont`.',
      announceRounds: 'Rounds of `announce-self` after `cont`; 0: none.',
    },
  }),
  ResumeQemuReply: RESUME_QEMU_REPLY_SCHEMA,
  AbortQemuIncomingRequest: dtoSchema(AbortQemuIncomingRequest, {
    description: 'delta-apply `mem.qemu.incoming.abort`: stop the feed and the destination QEMU.',
    properties: { stopRunning: 'Also stop a destination that already runs; refused (CONFLICT) otherwise.' },
  }),
  AbortQemuIncomingReply: ABORT_QEMU_INCOMING_REPLY_SCHEMA,
  // net-redirect's verbs (`wanmig.v1.<site>.net-redirect.net.*`), the move's event and the hook's answer.
  NetMovedRequest: dtoSchema(NetMovedRequest, {
    description:
      'net-redirect `net.moved`: publish the move as a CloudEvent and ask external controllers (the hook ' +
      '`wanmig.v1.hooks.net.moved`) to confirm they applied it.',
    properties: {
      addresses: 'The VM’s IPv4 and IPv6 addresses; at least one.',
      confirm:
        'How long to wait for the controllers, how many must answer, and whether the verb fails without their ' +
        'confirmation (`required`); absent: 2 s, one controller, only reported.',
    },
  }),
  NetMovedReply: NET_MOVED_REPLY_SCHEMA,
  NetMovedEvent: NET_MOVED_EVENT_SCHEMA,
  NetMovedHookAnswer: NET_MOVED_HOOK_ANSWER_SCHEMA,
  RouteMoveRequest: dtoSchema(RouteMoveRequest, {
    description:
      'net-redirect `net.route.move`: the route agent points each address’s /32 (/128) at `toSite`’s next hop ' +
      'in the router’s namespace.',
    properties: { toSite: 'The site whose next hop the host routes now use.' },
  }),
  RouteMoveReply: ROUTE_MOVE_REPLY_SCHEMA,
  StartRelayRequest: dtoSchema(StartRelayRequest, {
    description:
      'net-redirect `net.relay.start`: at the old site, forward every TCP connection that still arrives at ' +
      '`listen` to `target` (the VM at its new place).',
    properties: {
      listen: 'Where connections still arrive (`netns`: inside that network namespace; port 0: a free one).',
      target: 'The VM at its new place.',
      maxMs: 'Hard limit: the listener and every relayed connection are closed then.',
      idleMs: 'Stop once no connection has been open for this long.',
    },
  }),
  StopRelayRequest: dtoSchema(StopRelayRequest, {
    description: 'net-redirect `net.relay.stop`: close the listener; open connections finish unless `force`.',
    properties: { force: 'Cut open connections at once.' },
  }),
  RelayStatusReply: RELAY_STATUS_REPLY_SCHEMA,
  VmAttachRequest: dtoSchema(VmAttachRequest, {
    description:
      'net-redirect `net.vm.attach`: the VM’s NIC at this site: its addresses as /32 (/128) on `lo` of the site’s ' +
      'namespace, and per port a forwarder listening on every address (and on a tunnel endpoint) to the guest’s ' +
      'unix socket. A repeat answers the same; a repeat on a relaying NIC points it back at `socket` (the rollback).',
    properties: {
      ports: 'TCP ports the VM answers on, at each address.',
      socket: 'Absolute path of the guest service’s unix socket.',
      framing: '`lines`: one request line, one reply line, so a relay can carry open connections over; default `none`.',
      netns: 'The site’s namespace; absent: the service’s `WANMIG_VM_NETNS`.',
    },
  }),
  VmRelayRequest: vmRelayRequestSchema({
    description:
      'net-redirect `net.vm.relay`: at the old site, the NIC forwards its connections (open `lines` ones carried ' +
      'over) and new ones to the new site’s tunnel endpoints, until `maxMs` or an idle `idleMs`, then detaches.',
    properties: {
      tunnelHost: 'The new site NIC’s `tunnelHost`.',
      tunnels: 'Each attached port’s tunnel port at the new site.',
      maxMs: 'Hard limit: the NIC detaches then.',
      idleMs: 'Detach once no connection has been open for this long.',
    },
  }),
  VmDetachRequest: dtoSchema(VmDetachRequest, {
    description: 'net-redirect `net.vm.detach`: the NIC’s addresses leave `lo`, its forwarders stop (connections cut).',
    properties: { force: 'Accepted for symmetry with `net.relay.stop`; a detach always cuts connections.' },
  }),
  VmNicRef: dtoSchema(VmNicRef, { description: 'net-redirect `net.vm.status`: the NIC of `vmId` at this site.' }),
  VmNicStatus: VM_NIC_STATUS_SCHEMA,
} satisfies Record<string, JsonSchema>;

export type ApiSchemaName = keyof typeof schemas;

/** Each schema standalone: its dialect and its name as title. Frozen: share it, never change it. */
export const API_SCHEMAS: Readonly<Record<ApiSchemaName, JsonSchema>> = deepFreeze(
  Object.fromEntries(Object.entries(schemas).map(([name, schema]) => [name, standalone(name, schema)])) as Record<
    ApiSchemaName,
    JsonSchema
  >,
);

function standalone(name: string, schema: JsonSchema): JsonSchema {
  const { title: _title, ...rest } = schema;
  return { $schema: JSON_SCHEMA_DIALECT, title: name, ...rest };
}
