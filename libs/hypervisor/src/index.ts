export * from './hypervisor.driver.js';
export * from './errors.js';
export { generateSparseImage, type GeneratedImage } from './disk-image.generator.js';
export {
  DEFAULT_PAGE_CACHE_BYTES,
  GUEST_READY_PREFIX,
  MAX_RAM_BYTES,
  MAX_THROTTLE_PERCENT,
  MIN_RAM_BYTES,
  SERVICE_DISK_BLOCK,
  SIM_PAGE_SIZE,
  SIM_WORKLOADS,
  SimWorkload,
  isSimWorkload,
} from './sim/sim.constants.js';
export {
  DEFAULT_CONTROL_TIMEOUT_MS,
  DEFAULT_SIM_RUNTIME_DIR,
  SimDriver,
  type SimDriverOptions,
  type SimIncomingSpec,
  type SimLaunchSpec,
} from './sim/sim.driver.js';
export { SimSourceVm } from './sim/sim-source.vm.js';
export { SimIncomingVm } from './sim/sim-incoming.vm.js';
export { SimPageMemory } from './sim/sim-page.memory.js';
export { SimGuestProcess, type GuestExit } from './sim/guest.process.js';
export { simGuestEntry } from './sim/guest.entry.js';
export { type GuestStats, type ResumeIncomingResult, type SimVmDescription } from './sim/sim.types.js';
export { ControlOp } from './sim/control.protocol.js';
export { ServiceCommand, parseServiceReply } from './sim/service.protocol.js';
export { SimServiceClient } from './sim/service.client.js';
export { DEVICE_STATE_BYTES } from './sim/device.state.js';
export { WORKLOAD_PROFILES, type WorkloadProfile } from './sim/workload.profile.js';
export { guestPaths, type GuestRuntimeInfo } from './sim/runtime.paths.js';
export { QmpClient, DEFAULT_QMP_TIMEOUT_MS, MAX_QMP_LINE, type QmpConnectOptions } from './qemu/qmp.client.js';
export {
  QMP_ANY_EVENT,
  type QmpEvent,
  type QmpEventListener,
  type QmpGreeting,
  type QmpStatus,
  type QmpVersion,
} from './qemu/qmp.types.js';
export {
  QMP_ERROR_CODES,
  QmpClosedError,
  QmpCommandError,
  QmpConnectError,
  QmpProtocolError,
  QmpTimeoutError,
} from './qemu/qmp.errors.js';
export {
  GuestImageError,
  QemuConfigError,
  QemuImportError,
  QemuMigrationFailedError,
  QemuMigrationUnsafeError,
  QemuNotFoundError,
  QemuStartError,
  QemuVersionError,
} from './qemu/qemu.errors.js';
export {
  MIN_QEMU_VERSION,
  TCG_MIGRATION_MIN_QEMU_VERSION,
  QEMU_SYSTEM_BIN_ENV,
  QEMU_SYSTEM_BIN_NAME,
  compareQemuVersions,
  findQemuBinary,
  formatQemuVersion,
  parseQemuVersion,
  type FindQemuOptions,
  type QemuBinary,
  type QemuVersionNumber,
} from './qemu/qemu.binary.js';
export {
  DEFAULT_QEMU_READY_TIMEOUT_MS,
  DEFAULT_QEMU_STOP_TIMEOUT_MS,
  QemuProcess,
  qmpArgs,
  type QemuExit,
  type QemuStartOptions,
} from './qemu/qemu.process.js';
export {
  Accelerator,
  DEFAULT_MARKER_BOOT_RAM_MIB,
  bootUntilMarker,
  type MarkerBootOptions,
  type MarkerBootResult,
} from './qemu/marker.boot.js';
export {
  DEFAULT_ACCEL_PROBE_TIMEOUT_MS,
  KVM_DEVICE,
  forgetAcceleratorProbe,
  probeAccelerator,
  type AccelProbeOptions,
  type AccelProbeResult,
} from './qemu/accel.probe.js';
export * from './qemu/qemu.disk-mirror.js';
export * from './qemu/qemu.migration-control.js';
export { DEFAULT_QEMU_APPEND, kernelAppend, type KernelAppendOptions } from './qemu/kernel.append.js';
export {
  DEFAULT_GUEST_BUILD_TIMEOUT_MS,
  DEFAULT_GUEST_CACHE_DIR,
  GUEST_CACHE_ENV,
  GUEST_DISK_CHURN_FILE,
  GUEST_DISK_COUNTER_FILE,
  GUEST_FAILED_MARKER,
  GUEST_READY_MARKER,
  ensureGuestImage,
  guestCacheDir,
  guestImageAt,
  testGuestAppend,
  type EnsureGuestImageOptions,
  type GuestImage,
  type GuestWorkload,
} from './qemu/test-guest.image.js';
export {
  DEFAULT_ANNOUNCE,
  DEFAULT_QEMU_GUEST_PORT,
  DEFAULT_QEMU_MIN_RAM_MIB,
  QEMU_DISK_DEVICE,
  QEMU_DISK_NODE,
  QEMU_EXITED,
  QemuDriver,
  QemuIncomingVm,
  QemuMachine,
  guestArgs,
  type QemuAnnounce,
  type QemuDriverOptions,
  type QemuGuestLaunch,
  type QemuGuestSpec,
  type QemuIncomingPaths,
  type QemuIncomingSpec,
  type QemuProcessHandle,
  type QemuResumeResult,
} from './qemu/qemu.driver.js';
export { inNetns, nicArgs, tapNetworkProblems, type QemuTapNetwork } from './qemu/qemu.network.js';
export * from './qemu/qemu.vm.js';
export {
  qemuOptions,
  qemuOpts,
  qmpSocketPaths,
  readQemuCommandLine,
  type QemuCommandLineMachine,
  type QemuCommandLineReading,
  type QemuOption,
} from './qemu/qemu.command-line.js';
export { findQemuProcess, importQemuVm, type QemuImportRequest, type QemuProcessInfo } from './qemu/qemu.import.js';
