import { isIP } from 'node:net';
import { SITE_PATTERN } from '@wanmig/protocol';

/** Next hops per site and address family: where the router sends a VM's /32 (/128) when the VM is at that site. */
export type RouteViaTable = ReadonlyMap<string, { readonly 4?: string; readonly 6?: string }>;

export type RouteViaParse = { ok: true; table: RouteViaTable } | { ok: false; problems: string[] };

/**
 * Reads `WANMIG_ROUTE_VIA`: `site=hop` entries, comma-separated, at most one IPv4 and one IPv6 hop per site
 * (`site-a=10.1.0.2,site-b=10.2.0.2,site-b=fd00:2::2`). Empty: no table (the route agent is not configured).
 */
export function parseRouteVia(text: string): RouteViaParse {
  const table = new Map<string, { 4?: string; 6?: string }>();
  const problems: string[] = [];
  for (const entry of text.split(',').map((e) => e.trim())) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    const site = eq < 0 ? '' : entry.slice(0, eq).trim();
    const hop = eq < 0 ? '' : entry.slice(eq + 1).trim();
    const family = isIP(hop);
    if (!SITE_PATTERN.test(site) || (family !== 4 && family !== 6)) {
      problems.push(`${JSON.stringify(entry)} is not site=<IPv4 or IPv6 address>`);
      continue;
    }
    const hops = table.get(site) ?? {};
    if (hops[family] !== undefined) {
      problems.push(`${site} has two IPv${family} next hops (${hops[family]}, ${hop})`);
      continue;
    }
    hops[family] = hop;
    table.set(site, hops);
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, table };
}
