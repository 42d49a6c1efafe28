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
import { NestedDto } from '../nested-dto.decorator.js';

/** VM inventory verbs, served by each site's orchestrator for the VMs that run at that site. */
export const VmVerb = {
  Create: 'vm.create',
  Get: 'vm.get',
  List: 'vm.list',
  Remove: 'vm.rm',
  /** A QEMU that someone else started becomes this site's VM, found by its QMP socket (ImportVmRequest). */
  Import: 'vm.import',
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

/** How a VM runs: `sim`, the embedded guest (the default); `qemu`, a real QEMU/KVM VM driven over QMP. */
export const VM_DRIVERS = ['sim', 'qemu'] as const;
export type VmDriver = (typeof VM_DRIVERS)[number];
/** Guests wanmig can launch for the qemu driver: `test`, the test guest test/guest/build-guest.sh builds. */
export const QEMU_GUESTS = ['test'] as const;
export type QemuGuest = (typeof QEMU_GUESTS)[number];

export const VM_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** The port an embedded guest's service answers on at its own addresses (through the site's NIC). */
export const GUEST_SERVICE_PORT = 7777;
/** Most addresses one VM may have. */
export const MAX_VM_IPS = 8;
const MIB = 1024 * 1024;

/**
 * A new VM at the site asked. `sim`: an embedded guest, its disk served through this site's disk-transfer. `qemu`: a
 * QEMU VM launched from `guest` (its disk a copy of the guest's image; `diskBytes` is then the image's own size).
 */
export class CreateVmRequest {
  @Matches(VM_ID_PATTERN)
  vmId!: string;

  @IsIn(VM_DRIVERS)
  driver: VmDriver = 'sim';

  /** qemu only (and required there): the guest to launch. */
  @IsOptional()
  @IsIn(QEMU_GUESTS)
  guest?: QemuGuest;

  /** qemu only: vCPUs (1). */
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(64)
  cpus?: number;

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

/** A QEMU block node name: a letter, then up to 30 of [A-Za-z0-9_.-] (QEMU's own rule). */
export const QEMU_NODE_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_.-]{0,30}$/;
/** An absolute path a unix socket can have (sun_path: 107 bytes), printable ASCII as the machine's other paths. */
export const UNIX_SOCKET_PATH_PATTERN = /^\/[\x20-\x7e]{0,106}$/;

/**
 * A QEMU already running at the site (started by someone else) becomes the site's VM `vmId`: found by its QMP
 * socket, its machine read from its command line, its disk (block node `diskNode`, a raw file image) mirrored when it
 * migrates. It keeps running on its own image; nothing is copied.
 */
export class ImportVmRequest {
  @Matches(VM_ID_PATTERN)
  vmId!: string;

  @Matches(UNIX_SOCKET_PATH_PATTERN, {
    message: 'qmpSocket must be an absolute path of at most 107 printable ASCII characters',
  })
  qmpSocket!: string;

  @Matches(QEMU_NODE_NAME_PATTERN, {
    message: 'diskNode must be a QEMU node name (a letter, then up to 30 of [A-Za-z0-9_.-])',
  })
  diskNode!: string;

  /** Not offered for QEMU VMs yet (as for vm.create): refused. */
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

/** The machine a QEMU VM runs (its launch spec): what a destination starts to receive it, and records after. */
export class QemuMachineSpec {
  @Matches(/^\/[\x20-\x7e]{0,4095}$/)
  kernel!: string;

  @Matches(/^\/[\x20-\x7e]{0,4095}$/)
  initrd!: string;

  @Matches(/^[\x20-\x7e]{0,2048}$/)
  append!: string;

  @IsIn(['q35', 'pc'])
  machine!: 'q35' | 'pc';

  @IsIn(['tcg', 'kvm'])
  accel!: 'tcg' | 'kvm';

  @IsInt()
  @Min(16)
  @Max(4 * 1024 * 1024)
  ramMiB!: number;

  @IsInt()
  @Min(1)
  @Max(64)
  cpus!: number;

  @IsInt()
  @Min(1)
  @Max(65535)
  guestPort!: number;
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

  @IsIn(VM_DRIVERS)
  driver: VmDriver = 'sim';

  /** qemu: the machine delta-apply started (its QEMU, found by the migration id, becomes the VM). */
  @IsOptional()
  @NestedDto(() => QemuMachineSpec)
  machine?: QemuMachineSpec;

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
  /** Absent in records older than the qemu driver: `sim`. */
  driver?: VmDriver;
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
