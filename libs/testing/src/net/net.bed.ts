import { onLastWords } from '../child-process.registry.js';
import { ADDRESS_NOT_FOUND, ipCommand, NAMESPACE_NOT_FOUND } from './ip.commands.js';
import {
  assertIPv4,
  MAX_IFNAME_LENGTH,
  NET_ROLES,
  NET_SITES,
  newBedPrefix,
  nextHop,
  planNetBed,
  vmAddress,
  type NetBedPlan,
  type NetRole,
  type NetSite,
} from './net-bed.plan.js';
import { NetBedError, NetCommandError } from './net.errors.js';
import { NetnsProcess, type NetnsSpawnOptions } from './netns.process.js';
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  namespacePids,
  netnsExec,
  parsePids,
  parseRouteVia,
  replaceHostRoute,
  runIp,
  runIpSync,
  type RunOptions,
} from './netns.runner.js';

export interface BridgeOptions {
  /** Default `br0`. */
  name?: string;
  /** The bridge's own address, `<IPv4>/<length>`: the guests' gateway. */
  address?: string;
  /** The bridge's MAC, e.g. `02:00:00:00:00:fe` (locally administered). */
  mac?: string;
}

const UNICAST_MAC = /^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$/i;

function assertIfname(name: string, what: string, prefix: string): void {
  if (!/^[\w.-]+$/.test(name) || name.length > MAX_IFNAME_LENGTH)
    throw new NetBedError(`${what} name ${name} is not 1-${MAX_IFNAME_LENGTH} of [A-Za-z0-9_.-]`, prefix);
}

export interface NetBedOptions {
  /** `wm` and six hex digits (default: random). Namespaces are `<prefix>-c`, `-r`, `-a`, `-b`. */
  prefix?: string;
  /** Second octet of the bed's addresses, 10.<octet>.x.y (default: derived from the prefix, 200..249). */
  octet?: number;
  /** Limit for each `ip` command (default 10 s). */
  commandTimeoutMs?: number;
}

/**
 * Four network namespaces wired as two data centres behind one router, for redirection tests:
 *
 *   client (eth0) ── (to-client) router (to-siteA) ── (eth0) siteA
 *                                       (to-siteB) ── (eth0) siteB
 *
 * Each link is its own /30 out of 10.<octet>.0.0/16; the router forwards, and every other namespace has its default
 * route through it. A VM address (`vmAddress(i)`, from 10.<octet>.100.0/24) is on no link: `placeVm` puts it on a
 * site's `lo` as a /32, `routeVm` points the router's /32 route at that site. Everything lives only inside the bed's
 * namespaces; `destroy()` (also run by the child-process registry's last words if the test is killed) removes them.
 *
 * QEMU guests: `addBridge(site, { address, mac })` makes `br0` in the site namespace, the guests' gateway; the site's
 * router link stays routed, not enslaved, and the site forwards between the two. `addTap(site, tap)` makes a tap on
 * it, for a QEMU started inside the namespace (`-netdev tap,ifname=<tap>,script=no,downscript=no`). The guest then
 * owns the VM address, the site reaches it through `br0`'s subnet instead of holding it on `lo`. Give both sites'
 * bridges the same gateway address and MAC (an anycast gateway, as EVPN data centres do): a guest that moves keeps
 * its ARP entry for the gateway, and QEMU's `announce-self` at the destination refreshes the bridge there.
 */
export class NetBed {
  private readonly processes = new Set<NetnsProcess>();
  /** Namespaces this bed created (never one that already existed under the same name). */
  private readonly created: string[] = [];
  private destroying: Promise<void> | undefined;
  private readonly forgetLastWords: () => void;

  private constructor(
    readonly plan: NetBedPlan,
    private readonly commandTimeoutMs: number,
  ) {
    this.forgetLastWords = onLastWords(() => this.destroyNow());
  }

  /** Builds the bed; if any step fails, whatever was made is removed before the NetBedError is thrown. */
  static async create(options: NetBedOptions = {}): Promise<NetBed> {
    const prefix = options.prefix ?? newBedPrefix();
    const bed = new NetBed(planNetBed(prefix, options.octet), options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
    try {
      await bed.build();
    } catch (err) {
      await bed.destroy().catch(() => undefined);
      throw new NetBedError(`setup failed: ${(err as Error).message}`, prefix, { cause: err });
    }
    return bed;
  }

  get prefix(): string {
    return this.plan.prefix;
  }

  get destroyed(): boolean {
    return this.destroying !== undefined;
  }

  /** The namespace name of a role, for `ip -n` or `ip netns exec` by hand. */
  namespace(role: NetRole): string {
    return this.plan.namespaces[role];
  }

  /** The i-th VM address (1..254): on no link until `placeVm`. */
  vmAddress(index: number): string {
    return vmAddress(this.plan, index);
  }

  /** The site's router-facing address: where the router sends a VM's /32 when the VM is at that site. */
  nextHop(site: NetSite): string {
    return nextHop(this.plan, site);
  }

  /** Puts `address`/32 on the site's `lo` (a server bound to it there answers) and removes it from the other site. */
  async placeVm(address: string, site: NetSite): Promise<void> {
    this.assertLive();
    assertIPv4(address, 'VM address');
    await this.ip(ipCommand.replaceAddress(this.namespace(site), 'lo', `${address}/32`));
    for (const other of NET_SITES.filter((s) => s !== site)) {
      try {
        await this.ip(ipCommand.deleteAddress(this.namespace(other), 'lo', `${address}/32`));
      } catch (err) {
        if (!(err instanceof NetCommandError && ADDRESS_NOT_FOUND.test(err.stderr))) throw err;
      }
    }
  }

  /** Points the router's route for `address`/32 at the site: the route agent's move. */
  async routeVm(address: string, site: NetSite): Promise<void> {
    this.assertLive();
    await replaceHostRoute(
      { netns: this.namespace('router'), address, via: this.nextHop(site) },
      { timeoutMs: this.commandTimeoutMs },
    );
  }

  /** Where the router currently sends `address`: the site whose next hop it uses, or undefined. */
  async routedTo(address: string): Promise<NetSite | undefined> {
    this.assertLive();
    const via = parseRouteVia(await this.ip(ipCommand.routeGet(this.namespace('router'), address)));
    return NET_SITES.find((site) => this.nextHop(site) === via);
  }

  /** Runs a command inside a role's namespace and returns its stdout (bounded by the command timeout). */
  exec(role: NetRole, argv: readonly string[], options: RunOptions = {}): Promise<string> {
    this.assertLive();
    return netnsExec(this.namespace(role), argv, { timeoutMs: options.timeoutMs ?? this.commandTimeoutMs });
  }

  /** Starts a long-running program inside a role's namespace; `destroy()` stops it. */
  spawn(role: NetRole, argv: readonly string[], options: NetnsSpawnOptions = {}): NetnsProcess {
    this.assertLive();
    const proc = NetnsProcess.spawn(this.namespace(role), argv, options);
    this.processes.add(proc);
    return proc;
  }

  /**
   * A bridge (default `br0`) inside a site namespace, up, for QEMU guests' taps. The site's router link is not
   * enslaved to it: traffic between sites stays routed. With `address` (a CIDR, e.g. `10.<octet>.100.254/24`) the
   * bridge is the guests' gateway and the site forwards between it and the router; `mac` fixes its MAC (the same at
   * both sites makes an anycast gateway). A name alone may be given as before.
   */
  async addBridge(site: NetSite, options: BridgeOptions | string = {}): Promise<string> {
    this.assertLive();
    const { name = 'br0', address, mac } = typeof options === 'string' ? { name: options } : options;
    assertIfname(name, 'bridge', this.prefix);
    if (mac !== undefined && !UNICAST_MAC.test(mac))
      throw new NetBedError(`bridge MAC ${mac} is not a unicast MAC address`, this.prefix);
    const netns = this.namespace(site);
    await this.ip(ipCommand.addBridge(netns, name));
    if (mac !== undefined) await this.ip(['-n', netns, 'link', 'set', name, 'address', mac]);
    if (address !== undefined) {
      const [host, length] = address.split('/');
      assertIPv4(host, 'bridge address');
      if (!/^\d{1,2}$/.test(length ?? '') || Number(length) > 32)
        throw new NetBedError(`bridge address ${address} is not <IPv4>/<length>`, this.prefix);
      await this.ip(ipCommand.replaceAddress(netns, name, address));
      await this.ip(ipCommand.enableForwarding(netns));
    }
    await this.ip(ipCommand.linkUp(netns, name));
    return name;
  }

  /**
   * A tap device `name` in a site namespace, enslaved to `bridge` (default `br0`) and up, for a QEMU started inside
   * that namespace; it goes with the namespace.
   */
  async addTap(site: NetSite, name: string, bridge = 'br0'): Promise<string> {
    this.assertLive();
    assertIfname(name, 'tap', this.prefix);
    const netns = this.namespace(site);
    await this.ip(['-n', netns, 'tuntap', 'add', 'dev', name, 'mode', 'tap']);
    await this.ip(['-n', netns, 'link', 'set', name, 'master', bridge]);
    await this.ip(ipCommand.linkUp(netns, name));
    return name;
  }

  /**
   * Stops every process this bed spawned (by pid), kills any other process left inside its namespaces (only this
   * bed's commands can be there), and deletes the namespaces, which removes their veths. Idempotent.
   */
  destroy(): Promise<void> {
    this.destroying ??= this.teardown();
    return this.destroying;
  }

  private async build(): Promise<void> {
    const { namespaces, links } = this.plan;
    for (const role of NET_ROLES) {
      await this.ip(ipCommand.addNamespace(namespaces[role]));
      this.created.push(namespaces[role]);
      await this.ip(ipCommand.linkUp(namespaces[role], 'lo'));
    }
    const router = namespaces.router;
    for (const link of Object.values(links)) {
      const peer = namespaces[link.role];
      await this.ip(ipCommand.addVethPair(router, link.routerIf, peer, link.peerIf));
      await this.ip(ipCommand.replaceAddress(router, link.routerIf, `${link.routerAddress}/${link.prefixLength}`));
      await this.ip(ipCommand.replaceAddress(peer, link.peerIf, `${link.peerAddress}/${link.prefixLength}`));
      await this.ip(ipCommand.linkUp(router, link.routerIf));
      await this.ip(ipCommand.linkUp(peer, link.peerIf));
      await this.ip(ipCommand.replaceDefaultRoute(peer, link.routerAddress));
    }
    await this.ip(ipCommand.enableForwarding(router));
  }

  private async teardown(): Promise<void> {
    await Promise.allSettled([...this.processes].map((proc) => proc.stop()));
    const failures: string[] = [];
    for (const netns of [...this.created].reverse()) {
      for (const pid of await namespacePids(netns)) killQuietly(pid);
      try {
        await this.ip(ipCommand.deleteNamespace(netns));
      } catch (err) {
        if (!(err instanceof NetCommandError && NAMESPACE_NOT_FOUND.test(err.stderr)))
          failures.push((err as Error).message);
      }
    }
    this.forgetLastWords();
    if (failures.length > 0) throw new NetBedError(`could not delete: ${failures.join('; ')}`, this.prefix);
  }

  /** The synchronous clean-up for the registry's last words (the test process is exiting or was signalled). */
  private destroyNow(): void {
    for (const proc of this.processes) if (!proc.exitStatus) killQuietly(proc.pid);
    for (const netns of this.created) {
      for (const pid of parsePids(runIpSync(ipCommand.namespacePids(netns)).stdout)) killQuietly(pid);
      runIpSync(ipCommand.deleteNamespace(netns));
    }
  }

  private ip(args: readonly string[]): Promise<string> {
    return runIp(args, { timeoutMs: this.commandTimeoutMs });
  }

  private assertLive(): void {
    if (this.destroying) throw new NetBedError('used after destroy()', this.prefix);
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
