import { type VmDescription, type VmRunState } from '../hypervisor.driver.js';
import { type SimWorkload } from './sim.constants.js';

/** `describe` of a sim guest: the driver-neutral description plus where its pieces are. */
export interface SimVmDescription extends VmDescription {
  pid: number;
  ramFile: string;
  controlSocket: string;
  workload: SimWorkload;
  seed: number;
}

/** What a sim guest has done so far (`stats` control op; STATE on the service). */
export interface GuestStats {
  vmId: string;
  state: VmRunState;
  counter: number;
  ticks: number;
  workload: SimWorkload;
  seed: number;
  throttlePercent: number;
  ramBytes: number;
  /** Page writes since this process started (a run of n pages counts n; the counter's page counts too). */
  pageWrites: number;
  ramBytesWritten: number;
  kvUpdates: number;
  diskWrites: number;
  diskBytesWritten: number;
  diskErrors: number;
  /** Times the disk's connection broke (its server restarted) and was made again; requests sent again then. */
  diskReconnects: number;
  diskReissued: number;
  dirtyLogging: boolean;
  cachedPages: number;
  uptimeMs: number;
}

/** Reply of `resumeIncoming`. */
export interface ResumeIncomingResult {
  counter: number;
  /** Time from the request to the guest running, in ms. */
  resumeMs: number;
}
