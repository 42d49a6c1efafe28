import { type NatsConfigObject } from './nats-config.renderer.js';

/** Default max_payload: 8 MiB, the largest value nats-server accepts without a warning. */
export const DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024;
export const DEFAULT_START_TIMEOUT_MS = 10_000;
export const DEFAULT_STOP_TIMEOUT_MS = 5_000;
/** nats-server 2.9 takes the leafnode reconnect interval in whole seconds; 1 s is the smallest useful value. */
export const DEFAULT_LEAF_RECONNECT_SECONDS = 1;
export const NATS_SERVER_BIN_ENV = 'NATS_SERVER_BIN';

export interface NatsLeafRemote {
  /** `nats-leaf://host:port`, or several of them. */
  url: string | string[];
  /** Local account bound to the remote (default: the global account). */
  account?: string;
}

export interface NatsLeafnodeOptions {
  /** Open a leafnode listener (a random free port unless `port` is given). */
  listen?: boolean;
  port?: number;
  /**
   * host:port advertised to soliciting leafnodes. nats-server 2.9 always advertises its own leafnode URL, and a
   * remote adds advertised URLs to its reconnect list, which would let it bypass a proxy. Advertising the proxy's
   * address makes the advertised URL a duplicate of the configured one, so it is ignored.
   */
  advertise?: string;
  remotes?: NatsLeafRemote[];
  reconnectSeconds?: number;
}

export interface NatsJetStreamOptions {
  domain?: string;
  maxMemoryStore?: number;
  maxFileStore?: number;
}

export interface NatsServerOptions {
  /** server_name; default `wanmig-<random>`. */
  name?: string;
  /** Path or command name of the binary; default $NATS_SERVER_BIN, else `nats-server` on PATH. */
  binary?: string;
  /** Client port; default a random free port. */
  port?: number;
  /** HTTP monitoring (needed for /healthz readiness and /leafz); default true. */
  monitoring?: boolean;
  httpPort?: number;
  /** JetStream with a temporary store dir; default enabled. `false` disables it. */
  jetstream?: false | NatsJetStreamOptions;
  /** Default {@link DEFAULT_MAX_PAYLOAD}. */
  maxPayload?: number;
  leafnode?: NatsLeafnodeOptions;
  /** Extra top-level config keys, merged last (they win). */
  extraConfig?: NatsConfigObject;
  /** Verbose server logging (debug + trace) into the log file. */
  debug?: boolean;
  startTimeoutMs?: number;
  stopTimeoutMs?: number;
}

export interface ResolvedPorts {
  client: number;
  http?: number;
  leafnode?: number;
}

/**
 * Builds the config object for one server from its options, chosen ports and JetStream store root (the server
 * keeps its data in `<storeRoot>/jetstream`). Pure: unit-tested.
 */
export function buildNatsConfig(
  options: NatsServerOptions,
  name: string,
  host: string,
  ports: ResolvedPorts,
  storeRoot: string,
): NatsConfigObject {
  const config: NatsConfigObject = {
    server_name: name,
    listen: `${host}:${ports.client}`,
    max_payload: options.maxPayload ?? DEFAULT_MAX_PAYLOAD,
  };
  // max_pending must stay above max_payload or the server refuses to start.
  config.max_pending = Math.max(64 * 1024 * 1024, 2 * (options.maxPayload ?? DEFAULT_MAX_PAYLOAD));
  if (ports.http !== undefined) config.http = `${host}:${ports.http}`;
  if (options.jetstream !== false) {
    const js = options.jetstream ?? {};
    config.jetstream = {
      store_dir: storeRoot,
      domain: js.domain,
      max_memory_store: js.maxMemoryStore,
      max_file_store: js.maxFileStore,
    };
  }
  const leaf = options.leafnode;
  if (leaf && (ports.leafnode !== undefined || (leaf.remotes?.length ?? 0) > 0)) {
    config.leafnodes = {
      listen: ports.leafnode !== undefined ? `${host}:${ports.leafnode}` : undefined,
      advertise: leaf.advertise,
      reconnect: leaf.reconnectSeconds ?? DEFAULT_LEAF_RECONNECT_SECONDS,
      remotes: leaf.remotes?.map((remote) => ({ urls: toArray(remote.url), account: remote.account })),
    };
  }
  if (options.debug) {
    config.debug = true;
    config.trace = true;
  }
  return { ...config, ...options.extraConfig };
}

function toArray(value: string | string[]): string[] {
  return Array.isArray(value) ? value : [value];
}
