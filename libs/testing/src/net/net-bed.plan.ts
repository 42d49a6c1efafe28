import { randomBytes } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { NetBedError } from './net.errors.js';

/**
 * The names and addresses of one network test bed, computed without touching the system: four namespaces (client,
 * router, site A, site B), one veth link from the router to each of the others, and a separate range for VM addresses
 * that is on no link (a VM's /32 is placed on a site's `lo` and routed there by the router).
 */
export const NetRole = { client: 'client', router: 'router', siteA: 'siteA', siteB: 'siteB' } as const;
export type NetRole = (typeof NetRole)[keyof typeof NetRole];

/** The namespaces with a link to the router. */
export type NetLinkedRole = Exclude<NetRole, 'router'>;
export type NetSite = typeof NetRole.siteA | typeof NetRole.siteB;

export const NET_ROLES: readonly NetRole[] = Object.values(NetRole);
export const NET_SITES: readonly NetSite[] = [NetRole.siteA, NetRole.siteB];

const ROLE_SUFFIX = { client: 'c', router: 'r', siteA: 'a', siteB: 'b' } as const satisfies Record<NetRole, string>;
/** Third octet of each link's /30; the VM range uses its own third octet. */
const LINK_OCTET = { client: 0, siteA: 1, siteB: 2 } as const satisfies Record<NetLinkedRole, number>;
const VM_OCTET = 100;

/** Second octets 200..249: private (10/8), away from the ranges hosts usually configure. */
export const FIRST_BED_OCTET = 200;
export const BED_OCTET_SPAN = 50;
/** Linux limits interface names to 15 characters (IFNAMSIZ - 1); namespace names are kept as short. */
export const MAX_IFNAME_LENGTH = 15;
export const MAX_VM_INDEX = 254;

const PREFIX_PATTERN = /^wm[0-9a-f]{6}$/;

export interface NetLinkPlan {
  role: NetLinkedRole;
  /** The veth end in the router namespace. */
  routerIf: string;
  /** The veth end in the other namespace. */
  peerIf: string;
  routerAddress: string;
  peerAddress: string;
  prefixLength: number;
}

export interface NetBedPlan {
  prefix: string;
  /** Second octet of every address of this bed: 10.<octet>.x.y. */
  octet: number;
  namespaces: Record<NetRole, string>;
  links: Record<NetLinkedRole, NetLinkPlan>;
  /** The range VM addresses come from (`vmAddress(plan, i)`), as CIDR. */
  vmRange: string;
}

/** A fresh bed prefix: `wm` and six random hex digits, so namespaces read `wm1a2b3c-r`. */
export function newBedPrefix(random: Buffer = randomBytes(3)): string {
  return `wm${random.subarray(0, 3).toString('hex').padStart(6, '0')}`;
}

export function isBedPrefix(prefix: string): boolean {
  return PREFIX_PATTERN.test(prefix);
}

/**
 * The second octet a bed uses, derived from its prefix. Each bed lives only in its own namespaces, so two beds with the
 * same octet would still not see each other; distinct octets just keep captures and logs unambiguous.
 */
export function octetForPrefix(prefix: string): number {
  assertPrefix(prefix);
  return FIRST_BED_OCTET + (parseInt(prefix.slice(2, 4), 16) % BED_OCTET_SPAN);
}

export function planNetBed(prefix: string, octet = octetForPrefix(prefix)): NetBedPlan {
  assertPrefix(prefix);
  if (!Number.isInteger(octet) || octet < 0 || octet > 255)
    throw new NetBedError(`second octet ${octet} is not 0..255`, prefix);
  const namespaces = Object.fromEntries(NET_ROLES.map((role) => [role, `${prefix}-${ROLE_SUFFIX[role]}`])) as Record<
    NetRole,
    string
  >;
  const link = (role: NetLinkedRole): NetLinkPlan => ({
    role,
    routerIf: `to-${role}`,
    peerIf: 'eth0',
    routerAddress: `10.${octet}.${LINK_OCTET[role]}.1`,
    peerAddress: `10.${octet}.${LINK_OCTET[role]}.2`,
    prefixLength: 30,
  });
  return {
    prefix,
    octet,
    namespaces,
    links: { client: link('client'), siteA: link('siteA'), siteB: link('siteB') },
    vmRange: `10.${octet}.${VM_OCTET}.0/24`,
  };
}

/** The i-th VM address of a bed (1..254), on no link until placed at a site. */
export function vmAddress(plan: NetBedPlan, index: number): string {
  if (!Number.isInteger(index) || index < 1 || index > MAX_VM_INDEX)
    throw new NetBedError(`VM index ${index} is not 1..${MAX_VM_INDEX}`, plan.prefix);
  return `10.${plan.octet}.${VM_OCTET}.${index}`;
}

/** The router-facing address of a site: the next hop the router uses for a VM placed there. */
export function nextHop(plan: NetBedPlan, site: NetSite): string {
  return plan.links[site].peerAddress;
}

export function assertIPv4(address: string, what: string): void {
  if (!isIPv4(address)) throw new NetBedError(`${what} ${JSON.stringify(address)} is not an IPv4 address`);
}

function assertPrefix(prefix: string): void {
  if (!isBedPrefix(prefix)) throw new NetBedError(`bed prefix ${JSON.stringify(prefix)} is not wm<6 hex digits>`);
}
