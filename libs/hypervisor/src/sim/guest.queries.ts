import { createHash } from 'node:crypto';
import { ErrorCode } from '@wanmig/protocol';
import { type VmRunState } from '../hypervisor.driver.js';
import { sha256Hex } from './device.state.js';
import { type GuestDisk } from './guest.disk.js';
import { type ParsedGuestOptions } from './guest.options.js';
import { type GuestRam } from './guest.ram.js';
import { type KvArea } from './kv.area.js';
import { ServiceCommand, ServiceRequestError, formatServiceError, type ServiceRequest } from './service.protocol.js';
import { SERVICE_DISK_BLOCK, SIM_PAGE_SIZE, type SimWorkload } from './sim.constants.js';
import { type GuestStats, type SimVmDescription } from './sim.types.js';
import { type WorkloadEngine } from './workload.engine.js';

/** What the guest's answers are computed from. */
export interface GuestView {
  readonly options: ParsedGuestOptions;
  readonly state: VmRunState;
  readonly counter: number;
  readonly ram: GuestRam;
  readonly kv: KvArea;
  readonly disk: GuestDisk | undefined;
  readonly engine: WorkloadEngine | undefined;
  readonly workload: SimWorkload;
  readonly seed: number;
  readonly serviceAddress: string;
  readonly controlSocket: string;
  readonly serviceSocket: string;
  readonly startedAt: number;
}

/** A service request's reply, computed from RAM and disk as they are now. Throws ServiceRequestError. */
export async function answerServiceRequest(g: GuestView, request: ServiceRequest): Promise<string> {
  switch (request.command) {
    case ServiceCommand.Ping:
      return `PONG ${g.counter}`;
    case ServiceCommand.Counter:
      return String(g.counter);
    case ServiceCommand.State:
      return JSON.stringify(guestStats(g));
    case ServiceCommand.Quit:
      return 'BYE';
    case ServiceCommand.Get: {
      const value = g.kv.get(request.key);
      if (value === undefined) throw new ServiceRequestError(ErrorCode.NotFound, `no key ${request.key}`);
      return value;
    }
    case ServiceCommand.Page:
      if (request.page >= g.ram.pageCount) {
        throw new ServiceRequestError(ErrorCode.InvalidRequest, `page ${request.page} is beyond ${g.ram.pageCount}`);
      }
      return sha256Hex(g.ram.page(request.page));
    case ServiceCommand.Disk: {
      const disk = g.disk;
      if (!disk) throw new ServiceRequestError(ErrorCode.NotFound, 'this guest has no disk');
      const offset = request.block * SERVICE_DISK_BLOCK;
      if (offset >= disk.sizeBytes) {
        throw new ServiceRequestError(ErrorCode.InvalidRequest, `block ${request.block} is beyond the disk`);
      }
      return sha256Hex(await disk.read(offset, Math.min(SERVICE_DISK_BLOCK, disk.sizeBytes - offset)));
    }
  }
}

/** The reply line, failures included as `ERR <code> <message>` (the monitor's answer). */
export async function answerOrError(g: GuestView, request: ServiceRequest): Promise<string> {
  try {
    return await answerServiceRequest(g, request);
  } catch (err) {
    if (err instanceof ServiceRequestError) return formatServiceError(err.code, err.message);
    throw err;
  }
}

export function describeGuest(g: GuestView): SimVmDescription {
  const o = g.options;
  const mac = [...createHash('sha256').update(o.vmId).digest().subarray(0, 3)]
    .map((b) => b.toString(16).padStart(2, '0'))
    .join(':');
  return {
    vmId: o.vmId,
    ramBytes: o.ramBytes,
    pageSize: SIM_PAGE_SIZE,
    diskBytes: g.disk?.sizeBytes ?? 0,
    ...(o.diskUri !== undefined ? { diskUri: o.diskUri } : {}),
    nics: [{ mac: `52:54:00:${mac}`, addresses: ['127.0.0.1'] }],
    serviceAddress: g.serviceAddress,
    serviceSocket: g.serviceSocket,
    state: g.state,
    pid: process.pid,
    ramFile: o.ramFile,
    controlSocket: g.controlSocket,
    workload: g.workload,
    seed: g.seed,
  };
}

export function guestStats(g: GuestView): GuestStats {
  const cursor = g.engine?.snapshot();
  const disk = g.disk?.stats;
  return {
    vmId: g.options.vmId,
    state: g.state,
    counter: g.counter,
    ticks: cursor?.ticks ?? 0,
    workload: g.workload,
    seed: g.seed,
    throttlePercent: g.engine?.throttlePercent ?? 0,
    ramBytes: g.options.ramBytes,
    pageWrites: g.ram.stats.pageWrites,
    ramBytesWritten: g.ram.stats.bytesWritten,
    kvUpdates: cursor?.kvUpdates ?? 0,
    diskWrites: disk?.writes ?? 0,
    diskBytesWritten: disk?.bytesWritten ?? 0,
    diskErrors: disk?.errors ?? 0,
    diskReconnects: disk?.reconnects ?? 0,
    diskReissued: disk?.reissued ?? 0,
    dirtyLogging: g.ram.dirtyLogging,
    cachedPages: g.ram.cachedPages,
    uptimeMs: Math.round(performance.now() - g.startedAt),
  };
}
