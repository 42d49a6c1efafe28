import type { HypervisorDriver, IncomingVm } from '@wanmig/hypervisor';
import type { ResumeVmReply, ResumeVmRequest } from '@wanmig/protocol';
import type { HeldDeviceState } from './device-state.sink.js';
import { describe, type SessionLogger } from './disk.session.js';
import { VmResumeError } from './errors.js';
import type { MemorySession } from './memory.session.js';

/**
 * Starts the destination VM of a migration whose device state was checked: stops receiving (the
 * RAM file is made durable and closed: nothing may write into a running guest's memory), starts
 * the VM incoming on the RAM file, resumes it with the device state, and records it as running.
 * Any failure stops the incoming VM and becomes a VmResumeError; the files stay, so the
 * orchestrator can roll back, or prepare and resume again.
 */
export class VmStarter {
  constructor(
    private readonly driver: HypervisorDriver,
    private readonly logger: SessionLogger,
  ) {}

  async start(session: MemorySession, request: ResumeVmRequest, state: HeldDeviceState): Promise<ResumeVmReply> {
    const { migrationId, vmId, diskUri, servicePort } = request;
    const driver = this.driver.name;
    await session.stopReceiving();
    this.logger.log(
      `starting incoming VM ${vmId} for ${migrationId} (${driver} driver, ${session.ramBytes} bytes of RAM)`,
    );
    let vm: IncomingVm | undefined;
    try {
      vm = await this.driver.startIncoming({
        vmId,
        ramPath: session.ramPath,
        ramBytes: session.ramBytes,
        diskUri,
        servicePort,
      });
      session.attachVm(vm);
      await vm.resume({ blob: state.blob, sha256: state.sha256 });
      const resumedAt = Date.now();
      const { serviceAddress } = await vm.describe();
      await session.recordResumed({ vmId, driver, serviceAddress, resumedAt });
      this.logger.log(`VM ${vmId} of ${migrationId} runs at ${serviceAddress}`);
      return { vmId, serviceAddress, resumedAt };
    } catch (err) {
      this.logger.error(`VM ${vmId} of ${migrationId} did not resume: ${describe(err)}`);
      if (vm) {
        await vm
          .stop()
          .catch((stopErr: unknown) =>
            this.logger.error(`stopping the failed VM ${vmId} of ${migrationId}: ${describe(stopErr)}`),
          );
      }
      session.attachVm(undefined);
      throw new VmResumeError({ migrationId, vmId, driver, cause: err });
    }
  }
}
