import { isIP } from 'node:net';
import { Logger } from '@nestjs/common';
import { RouteMoveRequest, validateDto, type RouteInPlace, type RouteMoveReply } from '@wanmig/protocol';
import { NetRedirectConflictError, RouteAgentUnavailableError, RouteSiteUnknownError } from '../errors.js';
import { CommandFailedError, type CommandExecutor } from './command.executor.js';
import type { FlowPins, FlowSource } from './flow.pins.js';
import type { RouteViaTable } from './route-via.table.js';

export interface RouteAgentOptions {
  site: string;
  /** The router's namespace (`ip -n`); undefined: the service's own. */
  netns?: string;
  /** Undefined: not configured (every move is UNAVAILABLE). */
  via?: RouteViaTable;
  ipBin: string;
  commandTimeoutMs: number;
  /** Open connections of this site's NICs, pinned here when their addresses move away (see FlowPins). */
  flows?: { source: FlowSource; pins: FlowPins };
}

/** Migrations remembered for conflict checks: enough for every migration of a long drill, bounded all the same. */
const REMEMBERED_MIGRATIONS = 4096;

interface PlannedRoute {
  address: string;
  family: 4 | 6;
  prefix: string;
  via: string;
}

/**
 * The route agent (`net.route.move`): points each address's host route (/32, or /128 for IPv6) at the next hop of
 * the site the VM now lives at, `ip [-6] -n <ns> route replace <prefix> via <hop>` in the router's namespace, as a
 * BGP /32 move would. `replace` makes a repeat harmless and a move back (a rollback) the same verb. Moves run one
 * at a time, so two migrations never interleave their commands.
 */
export class RouteAgent {
  private readonly logger = new Logger('net-redirect');
  /** Each migration's address set (sorted, joined): the same migration must always move the same addresses. */
  private readonly moved = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly options: RouteAgentOptions,
    private readonly executor: CommandExecutor,
  ) {}

  async move(body: unknown): Promise<RouteMoveReply> {
    const request = validateDto(RouteMoveRequest, body);
    const run = this.queue.catch(() => undefined).then(() => this.moveNow(request));
    this.queue = run;
    return await run;
  }

  private async moveNow(request: RouteMoveRequest): Promise<RouteMoveReply> {
    const { migrationId, toSite } = request;
    const addresses = [...new Set(request.addresses)];
    const key = [...addresses].sort().join(',');
    const known = this.moved.get(migrationId);
    if (known !== undefined && known !== key) {
      throw new NetRedirectConflictError(migrationId, `its routes were moved for ${known}, not ${key}`);
    }
    // Every next hop is found before any route changes: a site or family the agent does not know moves nothing.
    const plan = addresses.map((address) => this.plan(migrationId, address, toSite));
    const pinnedFlows = toSite === this.options.site ? undefined : await this.pinOpenFlows(migrationId, addresses);
    for (const [i, route] of plan.entries()) {
      try {
        await this.ip(migrationId, this.replaceArgs(route));
      } catch (err) {
        if (i > 0 && err instanceof RouteAgentUnavailableError) {
          const done = plan.slice(0, i).map((r) => r.prefix);
          throw new RouteAgentUnavailableError(`${err.message} (already moved: ${done.join(', ')})`, {
            migrationId,
            command: err.command,
            stderr: err.stderr,
            cause: err,
          });
        }
        throw err;
      }
    }
    this.remember(migrationId, key);
    // Back here (a rollback): the routes bring every flow home, pins are moot.
    if (toSite === this.options.site) await this.unpin(addresses);
    const routes: RouteInPlace[] = [];
    for (const route of plan) {
      const { stdout } = await this.ip(migrationId, this.getArgs(route));
      routes.push({ address: route.address, prefix: route.prefix, via: route.via, route: firstLine(stdout) });
    }
    this.logger.log(
      `routes of migration ${migrationId} now via ${toSite}: ${plan.map((r) => `${r.prefix} via ${r.via}`).join(', ')}`,
    );
    return {
      migrationId,
      toSite,
      ...(this.options.netns === undefined ? {} : { netns: this.options.netns }),
      routes,
      ...(pinnedFlows === undefined ? {} : { pinnedFlows }),
    };
  }

  /** Removes the pins of these addresses (their NIC here detached). Failures are logged: a pin left is harmless. */
  async unpin(addresses: readonly string[]): Promise<void> {
    await this.options.flows?.pins.unpin(addresses).catch((err: unknown) => {
      this.logger.warn(`cannot remove the flow pins of ${addresses.join(', ')}: ${(err as Error).message}`);
    });
  }

  /**
   * Pins the open connections of this site's NIC for `addresses` to this site before the routes move away. Best
   * effort: without pins the move still happens (open connections may then be reset by the new site), and the reply
   * says how many flows were pinned.
   */
  private async pinOpenFlows(migrationId: string, addresses: string[]): Promise<number | undefined> {
    const flows = this.options.flows;
    const hops = this.options.via?.get(this.options.site);
    if (flows === undefined || hops === undefined) return undefined;
    try {
      const open = await flows.source.openFlows(addresses);
      const pinned = await flows.pins.pin(open, hops);
      if (pinned > 0)
        this.logger.log(`migration ${migrationId}: ${pinned} open flow(s) pinned to ${this.options.site}`);
      return pinned;
    } catch (err) {
      this.logger.warn(`migration ${migrationId}: cannot pin the open flows: ${(err as Error).message}`);
      return 0;
    }
  }

  private plan(migrationId: string, address: string, toSite: string): PlannedRoute {
    const { via, site } = this.options;
    if (via === undefined || via.size === 0) {
      throw new RouteAgentUnavailableError(
        `the route agent at ${site} is not configured: set WANMIG_ROUTE_VIA (site=next hop, …) and WANMIG_ROUTE_NETNS`,
        { migrationId },
      );
    }
    const hops = via.get(toSite);
    if (hops === undefined) throw new RouteSiteUnknownError(migrationId, toSite, [...via.keys()]);
    const family = isIP(address) === 6 ? 6 : 4;
    const hop = hops[family];
    if (hop === undefined) {
      throw new RouteAgentUnavailableError(
        `the route agent at ${site} has no IPv${family} next hop for ${toSite} (for ${address})`,
        { migrationId },
      );
    }
    return { address, family, prefix: `${address}/${family === 4 ? 32 : 128}`, via: hop };
  }

  private base(route: PlannedRoute): string[] {
    const { ipBin, netns } = this.options;
    return [ipBin, ...(route.family === 6 ? ['-6'] : []), ...(netns === undefined ? [] : ['-n', netns])];
  }

  private replaceArgs(route: PlannedRoute): string[] {
    return [...this.base(route), 'route', 'replace', route.prefix, 'via', route.via];
  }

  private getArgs(route: PlannedRoute): string[] {
    return [...this.base(route), 'route', 'get', route.address];
  }

  private async ip(migrationId: string, argv: string[]): Promise<{ stdout: string }> {
    try {
      return await this.executor.run(argv, { timeoutMs: this.options.commandTimeoutMs });
    } catch (err) {
      const command = argv.join(' ');
      const stderr = err instanceof CommandFailedError ? err.stderr : undefined;
      const detail = err instanceof Error ? err.message : String(err);
      throw new RouteAgentUnavailableError(`route agent at ${this.options.site}: ${detail}`, {
        migrationId,
        command,
        stderr,
        cause: err,
      });
    }
  }

  private remember(migrationId: string, key: string): void {
    this.moved.delete(migrationId);
    this.moved.set(migrationId, key);
    if (this.moved.size > REMEMBERED_MIGRATIONS) this.moved.delete(this.moved.keys().next().value as string);
  }
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line.length > 0) ?? ''
  );
}
