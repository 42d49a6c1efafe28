import { ValidationError } from '@wanmig/protocol';
import { loadConfig } from '@wanmig/service';
import { describe, expect, it } from 'vitest';
import { NetRedirectConfig } from './net-redirect.config.js';

describe('NetRedirectConfig', () => {
  it('has named defaults: no route agent, `ip` on PATH', () => {
    expect(loadConfig(NetRedirectConfig, {})).toMatchObject({
      site: 'site-a',
      routeNetns: '',
      routeVia: '',
      ipBin: 'ip',
      commandTimeoutMs: 5000,
    });
  });

  it('reads the route agent from WANMIG_ROUTE_NETNS and WANMIG_ROUTE_VIA', () => {
    const config = loadConfig(NetRedirectConfig, {
      WANMIG_SITE: 'site-b',
      WANMIG_ROUTE_NETNS: 'wm1a2b3c-r',
      WANMIG_ROUTE_VIA: 'site-a=10.200.0.2,site-b=10.200.0.6',
    });
    expect(config).toMatchObject({ routeNetns: 'wm1a2b3c-r', routeVia: 'site-a=10.200.0.2,site-b=10.200.0.6' });
  });

  it('refuses a bad next-hop list or namespace at boot, naming what is wrong', () => {
    const bad = () =>
      loadConfig(NetRedirectConfig, {
        WANMIG_ROUTE_VIA: 'site-a=10.200.0.2,site-b=router',
        WANMIG_ROUTE_NETNS: '../x',
      });
    expect(bad).toThrow(ValidationError);
    expect(bad).toThrow(/routeNetns/);
    expect(bad).toThrow(/routeVia must be site=<next hop> entries.*"site-b=router" is not site=<IPv4 or IPv6 address>/);
  });

  it('reads the VM NICs’ namespace and tunnel host, and refuses a tunnel host that is not an address', () => {
    expect(loadConfig(NetRedirectConfig, {})).toMatchObject({ vmNetns: '', vmTunnelHost: '', vmHoldMs: 15_000 });
    expect(loadConfig(NetRedirectConfig, { WANMIG_VM_HOLD_MS: '0' }).vmHoldMs).toBe(0);
    expect(
      loadConfig(NetRedirectConfig, { WANMIG_VM_NETNS: 'wm1a2b3c-a', WANMIG_VM_TUNNEL_HOST: '10.200.1.2' }),
    ).toMatchObject({ vmNetns: 'wm1a2b3c-a', vmTunnelHost: '10.200.1.2' });
    const bad = () => loadConfig(NetRedirectConfig, { WANMIG_VM_TUNNEL_HOST: 'site-a', WANMIG_VM_NETNS: 'a b' });
    expect(bad).toThrow(/vmTunnelHost/);
    expect(bad).toThrow(/vmNetns/);
  });
});
