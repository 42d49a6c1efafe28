import type { HypervisorDriver, IncomingVm, IncomingVmSpec, SourceVm } from '@wanmig/hypervisor';
import type { DeltaApplyConfig } from './delta-apply.config.js';
import { DriverUnavailableError } from './errors.js';

/**
 * Stands in for a driver this build does not have: every call fails with UNAVAILABLE, and a resume
 * checks for it before it stops receiving, so asking for it changes nothing.
 */
export class UnavailableDriver implements HypervisorDriver {
  constructor(readonly name: string) {}

  error(): DriverUnavailableError {
    return new DriverUnavailableError(this.name);
  }

  attach(_vmId: string): Promise<SourceVm> {
    return Promise.reject(this.error());
  }

  startIncoming(_spec: IncomingVmSpec): Promise<IncomingVm> {
    return Promise.reject(this.error());
  }
}

/** The driver destination VMs are started with. */
export function createHypervisorDriver(_config: DeltaApplyConfig): HypervisorDriver {
  return new UnavailableDriver('sim');
}
