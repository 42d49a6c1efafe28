export * from './hypervisor.driver.js';
export * from './errors.js';
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
