import { Site } from '../two-site.topology.js';
import type { NetBed } from './net.bed.js';

/**
 * net-redirect's environment at each site of a LocalBed, wired to a NetBed: the route agent acts in the router's
 * namespace with each site's router-facing address as next hop, and VM NICs live in the site's own namespace with
 * that same address as the tunnel endpoint the other site relays to.
 */
export function netRedirectEnv(bed: NetBed): Record<Site, Record<string, string>> {
  const via = `${Site.A}=${bed.nextHop('siteA')},${Site.B}=${bed.nextHop('siteB')}`;
  const site = (role: 'siteA' | 'siteB') => ({
    WANMIG_ROUTE_NETNS: bed.namespace('router'),
    WANMIG_ROUTE_VIA: via,
    WANMIG_VM_NETNS: bed.namespace(role),
    WANMIG_VM_TUNNEL_HOST: bed.nextHop(role),
  });
  return { [Site.A]: site('siteA'), [Site.B]: site('siteB') };
}
