import {
  VM_DRIVERS,
  VM_WORKLOADS,
  VmState,
  type ListSitesReply,
  type ListVmsReply,
  type SiteInfo,
  type SiteListEntry,
  type VmView,
} from '../control/vm.dto.js';
import { arrayOf, boolean, count, objectSchema, oneOfValues, string, timestamp } from './object.schema.js';

export const VM_VIEW_SCHEMA = objectSchema<VmView>({
  description: 'A VM as the site that runs it sees it.',
  properties: {
    vmId: string(),
    site: string(),
    driver: oneOfValues(VM_DRIVERS),
    state: oneOfValues(VmState),
    ramBytes: count(),
    diskBytes: count(),
    workload: oneOfValues(VM_WORKLOADS),
    serviceAddress: string('Where a client reaches the guest’s service (host:port).'),
    addresses: arrayOf(string(), 'The VM’s own addresses (its service on port 7777), routed to the site it runs at.'),
    diskUri: string('The disk as this site serves it to the guest.'),
    diskPath: string(),
    createdAt: timestamp(),
    migrationId: string('The migration moving it now, or the one that brought it here.'),
  },
  optional: { driver: true, serviceAddress: true, addresses: true, diskUri: true, migrationId: true },
});

export const LIST_VMS_REPLY_SCHEMA = objectSchema<ListVmsReply>({
  properties: { vms: arrayOf(VM_VIEW_SCHEMA) },
  optional: {},
});

const siteInfoProperties = {
  site: string(),
  freeDiskBytes: count('Free bytes where this site keeps VM disks.'),
  freeRamBytes: count('Memory available for more guests.'),
  vms: count(),
  migrationsRunning: count(),
  httpUrl: string('HTTP API base URL, when the orchestrator serves one.'),
};

export const SITE_INFO_SCHEMA = objectSchema<SiteInfo>({
  description: 'A site: its name, free room, VM and migration counts.',
  properties: siteInfoProperties,
  optional: { httpUrl: true },
});

const SITE_LIST_ENTRY_SCHEMA = objectSchema<SiteListEntry>({
  description: 'A site and whether it answered; the figures are there when it did.',
  properties: {
    ...siteInfoProperties,
    reachable: boolean(),
    error: string('Why the site did not answer.'),
  },
  optional: {
    freeDiskBytes: true,
    freeRamBytes: true,
    vms: true,
    migrationsRunning: true,
    httpUrl: true,
    error: true,
  },
});

export const LIST_SITES_REPLY_SCHEMA = objectSchema<ListSitesReply>({
  properties: { sites: arrayOf(SITE_LIST_ENTRY_SCHEMA, 'This site and its peers.') },
  optional: {},
});
