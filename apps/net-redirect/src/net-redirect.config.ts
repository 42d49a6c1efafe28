import {
  IsInt,
  IsIP,
  IsString,
  Matches,
  Max,
  Min,
  MinLength,
  Validate,
  ValidateIf,
  ValidatorConstraint,
  type ValidatorConstraintInterface,
} from 'class-validator';
import { parseRouteVia } from './route/route-via.table.js';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_SITE = 'site-a';
/** Longest an `ip` command may run before it counts as failed. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 5_000;
/**
 * How long a VM NIC holds a `lines` connection whose guest went away with requests unanswered (the switchover's
 * pause), waiting for the relay (or the guest back). Longer than a switchover's pause and redirect take.
 */
export const DEFAULT_VM_HOLD_MS = 15_000;

@ValidatorConstraint({ name: 'routeVia' })
class RouteViaList implements ValidatorConstraintInterface {
  validate(value: unknown): boolean {
    return typeof value === 'string' && parseRouteVia(value).ok;
  }
  defaultMessage(args?: { value?: unknown }): string {
    const parsed = typeof args?.value === 'string' ? parseRouteVia(args.value) : undefined;
    const detail = parsed && !parsed.ok ? parsed.problems.join('; ') : 'not a string';
    return `$property must be site=<next hop> entries, comma-separated (${detail})`;
  }
}

/** Validated once at boot from WANMIG_* environment variables and command-line flags. */
export class NetRedirectConfig {
  @IsString()
  natsUrl: string = DEFAULT_NATS_URL;

  @Matches(/^[a-z0-9][a-z0-9-]{0,62}$/)
  site: string = DEFAULT_SITE;

  /** JetStream domain of this site's server (where `WANMIG_EVENTS` lives); defaults to the site name. */
  @Matches(/^[A-Za-z0-9_-]*$/)
  jsDomain: string = '';

  /** The router's network namespace the route agent acts in (`ip -n <ns>`); empty: the service's own. */
  @Matches(/^([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$/)
  routeNetns: string = '';

  /** Next hop of each site (`site-a=10.1.0.2,site-b=10.2.0.2`, IPv6 hops beside); empty: no route agent. */
  @Validate(RouteViaList)
  routeVia: string = '';

  /** iproute2's `ip`: the route agent's commands and `ip netns exec` for relays inside a namespace. */
  @IsString()
  @MinLength(1)
  ipBin: string = 'ip';

  @IsInt()
  @Min(100)
  @Max(120_000)
  commandTimeoutMs: number = DEFAULT_COMMAND_TIMEOUT_MS;

  /** The site's namespace VM NICs live in (`net.vm.attach` without `netns`); empty: a request must name one. */
  @Matches(/^([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$/)
  vmNetns: string = '';

  /** An address of this site inside that namespace where NICs' tunnel endpoints listen; empty: no tunnels here. */
  @ValidateIf((config: NetRedirectConfig) => config.vmTunnelHost !== '')
  @IsIP()
  vmTunnelHost: string = '';

  /** See DEFAULT_VM_HOLD_MS; 0: a NIC's connection closes with its guest's. */
  @IsInt()
  @Min(0)
  @Max(600_000)
  vmHoldMs: number = DEFAULT_VM_HOLD_MS;
}

export const NET_REDIRECT_CONFIG = Symbol('NET_REDIRECT_CONFIG');
export const NATS_CONNECTION = Symbol('NATS_CONNECTION');
export const COMMAND_EXECUTOR = Symbol('COMMAND_EXECUTOR');
