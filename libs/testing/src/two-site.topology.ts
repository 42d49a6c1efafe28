import { NatsServerNotFoundError, TopologyStartError } from './errors.js';
import { LOOPBACK_HOST, getFreePort } from './free-port.util.js';
import { type WanLinkSettings } from './link.scheduler.js';
import { waitForLeafConnections, waitForRemoteInterest } from './nats-monitor.client.js';
import { type NatsServerHandle, startNatsServer } from './nats-server.launcher.js';
import { type NatsServerOptions } from './nats-server.options.js';
import { waitUntil } from './wait.util.js';
import { WanEmulator, type WanEmulatorOptions } from './wan.emulator.js';

export const Site = { A: 'site-a', B: 'site-b' } as const;
export type Site = (typeof Site)[keyof typeof Site];

export interface TwoSiteOptions extends Partial<WanLinkSettings> {
  /** Extra emulator options (per-direction settings, queue margin). */
  wan?: Omit<WanEmulatorOptions, 'target' | 'clientSide' | 'delayMs' | 'bandwidthBps'>;
  /** Overrides for each site's server (names and JetStream domains default to `site-a` / `site-b`). */
  siteA?: NatsServerOptions;
  siteB?: NatsServerOptions;
  /** nats-server binary for both sites. */
  binary?: string;
  /** How long to wait for the leafnode link at start; default 15 s. */
  linkTimeoutMs?: number;
}

export interface TwoSites {
  a: NatsServerHandle;
  b: NatsServerHandle;
  /** The link between the sites; `aToB` counts bytes from site A to site B. */
  wan: WanEmulator;
  /** Resolves once both servers see the leafnode connection again (e.g. after `wan.cut()`). */
  waitForLink(timeoutMs?: number): Promise<void>;
  /** Stops both servers and the emulator. Idempotent; safe after a partial start. */
  stop(): Promise<void>;
}

const DEFAULT_LINK_TIMEOUT_MS = 15_000;

/**
 * Two sites, each a nats-server with its own JetStream domain, joined by a leafnode connection that runs through a
 * {@link WanEmulator}: site B solicits site A via the emulator.
 *
 * Why a leafnode and not a gateway: a leafnode link is one TCP connection dialled by one side, so a single proxy
 * sees every byte in both directions and a cut is one broken connection that the leaf redials on its own.
 * Gateways open a connection from each side and gossip the servers' real gateway URLs, so traffic could bypass the
 * proxy. A leafnode hub also advertises its own URL to leaves (nats-server 2.9 always does), which the leaf then
 * adds to its reconnect list; site A therefore advertises the emulator's address, which the leaf ignores as a
 * duplicate of the configured URL. Nothing between the sites can go around the emulator.
 */
export async function startTwoSites(options: TwoSiteOptions = {}): Promise<TwoSites> {
  const parts: { a?: NatsServerHandle; b?: NatsServerHandle; wan?: WanEmulator } = {};
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // Emulator first: the link drops at once, so each server shuts down alone instead of redialling the other.
      await parts.wan?.close();
      await Promise.all([parts.b?.stop(), parts.a?.stop()]);
    })();
    return stopping;
  };
  const linkTimeout = options.linkTimeoutMs ?? DEFAULT_LINK_TIMEOUT_MS;
  let stage = 'choosing ports';
  try {
    // The emulator must know site A's leafnode port, and site A must advertise the emulator: pick A's port first.
    const leafPort = options.siteA?.leafnode?.port ?? (await getFreePort());
    stage = 'starting the WAN emulator';
    parts.wan = await WanEmulator.start({
      ...options.wan,
      target: { host: LOOPBACK_HOST, port: leafPort },
      clientSide: 'b',
      delayMs: options.delayMs,
      bandwidthBps: options.bandwidthBps,
    });
    stage = `starting ${Site.A}`;
    parts.a = await startNatsServer({
      binary: options.binary,
      name: Site.A,
      ...options.siteA,
      jetstream: siteJetStream(options.siteA, Site.A),
      leafnode: { ...options.siteA?.leafnode, listen: true, port: leafPort, advertise: parts.wan.address },
    });
    stage = `starting ${Site.B}`;
    parts.b = await startNatsServer({
      binary: options.binary,
      name: Site.B,
      ...options.siteB,
      jetstream: siteJetStream(options.siteB, Site.B),
      leafnode: { ...options.siteB?.leafnode, remotes: [{ url: `nats-leaf://${parts.wan.address}` }] },
    });
    stage = 'waiting for the leafnode link';
    const { a, b, wan } = parts;
    const domainA = jetStreamDomain(options.siteA, Site.A);
    const domainB = jetStreamDomain(options.siteB, Site.B);
    const waitForLink = async (timeoutMs = linkTimeout): Promise<void> => {
      // The emulator check first: right after a cut, /leafz may still list the connection that was just broken.
      await waitUntil(() => !wan.isCut && wan.stats().connections > 0, { what: 'the WAN link', timeoutMs });
      await Promise.all([waitForLeafConnections(a, 1, timeoutMs), waitForLeafConnections(b, 1, timeoutMs)]);
      // Each side maps its domain's JetStream API a moment after the leaf connects; wait until the other side
      // knows, so that a client at one site can use the other site's JetStream as soon as this resolves.
      await Promise.all([
        domainB && waitForRemoteInterest(a, `$JS.${domainB}.API.INFO`, timeoutMs),
        domainA && waitForRemoteInterest(b, `$JS.${domainA}.API.INFO`, timeoutMs),
      ]);
    };
    await waitForLink();
    return { a, b, wan, waitForLink, stop };
  } catch (err) {
    await stop();
    if (err instanceof NatsServerNotFoundError) throw err;
    throw new TopologyStartError(stage, { cause: err });
  }
}

function jetStreamDomain(options: NatsServerOptions | undefined, site: Site): string | undefined {
  const js = siteJetStream(options, site);
  return js === false ? undefined : js?.domain;
}

function siteJetStream(options: NatsServerOptions | undefined, domain: Site): NatsServerOptions['jetstream'] {
  if (options?.jetstream === false) return false;
  return { domain, ...options?.jetstream };
}
