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
export { LocalBed, type LocalBedOptions } from './local.bed.js';
export { onLastWords, trackDir, trackPid, untrackDir, untrackPid } from './child-process.registry.js';
export * from './disk-image.generator.js';
export * from './guest-image.js';
