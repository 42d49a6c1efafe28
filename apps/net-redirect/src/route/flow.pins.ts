import { isIP } from 'node:net';
import type { OpenFlow } from '../relay/tcp.forwarder.js';
import type { CommandExecutor } from './command.executor.js';

/** Where the open connections to a VM's addresses come from (this site's NICs). */
export interface FlowSource {
  openFlows(addresses: readonly string[]): Promise<OpenFlow[]>;
}

export interface FlowPinsOptions {
  ipBin: string;
  /** The router's namespace; undefined: the service's own. */
  netns?: string;
  commandTimeoutMs: number;
  /** This site's routing table in the router for pinned flows (one per site: both sites' agents share the router). */
  table: number;
}

/** Before the router's `main` table (32766), after `local` (0). */
export const PIN_RULE_PRIORITY = 1000;
/** Tables 30000 + the site's index in the next-hop table. */
export const PIN_TABLE_BASE = 30_000;

interface Pin {
  family: 4 | 6;
  rule: string[];
}

/**
 * Keeps the open connections of this site's NIC on this site when the VM's host route moves away. The router has no
 * connection tracking here, and a segment of an open connection that reaches the new site is answered with a reset
 * (the new site owns the address, not the connection). So, before the /32 moves, each open flow gets a policy rule
 * in the router (`ip rule add from <client> to <address> ipproto tcp sport <p> dport <q> table <T>`, T routing the
 * address to this site): open connections keep arriving here, where the NIC relays them, and new ones follow the
 * /32 to the new site.
 */
export class FlowPins {
  /** Pins by address, each keyed by its flow. */
  private readonly pins = new Map<string, Map<string, Pin>>();

  constructor(
    private readonly options: FlowPinsOptions,
    private readonly executor: CommandExecutor,
  ) {}

  /** Pins each flow to `hops` (this site's next hops by family); resolves with how many are pinned now. */
  async pin(flows: readonly OpenFlow[], hops: { 4?: string; 6?: string }): Promise<number> {
    const routed = new Set<string>();
    let count = 0;
    for (const flow of flows) {
      const family = isIP(flow.address) === 6 ? 6 : 4;
      const hop = hops[family];
      if (hop === undefined) continue;
      const byFlow = this.pins.get(flow.address) ?? new Map<string, Pin>();
      this.pins.set(flow.address, byFlow);
      const key = `${flow.client}:${flow.clientPort}>${flow.port}`;
      if (!routed.has(flow.address)) {
        await this.ip(family, ['route', 'replace', prefix(flow.address), 'via', hop, 'table', `${this.options.table}`]);
        routed.add(flow.address);
      }
      if (!byFlow.has(key)) {
        const rule = [
          'priority',
          `${PIN_RULE_PRIORITY}`,
          'from',
          prefix(flow.client),
          'to',
          prefix(flow.address),
          'ipproto',
          'tcp',
          'sport',
          `${flow.clientPort}`,
          'dport',
          `${flow.port}`,
          'table',
          `${this.options.table}`,
        ];
        await this.ip(family, ['rule', 'add', ...rule]);
        byFlow.set(key, { family, rule });
      }
      count++;
    }
    return count;
  }

  /** Removes the pins of these addresses and their table routes; every one is tried, the first failure thrown. */
  async unpin(addresses: readonly string[]): Promise<void> {
    let first: Error | undefined;
    for (const address of addresses) {
      const byFlow = this.pins.get(address);
      if (byFlow === undefined) continue;
      this.pins.delete(address);
      const family = isIP(address) === 6 ? 6 : 4;
      const steps = [
        ...[...byFlow.values()].map((pin) => ['rule', 'del', ...pin.rule]),
        ['route', 'del', prefix(address), 'table', `${this.options.table}`],
      ];
      for (const step of steps) {
        await this.ip(family, step).catch((err: unknown) => {
          first ??= err instanceof Error ? err : new Error(String(err));
        });
      }
    }
    if (first !== undefined) throw first;
  }

  /** Addresses with pins. */
  get pinned(): string[] {
    return [...this.pins.keys()];
  }

  private async ip(family: 4 | 6, args: string[]): Promise<void> {
    const { ipBin, netns, commandTimeoutMs } = this.options;
    const argv = [ipBin, ...(family === 6 ? ['-6'] : []), ...(netns === undefined ? [] : ['-n', netns]), ...args];
    await this.executor.run(argv, { timeoutMs: commandTimeoutMs });
  }
}

function prefix(address: string): string {
  return `${address}/${isIP(address) === 6 ? 128 : 32}`;
}
