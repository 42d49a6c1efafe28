/** @wanmig/testing: nats-server launcher, WAN emulator and two-site topology for integration tests. */
export * from './errors.js';
export { getFreePort, getFreePorts, LOOPBACK_HOST } from './free-port.util.js';
export { sleep, waitUntil, type WaitOptions } from './wait.util.js';
export { resolveNatsServerBinary } from './nats-binary.resolver.js';
export { renderNatsConfig, type NatsConfigObject, type NatsConfigValue } from './nats-config.renderer.js';
export {
  buildNatsConfig,
  DEFAULT_LEAF_RECONNECT_SECONDS,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_START_TIMEOUT_MS,
  DEFAULT_STOP_TIMEOUT_MS,
  NATS_SERVER_BIN_ENV,
  type NatsJetStreamOptions,
  type NatsLeafnodeOptions,
  type NatsLeafRemote,
  type NatsServerOptions,
  type ResolvedPorts,
} from './nats-server.options.js';
export { startNatsServer, type NatsServerHandle } from './nats-server.launcher.js';
export {
  fetchMonitor,
  leafz,
  subjectMatches,
  waitForLeafConnections,
  waitForRemoteInterest,
  type LeafConnectionInfo,
  type LeafzResponse,
  type MonitoredServer,
} from './nats-monitor.client.js';
export {
  isUnlimited,
  LinkScheduler,
  queueWatermarks,
  UNLIMITED_BANDWIDTH,
  type QueueWatermarks,
  type WanLinkSettings,
} from './link.scheduler.js';
export { DeliveryQueue } from './delivery.queue.js';
export { startWanEmulator, WanDirection, WanEmulator, type WanEmulatorOptions, type WanStats } from './wan.emulator.js';
export { Site, startTwoSites, type TwoSiteOptions, type TwoSites } from './two-site.topology.js';
export {
  ServiceProcess,
  serviceEntry,
  type ServiceName as WanmigServiceName,
  type ServiceProcessOptions,
} from './service.process.js';
export { LocalBed, type LocalBedOptions, type SiteStack, type StackService } from './local.bed.js';
export { onLastWords, trackDir, trackPid, untrackDir, untrackPid } from './child-process.registry.js';
// The sim VMs' disk generator is the product's (libs/hypervisor): re-exported for tests, benches and demos.
export { generateSparseImage, type GeneratedImage } from '@wanmig/hypervisor';
export { sha256File } from './file-hash.util.js';
export * from './guest-image.js';
export { NetBed, type BridgeOptions, type NetBedOptions } from './net/net.bed.js';
export { netAvailable, netUnavailableMessage, type NetAvailability } from './net/net.availability.js';
export {
  NET_ROLES,
  NET_SITES,
  NetRole,
  newBedPrefix,
  planNetBed,
  type NetBedPlan,
  type NetLinkedRole,
  type NetLinkPlan,
  type NetSite,
} from './net/net-bed.plan.js';
export { ipCommand, type HostRoute } from './net/ip.commands.js';
export { listNamespaces, netnsExec, replaceHostRoute } from './net/netns.runner.js';
export { NetnsProcess, type NetnsSpawnOptions, type ProcessExit } from './net/netns.process.js';
export { NetBedError, NetCommandError } from './net/net.errors.js';
export {
  ProbeClient,
  startProbeClient,
  startProbeServer,
  type NetSpawner,
  type ProbeClientOptions,
  type ProbeServerOptions,
} from './net/tcp-probe.launcher.js';
export {
  parseProbeEvents,
  summarizeProbe,
  TCP_PROBE_CLIENT_SCRIPT,
  TCP_PROBE_SERVER_SCRIPT,
  type ProbeEvent,
  type ProbeOutcome,
  type ProbeReport,
} from './net/tcp-probe.scripts.js';
export { NS_PORT_SCRIPT, openNsPort, type NsPortOptions } from './net/ns.port.js';
export { netRedirectEnv } from './net/site.env.js';
