/**
 * How a guest's one NIC (`virtio-net-pci`, id `net0dev`, netdev `net0`) reaches a network. By default QEMU's
 * user-mode network with one host port forwarded on 127.0.0.1; with a QemuTapNetwork, a tap device in a network
 * namespace, QEMU itself running inside that namespace.
 */

/**
 * The guest's NIC on a tap device (e.g. enslaved to a bridge) inside network namespace `netns`: QEMU runs under
 * `ip netns exec <netns>` and opens `tap` there; the tap should exist already (QEMU would otherwise create one, not
 * on any bridge). Everything QEMU reaches on the host must then be a unix socket (QMP, the migration stream, an
 * NBD mirror target): the namespace has its own loopback. No port is forwarded: the guest is reached at its own
 * address on that network. Both ends of a migration need the same `mac` (the guest keeps it anyway).
 */
export interface QemuTapNetwork {
  netns: string;
  /** The tap device's name in `netns`: at most 15 characters. */
  tap: string;
  /** The NIC's MAC address, `52:54:00:12:34:56` style: unicast. */
  mac: string;
}

/** Netdev and device ids: the same at both ends of a migration whatever the backend (QEMU migrates the device). */
const NETDEV_ID = 'net0';
const NIC_DEVICE = `virtio-net-pci,netdev=${NETDEV_ID},id=net0dev,romfile=`;
const LOOPBACK = '127.0.0.1';
const NETNS_NAME = /^[\w.-]{1,64}$/;
/** IFNAMSIZ is 16 bytes, NUL included. */
const IFNAME = /^[\w.-]{1,15}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** What is wrong with a tap network spec (empty when nothing). */
export function tapNetworkProblems(network: QemuTapNetwork): string[] {
  const problems: string[] = [];
  if (!NETNS_NAME.test(network.netns)) problems.push(`network.netns '${network.netns}' is not 1-64 of [A-Za-z0-9_.-]`);
  if (!IFNAME.test(network.tap)) problems.push(`network.tap '${network.tap}' is not 1-15 of [A-Za-z0-9_.-]`);
  if (!MAC.test(network.mac)) problems.push(`network.mac '${network.mac}' is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  // The low bit of the first octet marks a multicast address: no NIC may have one.
  else if (parseInt(network.mac.slice(0, 2), 16) & 1) problems.push(`network.mac ${network.mac} is multicast`);
  return problems;
}

/**
 * QEMU's NIC arguments: the tap in its namespace, or user-mode networking (`restrict=on`: the guest reaches nothing
 * outside; only `servicePort` on 127.0.0.1 comes in, forwarded to `guestPort`).
 */
export function nicArgs(nic: { network: QemuTapNetwork } | { servicePort: number; guestPort: number }): string[] {
  if ('network' in nic) {
    const { tap, mac } = nic.network;
    return [
      ...['-netdev', `tap,id=${NETDEV_ID},ifname=${tap},script=no,downscript=no`],
      ...['-device', `${NIC_DEVICE},mac=${mac.toLowerCase()}`],
    ];
  }
  return [
    ...['-netdev', `user,id=${NETDEV_ID},restrict=on,hostfwd=tcp:${LOOPBACK}:${nic.servicePort}-:${nic.guestPort}`],
    ...['-device', NIC_DEVICE],
  ];
}

/** The command that runs `bin args` inside `netns` (`ip netns exec` execs it: the pid stays QEMU's), or as is. */
export function inNetns(netns: string | undefined, bin: string, args: string[]): { command: string; args: string[] } {
  return netns === undefined ? { command: bin, args } : { command: 'ip', args: ['netns', 'exec', netns, bin, ...args] };
}
