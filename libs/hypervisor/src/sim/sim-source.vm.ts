import { DeviceStateError, DeviceStateProblem } from '../errors.js';
import { type DeviceState, type SourceVm } from '../hypervisor.driver.js';
import { ControlOp } from './control.protocol.js';
import { sha256Hex } from './device.state.js';
import { type GuestLink } from './guest.link.js';
import { type SimGuestProcess } from './guest.process.js';
import { SimPageMemory } from './sim-page.memory.js';
import { type GuestStats, type SimVmDescription } from './sim.types.js';

/** Longer than the default: pause waits for disk writes in flight and a flush. */
const PAUSE_TIMEOUT_MS = 30_000;
const RELEASE_WAIT_MS = 10_000;

/** A running sim guest as a migration sees it on the source host, whoever started it. */
export class SimSourceVm implements SourceVm {
  private mem: SimPageMemory | undefined;

  constructor(private readonly link: GuestLink) {}

  get vmId(): string {
    return this.link.vmId;
  }
  get pid(): number {
    return this.link.o.info.pid;
  }
  /** host:port of the guest's TCP service. */
  get serviceAddress(): string {
    return this.link.o.info.serviceAddress;
  }
  get serviceSocket(): string | undefined {
    return this.link.o.info.serviceSocket;
  }
  get ramFile(): string {
    return this.link.o.info.ramFile;
  }
  get ramBytes(): number {
    return this.link.o.info.ramBytes;
  }
  /** The guest's process, when this process started it. */
  get process(): SimGuestProcess | undefined {
    return this.link.o.process;
  }
  get alive(): boolean {
    return this.link.alive;
  }

  describe(): Promise<SimVmDescription> {
    return this.link.call<SimVmDescription>(ControlOp.Describe);
  }

  stats(): Promise<GuestStats> {
    return this.link.call<GuestStats>(ControlOp.Stats);
  }

  /** The same object on every call: one RAM file handle, one dirty log. */
  memory(): SimPageMemory {
    this.mem ??= new SimPageMemory(this.link, this.ramFile, this.ramBytes);
    return this.mem;
  }

  async pause(): Promise<void> {
    await this.link.call(ControlOp.Pause, {}, PAUSE_TIMEOUT_MS);
  }

  async resume(): Promise<void> {
    await this.link.call(ControlOp.Resume);
  }

  async throttle(percent: number): Promise<void> {
    await this.link.call(ControlOp.Throttle, { percent: Math.round(percent) });
  }

  /** Only while paused (GuestStateError otherwise). The checksum is verified on arrival. */
  async deviceState(): Promise<DeviceState> {
    const reply = await this.link.call<{ blob: string; sha256: string }>(ControlOp.DeviceState);
    const blob = Buffer.from(reply.blob, 'base64');
    if (sha256Hex(blob) !== reply.sha256) {
      throw new DeviceStateError(DeviceStateProblem.Checksum, 'the state changed on its way from the guest', {
        vmId: this.vmId,
      });
    }
    return { blob, sha256: reply.sha256 };
  }

  /** A service request answered at once, even while paused (the guest's monitor): e.g. `PAGE 12`, `GET k3`. */
  async monitor(command: string): Promise<string> {
    return (await this.link.call<{ reply: string }>(ControlOp.Monitor, { command })).reply;
  }

  query(command: string): Promise<string> {
    return this.monitor(command);
  }

  /**
   * The migration committed: the guest exits, and its RAM file goes with it when the guest created
   * it (the default `<runtimeDir>/<vmId>.ram`; a file given as `ramPath` is left to its owner).
   * Resolves once the process is gone.
   */
  async release(): Promise<void> {
    await this.link.call(ControlOp.Release);
    await this.link.waitGone(RELEASE_WAIT_MS);
    await this.detach();
  }

  /** Lets go of the guest without touching it: closes the control connection and the RAM file. */
  async detach(): Promise<void> {
    this.link.close();
    await this.mem?.close();
  }

  /**
   * Ends the guest whatever its state (tests, clean-up): SIGTERM, SIGKILL after `timeoutMs`.
   * Not a migration step: use release() for that.
   */
  async stop(timeoutMs = 5000): Promise<void> {
    await this.detach();
    if (this.process) {
      await this.process.stop(timeoutMs);
      return;
    }
    signal(this.pid, 'SIGTERM');
    if (!(await this.link.waitGone(timeoutMs))) signal(this.pid, 'SIGKILL');
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}
