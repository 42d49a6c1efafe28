import {
  SimDriver,
  type HypervisorDriver,
  type IncomingVm,
  type IncomingVmSpec,
  type SourceVm,
} from '@wanmig/hypervisor';
import type { DeltaApplyConfig } from './delta-apply.config.js';

/**
 * The sim driver as the destination uses it: its guests are started detached, so a migrated VM
 * outlives a restart (or a crash) of delta-apply, as a VM outlives a restart of libvirtd. A VM
 * that never ran is stopped by delta-apply itself (failed resume, release, shutdown).
 */
export class DestinationSimDriver implements HypervisorDriver {
  readonly name = 'sim';

  constructor(private readonly sim: SimDriver) {}

  attach(vmId: string): Promise<SourceVm> {
    return this.sim.attach(vmId);
  }

  startIncoming(spec: IncomingVmSpec): Promise<IncomingVm> {
    return this.sim.startIncoming({ ...spec, detached: true });
  }

  attachIncoming(spec: Pick<IncomingVmSpec, 'vmId' | 'ramPath'>): Promise<IncomingVm> {
    return this.sim.attachIncoming(spec);
  }
}

/** The driver destination VMs are started with. */
export function createHypervisorDriver(config: DeltaApplyConfig): HypervisorDriver {
  return new DestinationSimDriver(new SimDriver({ runtimeDir: config.simRuntimeDir }));
}
