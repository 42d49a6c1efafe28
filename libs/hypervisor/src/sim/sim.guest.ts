import { unlinkSync } from 'node:fs';
import { ErrorCode } from '@wanmig/protocol';
import { DeviceStateError, DeviceStateProblem, GuestStateError, HypervisorError } from '../errors.js';
import { VmRunState, type DeviceState } from '../hypervisor.driver.js';
import { ControlOp, type ControlRequest } from './control.protocol.js';
import { ControlServer } from './control.server.js';
import { decodeDeviceState, encodeDeviceState } from './device.state.js';
import { GuestDisk } from './guest.disk.js';
import { type ParsedGuestOptions } from './guest.options.js';
import { answerOrError, answerServiceRequest, describeGuest, guestStats, type GuestView } from './guest.queries.js';
import { GuestRam } from './guest.ram.js';
import { GuestService } from './guest.service.js';
import { KvArea } from './kv.area.js';
import { fillRam, ramHoldsGuest } from './ram.filler.js';
import { COUNTER_OFFSET, decodeRamHeader, encodeCounter } from './ram.layout.js';
import {
  guestPaths,
  readRuntimeInfo,
  writeRuntimeInfo,
  type GuestPaths,
  type GuestRuntimeInfo,
} from './runtime.paths.js';
import { parseServiceRequest, type ServiceRequest } from './service.protocol.js';
import { SIM_PAGE_SIZE, type SimWorkload } from './sim.constants.js';
import { type GuestStats, type ResumeIncomingResult, type SimVmDescription } from './sim.types.js';
import { tickIntervalMs } from './token.bucket.js';
import { WorkloadEngine } from './workload.engine.js';

export type GuestLog = (line: string) => void;

/**
 * The embedded guest: RAM in a file, a counter and a seeded workload driven by a main loop, a disk
 * over NBD, a TCP service, and a control channel through which a driver pauses it, reads its dirty
 * log and device state, or (incoming) resumes it from migrated RAM and state.
 */
export class SimGuest implements GuestView {
  private runState: VmRunState;
  private count = 0;
  private workloadEngine: WorkloadEngine | undefined;
  private guestDisk: GuestDisk | undefined;
  private currentWorkload: SimWorkload;
  private currentSeed: number;
  private timer: NodeJS.Timeout | undefined;
  /** Settles when the last pause has nothing left in flight. */
  private quiesced: Promise<void> = Promise.resolve();
  private resuming = false;
  private stopping: Promise<void> | undefined;
  private address = '';
  private readonly paths: GuestPaths;
  readonly kv: KvArea;
  private readonly service: GuestService;
  private readonly control: ControlServer;
  readonly startedAt = performance.now();

  private constructor(
    readonly options: ParsedGuestOptions,
    readonly ram: GuestRam,
    private readonly log: GuestLog,
    private readonly onStopped: (code: number) => void,
  ) {
    this.runState = options.incoming ? VmRunState.Incoming : VmRunState.Paused;
    this.currentWorkload = options.workload;
    this.currentSeed = options.seed;
    this.paths = guestPaths(options.runtimeDir, options.vmId);
    this.kv = new KvArea(ram);
    this.service = new GuestService((req) => this.answer(req), log);
    this.control = new ControlServer((req) => this.handleControl(req), log);
  }

  /**
   * Opens the RAM file, fills it with boot content (source guest, unless the file already holds it),
   * connects the disk, listens (service, control) and, unless incoming, starts running.
   */
  static async boot(options: ParsedGuestOptions, log: GuestLog, onStopped: (code: number) => void): Promise<SimGuest> {
    const ram = GuestRam.open(options.ramFile, options.ramBytes, options.pageCacheBytes);
    const guest = new SimGuest(options, ram, log, onStopped);
    try {
      await guest.start();
    } catch (err) {
      await guest.shutdown('start failed', 1, { exit: false }).catch(() => undefined);
      throw err;
    }
    return guest;
  }

  get state(): VmRunState {
    return this.runState;
  }
  get counter(): number {
    return this.count;
  }
  get engine(): WorkloadEngine | undefined {
    return this.workloadEngine;
  }
  get disk(): GuestDisk | undefined {
    return this.guestDisk;
  }
  get workload(): SimWorkload {
    return this.currentWorkload;
  }
  get seed(): number {
    return this.currentSeed;
  }
  get serviceAddress(): string {
    return this.address;
  }
  get controlSocket(): string {
    return this.paths.controlSocket;
  }
  get serviceSocket(): string {
    return this.paths.serviceSocket;
  }

  get runtimeInfo(): GuestRuntimeInfo {
    return {
      vmId: this.options.vmId,
      pid: process.pid,
      controlSocket: this.paths.controlSocket,
      serviceAddress: this.address,
      serviceSocket: this.paths.serviceSocket,
      ramFile: this.options.ramFile,
      ramBytes: this.options.ramBytes,
      incoming: this.runState === VmRunState.Incoming,
    };
  }

  private async start(): Promise<void> {
    const o = this.options;
    if (!o.incoming) {
      await this.connectDisk();
      if (ramHoldsGuest(this.ram, o.seed)) this.log(`RAM file already holds this guest: booting from it`);
      else {
        const t0 = performance.now();
        fillRam(this.ram, o.seed);
        this.log(`filled ${o.ramBytes} bytes of RAM in ${Math.round(performance.now() - t0)} ms`);
      }
      this.count = decodeRamHeader(this.ram.page(0))?.counter ?? 0;
      this.ram.stats.pageWrites = 0;
      this.ram.stats.bytesWritten = 0;
      this.workloadEngine = new WorkloadEngine({
        workload: o.workload,
        seed: o.seed,
        ram: this.ram,
        kv: this.kv,
        disk: this.guestDisk,
      });
    }
    this.address = await this.service.listen(o.servicePort);
    await this.service.listenUnix(this.paths.serviceSocket);
    await this.control.listen(this.paths.controlSocket);
    writeRuntimeInfo(this.paths.infoFile, this.runtimeInfo);
    if (!o.incoming) await this.run();
    this.log(`${this.runState}: service ${this.address}, control ${this.paths.controlSocket}`);
  }

  private async connectDisk(): Promise<void> {
    if (!this.options.disk) return;
    this.guestDisk = await GuestDisk.connect(this.options.disk, this.log);
    this.log(`disk ${this.options.diskUri} connected: ${this.guestDisk.sizeBytes} bytes`);
  }

  /** Answers held requests against the state as it is, then runs the main loop. */
  private async run(): Promise<void> {
    this.runState = VmRunState.Running;
    this.workloadEngine?.restartClock(performance.now());
    await this.service.open();
    if (this.runState === VmRunState.Running && this.timer === undefined) this.schedule();
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.tick(), tickIntervalMs(this.workloadEngine?.throttlePercent ?? 0));
  }

  private tick(): void {
    this.timer = undefined;
    if (this.runState !== VmRunState.Running) return;
    this.count++;
    this.ram.writeBytes(COUNTER_OFFSET, encodeCounter(this.count));
    this.workloadEngine?.tick(performance.now());
    this.schedule();
  }

  async handleControl(request: ControlRequest): Promise<unknown> {
    const { op, args } = request;
    if (this.stopping) throw new GuestStateError(this.options.vmId, op, VmRunState.Stopped);
    switch (op) {
      case ControlOp.Describe:
        return this.describe();
      case ControlOp.Stats:
        return this.stats();
      case ControlOp.DrainDirty: {
        this.require(op, VmRunState.Running, VmRunState.Paused);
        const map = this.ram.drainDirty();
        return { map: map.serialize().toString('base64'), pages: map.count };
      }
      case ControlOp.StopDirtyLog:
        this.ram.stopDirtyLog();
        return {};
      case ControlOp.Pause:
        await this.pause();
        return {};
      case ControlOp.Resume:
        await this.resume();
        return {};
      case ControlOp.Throttle:
        this.require(op, VmRunState.Running, VmRunState.Paused);
        this.workloadEngine?.setThrottle(args.percent as number);
        return { percent: this.workloadEngine?.throttlePercent ?? 0 };
      case ControlOp.DeviceState:
        return this.deviceState();
      case ControlOp.ResumeIncoming:
        return this.resumeIncoming({ blob: Buffer.from(args.blob as string, 'base64'), sha256: args.sha256 as string });
      case ControlOp.Monitor: {
        this.require(op, VmRunState.Running, VmRunState.Paused, VmRunState.Incoming);
        if (this.runState === VmRunState.Incoming) {
          // Answer from the RAM file as received: nothing is cached yet that it could contradict.
          this.ram.dropCache();
          this.count = decodeRamHeader(this.ram.page(0))?.counter ?? 0;
        }
        let request: ServiceRequest;
        try {
          request = parseServiceRequest(args.command as string);
        } catch (err) {
          throw new HypervisorError(ErrorCode.InvalidRequest, (err as Error).message, { vmId: this.options.vmId });
        }
        return { reply: await this.answerOrError(request) };
      }
      case ControlOp.Release: {
        // RAM the guest created itself (the default file in the runtime directory) goes with it.
        const deleteRam = this.options.ramFile === this.paths.ramFile;
        setImmediate(() => void this.shutdown('released', 0, { deleteRam }));
        return { ramDeleted: deleteRam };
      }
    }
  }

  private require(op: string, ...states: VmRunState[]): void {
    if (!states.includes(this.runState)) throw new GuestStateError(this.options.vmId, op, this.runState);
  }

  private async pause(): Promise<void> {
    this.require(ControlOp.Pause, VmRunState.Running, VmRunState.Paused);
    if (this.runState === VmRunState.Running) {
      this.runState = VmRunState.Paused;
      this.service.hold();
      clearTimeout(this.timer);
      this.timer = undefined;
      this.quiesced = this.guestDisk?.quiesce() ?? Promise.resolve();
    }
    await this.quiesced;
  }

  private async resume(): Promise<void> {
    this.require(ControlOp.Resume, VmRunState.Running, VmRunState.Paused);
    await this.quiesced;
    if (this.runState === VmRunState.Paused) await this.run();
  }

  private async deviceState(): Promise<{ blob: string; sha256: string }> {
    this.require(ControlOp.DeviceState, VmRunState.Paused);
    await this.quiesced;
    const state = encodeDeviceState({
      workload: this.currentWorkload,
      throttlePercent: this.workloadEngine?.throttlePercent ?? 0,
      seed: this.currentSeed,
      ramBytes: this.options.ramBytes,
      pageSize: SIM_PAGE_SIZE,
      cursor: this.workloadEngine!.snapshot(),
    });
    return { blob: state.blob.toString('base64'), sha256: state.sha256 };
  }

  /**
   * Validates the device state against this guest and its RAM file, then runs from them. Any
   * failure leaves the guest incoming, ready for another attempt.
   */
  private async resumeIncoming(state: DeviceState): Promise<ResumeIncomingResult> {
    const t0 = performance.now();
    const vmId = this.options.vmId;
    if (this.resuming) throw new GuestStateError(vmId, ControlOp.ResumeIncoming, 'resuming');
    this.require(ControlOp.ResumeIncoming, VmRunState.Incoming);
    this.resuming = true;
    try {
      const decoded = decodeDeviceState(state, { ramBytes: this.options.ramBytes, vmId });
      this.ram.dropCache();
      const header = decodeRamHeader(this.ram.page(0));
      if (!header || header.ramBytes !== this.options.ramBytes || header.seed !== decoded.seed) {
        this.ram.dropCache();
        const found = header ? `RAM of ${header.ramBytes} bytes, seed ${header.seed}` : 'no guest header in page 0';
        throw new DeviceStateError(DeviceStateProblem.Mismatch, `the RAM file does not hold this guest (${found})`, {
          vmId,
        });
      }
      if (this.options.disk && !this.guestDisk) {
        try {
          await this.connectDisk();
        } catch (cause) {
          throw new HypervisorError(ErrorCode.Unavailable, `cannot reach the disk ${this.options.diskUri}`, {
            vmId,
            cause,
          });
        }
      }
      this.currentWorkload = decoded.workload;
      this.currentSeed = decoded.seed;
      this.count = header.counter;
      this.workloadEngine = new WorkloadEngine({
        workload: decoded.workload,
        seed: decoded.seed,
        ram: this.ram,
        kv: this.kv,
        disk: this.guestDisk,
        cursor: decoded.cursor,
        throttlePercent: decoded.throttlePercent,
      });
      await this.run();
      writeRuntimeInfo(this.paths.infoFile, this.runtimeInfo);
      const resumeMs = performance.now() - t0;
      this.log(`resumed from migrated RAM and state in ${resumeMs.toFixed(1)} ms at counter ${this.count}`);
      return { counter: this.count, resumeMs };
    } finally {
      this.resuming = false;
    }
  }

  private answerOrError(request: ServiceRequest): Promise<string> {
    return answerOrError(this, request);
  }

  private answer(request: ServiceRequest): Promise<string> {
    return answerServiceRequest(this, request);
  }

  describe(): SimVmDescription {
    return describeGuest(this);
  }

  stats(): GuestStats {
    return guestStats(this);
  }

  /** Stops for good: no more ticks, service and control closed, runtime files removed, RAM file closed. */
  shutdown(reason: string, code: number, options: { deleteRam?: boolean; exit?: boolean } = {}): Promise<void> {
    this.stopping ??= this.stop(reason, code, options.deleteRam ?? false, options.exit ?? true);
    return this.stopping;
  }

  private async stop(reason: string, code: number, deleteRam: boolean, exit: boolean): Promise<void> {
    this.log(`stopping (${reason})`);
    this.runState = VmRunState.Stopped;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.service.close().catch(() => undefined);
    await this.guestDisk?.close();
    await this.control.close().catch(() => undefined);
    const info = await readRuntimeInfo(this.paths.infoFile).catch(() => undefined);
    if (info?.pid === process.pid) removeQuietly(this.paths.infoFile);
    if (this.control.listening) removeQuietly(this.paths.controlSocket);
    if (info?.pid === process.pid) removeQuietly(this.paths.serviceSocket);
    this.ram.close();
    if (deleteRam) removeQuietly(this.options.ramFile);
    if (exit) this.onStopped(code);
  }
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
