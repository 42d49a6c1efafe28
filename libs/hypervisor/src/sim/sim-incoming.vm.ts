import { type DeviceState, type IncomingVm } from '../hypervisor.driver.js';
import { ControlOp } from './control.protocol.js';
import { type GuestLink } from './guest.link.js';
import { type SimGuestProcess } from './guest.process.js';
import { SimSourceVm } from './sim-source.vm.js';
import { type ResumeIncomingResult, type SimVmDescription } from './sim.types.js';

/**
 * A sim guest started at the destination with `--incoming`: it holds its service port (requests wait)
 * and runs nothing until `resume` hands it the device state; its RAM is the file the destination
 * wrote the migrated pages into.
 */
export class SimIncomingVm implements IncomingVm {
  private readonly asSource: SimSourceVm;
  /** What the last successful resume reported (counter at resume, time it took). */
  resumed: ResumeIncomingResult | undefined;

  constructor(private readonly link: GuestLink) {
    this.asSource = new SimSourceVm(link);
  }

  get vmId(): string {
    return this.link.vmId;
  }
  get pid(): number {
    return this.link.o.info.pid;
  }
  get serviceAddress(): string {
    return this.link.o.info.serviceAddress;
  }
  get serviceSocket(): string | undefined {
    return this.link.o.info.serviceSocket;
  }
  get ramFile(): string {
    return this.link.o.info.ramFile;
  }
  get process(): SimGuestProcess | undefined {
    return this.link.o.process;
  }

  describe(): Promise<SimVmDescription> {
    return this.link.call<SimVmDescription>(ControlOp.Describe);
  }

  /**
   * Checks the state (size, sha256, format, RAM size, the RAM file's header) and runs the guest from
   * its RAM file. A refused state is a DeviceStateError and leaves the guest incoming.
   */
  async resume(state: DeviceState): Promise<void> {
    this.resumed = await this.link.call<ResumeIncomingResult>(ControlOp.ResumeIncoming, {
      blob: state.blob.toString('base64'),
      sha256: state.sha256,
    });
  }

  /** The same guest as a source VM: once resumed it runs like any other (and can migrate on). */
  source(): SimSourceVm {
    return this.asSource;
  }

  query(command: string): Promise<string> {
    return this.asSource.monitor(command);
  }

  /** Ends the guest (release when it answers, SIGTERM / SIGKILL otherwise). */
  async stop(): Promise<void> {
    await this.asSource.release().catch(() => undefined);
    if (this.link.alive) await this.asSource.stop();
  }
}
