/**
 * Argument vectors for `ip` (iproute2), built without running anything so they can be checked in unit specs.
 * Every command that acts inside a namespace uses `ip -n <netns>`; nothing here touches the host's own namespace.
 */
import { assertIPv4 } from './net-bed.plan.js';

export const IP_BINARY = 'ip';

/** A host route as the route agent moves it: `<address>/32 via <via>` in `netns`. */
export interface HostRoute {
  netns: string;
  address: string;
  via: string;
}

export const ipCommand = {
  addNamespace: (netns: string): string[] => ['netns', 'add', netns],
  deleteNamespace: (netns: string): string[] => ['netns', 'del', netns],
  namespacePids: (netns: string): string[] => ['netns', 'pids', netns],
  listNamespaces: (): string[] => ['netns', 'list'],
  /** Creates the pair inside `netns` and moves the peer end straight into `peerNetns`: never in the host namespace. */
  addVethPair: (netns: string, ifname: string, peerNetns: string, peerIfname: string): string[] => [
    '-n',
    netns,
    'link',
    'add',
    ifname,
    'type',
    'veth',
    'peer',
    'name',
    peerIfname,
    'netns',
    peerNetns,
  ],
  linkUp: (netns: string, ifname: string): string[] => ['-n', netns, 'link', 'set', ifname, 'up'],
  addBridge: (netns: string, ifname: string): string[] => ['-n', netns, 'link', 'add', ifname, 'type', 'bridge'],
  /** `replace`, so placing an address twice is not an error. */
  replaceAddress: (netns: string, ifname: string, cidr: string): string[] => [
    '-n',
    netns,
    'addr',
    'replace',
    cidr,
    'dev',
    ifname,
  ],
  deleteAddress: (netns: string, ifname: string, cidr: string): string[] => [
    '-n',
    netns,
    'addr',
    'del',
    cidr,
    'dev',
    ifname,
  ],
  replaceDefaultRoute: (netns: string, via: string): string[] => {
    assertIPv4(via, 'gateway');
    return ['-n', netns, 'route', 'replace', 'default', 'via', via];
  },
  replaceHostRoute: ({ netns, address, via }: HostRoute): string[] => {
    assertIPv4(address, 'host route address');
    assertIPv4(via, 'next hop');
    return ['-n', netns, 'route', 'replace', `${address}/32`, 'via', via];
  },
  routeGet: (netns: string, address: string): string[] => {
    assertIPv4(address, 'address');
    return ['-n', netns, 'route', 'get', address];
  },
  /** Runs a program inside a namespace; `ip` execs it, so the program keeps the pid `ip` was started with. */
  exec: (netns: string, argv: readonly string[]): string[] => ['netns', 'exec', netns, ...argv],
  enableForwarding: (netns: string): string[] => ['netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'],
} as const;

/** `ip` says this when an address to delete is not there: deleting it is then a no-op. */
export const ADDRESS_NOT_FOUND = /Address not found|Cannot assign requested address/;
/** `ip netns del` of a namespace that is already gone. */
export const NAMESPACE_NOT_FOUND = /No such file or directory/;
