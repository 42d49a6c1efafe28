import 'reflect-metadata';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsIn,
  IsInt,
  IsIP,
  IsOptional,
  IsString,
  Matches,
  Max,
  Min,
} from 'class-validator';

/** VM inventory verbs, served by each site's orchestrator for the VMs that run at that site. */
export const VmVerb = {
  Create: 'vm.create',
  Get: 'vm.get',
  List: 'vm.list',
  Remove: 'vm.rm',
  /** Internal: the destination's orchestrator takes over a VM that a committed migration brought. */
  Adopt: 'vm.adopt',
  /**
   * Internal: the destination's orchestrator gives an arriving VM (resumed there, not yet adopted) its addresses at
   * that site (net-redirect's NIC), in REDIRECT, before the route moves.
   */
  AttachNetwork: 'vm.net.attach',
} as const;
export type VmVerb = (typeof VmVerb)[keyof typeof VmVerb];

export const SiteVerb = {
  /** This site: name, free room, VM and migration counts. */
  Info: 'site.info',
  /** This site and its peers, each with whether it answered. */
  List: 'site.list',
} as const;
export type SiteVerb = (typeof SiteVerb)[keyof typeof SiteVerb];

export const VM_WORKLOADS = ['idle', 'web', 'db', 'write-heavy'] as const;
export type VmWorkload = (typeof VM_WORKLOADS)[number];

export const VM_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** The port an embedded guest's service answers on at its own addresses (through the site's NIC). */
export const GUEST_SERVICE_PORT = 7777;
/** Most addresses one VM may have. */
export const MAX_VM_IPS = 8;
const MIB = 1024 * 1024;

/** A new embedded (sim) guest at the site asked: its disk goes through this site's disk-transfer. */
export class CreateVmRequest {
  @Matches(VM_ID_PATTERN)
  vmId!: string;

  /** The sim driver runs guests of 64 MiB to 4 GiB. */
  @IsInt()
  @Min(64 * MIB)
  @Max(64 * 1024 * MIB)
  ramBytes: number = 256 * MIB;

  @IsInt()
  @Min(MIB)
  @Max(16 * 1024 * 1024 * MIB)
  diskBytes: number = 256 * MIB;

  @IsIn(VM_WORKLOADS)
  workload: VmWorkload = 'web';

  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(2 ** 32 - 1)
  seed?: number;

  /**
   * The VM's own IPv4/IPv6 addresses: the site's net-redirect puts them on the VM's NIC (service on port 7777) and
   * the route agent points their /32s at this site. A migration then moves them with the VM.
   */
  @IsOptional()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_VM_IPS)
  @IsIP(undefined, { each: true })
  addresses?: string[];
}

export class VmRef {
  @Matches(VM_ID_PATTERN)
  vmId!: string;
}

/** Internal (orchestrator to orchestrator): a VM that now runs here after a committed migration. */
export class AdoptVmRequest {
  @Matches(VM_ID_PATTERN)
  vmId!: string;

  @Matches(/^[A-Za-z0-9_-]{1,128}$/)
  migrationId!: string;

  @IsInt()
  @Min(1)
  ramBytes!: number;

  @IsInt()
  @Min(1)
  diskBytes!: number;

  @IsIn(VM_WORKLOADS)
  workload!: VmWorkload;

  /** The image delta-apply wrote, on the adopting site. */
  @IsString()
  diskPath!: string;

  /** The RAM file the resumed guest runs on, on the adopting site. */
  @IsOptional()
  @IsString()
  ramPath?: string;

  @IsOptional()
  @IsArray()
  @ArrayMaxSize(MAX_VM_IPS)
  @IsIP(undefined, { each: true })
  addresses?: string[];
}

/** Internal (orchestrator to orchestrator): the arriving VM's addresses go on its NIC at the destination. */
export class AttachVmNetworkRequest {
  @Matches(VM_ID_PATTERN)
  vmId!: string;

  @Matches(/^[A-Za-z0-9_-]{1,128}$/)
  migrationId!: string;

  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_VM_IPS)
  @IsIP(undefined, { each: true })
  addresses!: string[];
}

export const VmState = {
  Running: 'running',
  /** A migration is moving it; it still runs here until the migration commits. */
  Migrating: 'migrating',
  /** Its process is gone (crashed or stopped outside wanmig). */
  Stopped: 'stopped',
} as const;
export type VmState = (typeof VmState)[keyof typeof VmState];

export interface VmView {
  vmId: string;
  site: string;
  state: VmState;
  ramBytes: number;
  diskBytes: number;
  workload: VmWorkload;
  /** Where a client reaches the guest's service (host:port). */
  serviceAddress?: string;
  /** The VM's own addresses (its service on port 7777 there), routed to the site it runs at. */
  addresses?: string[];
  /** The disk as this site serves it to the guest. */
  diskUri?: string;
  diskPath: string;
  createdAt: string;
  /** The migration moving it now, or the one that brought it here. */
  migrationId?: string;
}

export interface ListVmsReply {
  vms: VmView[];
}

export interface SiteInfo {
  site: string;
  /** Free bytes where this site keeps VM disks. */
  freeDiskBytes: number;
  /** Memory available for more guests. */
  freeRamBytes: number;
  vms: number;
  migrationsRunning: number;
  /** HTTP API base URL, when the orchestrator serves one. */
  httpUrl?: string;
}

export interface SiteListEntry extends Partial<SiteInfo> {
  site: string;
  reachable: boolean;
  error?: string;
}

export interface ListSitesReply {
  sites: SiteListEntry[];
}
