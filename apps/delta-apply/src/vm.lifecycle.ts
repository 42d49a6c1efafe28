import type { HypervisorDriver, IncomingVm } from '@wanmig/hypervisor';
import { describeRamDifference, ramFileDigests, shortRegionDigests } from '@wanmig/stream';
import { ErrorCode, WanmigError, type ResumeVmReply, type ResumeVmRequest } from '@wanmig/protocol';
import type { HeldDeviceState } from './device-state.sink.js';
import { describe, type SessionLogger } from './disk.session.js';
import { VmResumeError } from './errors.js';
import type { MemorySession } from './memory.session.js';

/**
 * Starts and stops the destination VM of a migration.
 *
 * Starting, once the device state was checked: stops receiving (the
 * RAM file is made durable and closed: nothing may write into a running guest's memory), starts
 * the VM incoming on the RAM file, resumes it with the device state, and records it as running.
 * Any failure stops the incoming VM and becomes a VmResumeError; the files stay, so the
 * orchestrator can roll back, or prepare and resume again.
 */
export class VmLifecycle {
  constructor(
    private readonly driver: HypervisorDriver,
    private readonly logger: SessionLogger,
  ) {}

  async start(session: MemorySession, request: ResumeVmRequest, state: HeldDeviceState): Promise<ResumeVmReply> {
    const { migrationId, vmId } = request;
    this.logger.log(
      `starting incoming VM ${vmId} for ${migrationId} (${this.driver.name} driver, ${session.ramBytes} bytes of RAM)`,
    );
    const ready = await this.ready(session, request, false);
    const vm = session.incomingVm;
    try {
      if (!vm) throw new WanmigError(ErrorCode.Internal, `no incoming VM ${vmId} for ${migrationId}`);
      await vm.resume({ blob: state.blob, sha256: state.sha256 });
      const resumedAt = Date.now();
      const { serviceAddress } = await vm.describe();
      await session.recordResumed({ vmId, driver: this.driver.name, serviceAddress, resumedAt });
      this.logger.log(`VM ${vmId} of ${migrationId} runs at ${serviceAddress}`);
      return { vmId, serviceAddress, resumedAt, ...ready };
    } catch (err) {
      throw await this.failed(session, vm, request, err);
    }
  }

  /**
   * Everything a start does short of running the guest: receiving stopped (the RAM file durable and closed), the RAM
   * checked against `ramSha256` (or, with `reportDigest` and no `ramSha256`, its digest reported if the one started
   * at the stream's end is done: nothing waits for it), the incoming VM started on it, the queries answered from it. A start after this
   * finds the VM ready and only runs it. A RAM that differs refuses; any other failure stops the incoming VM
   * (VmResumeError). The files stay, so the caller can roll back.
   */
  async ready(
    session: MemorySession,
    request: ResumeVmRequest,
    reportDigest: boolean,
  ): Promise<{
    ramVerified?: boolean;
    ramCheckMs?: number;
    ramSha256?: string;
    ramRegions?: string[];
    answers?: Record<string, string>;
  }> {
    const { migrationId, vmId, diskUri, servicePort } = request;
    await session.stopReceiving();
    const checkStart = performance.now();
    if (request.ramSha256) await this.verifyRam(session, request, migrationId);
    const digest = !request.ramSha256 && reportDigest ? session.ramDigestIfReady : undefined;
    const ramCheckMs = request.ramSha256 ? Math.round(performance.now() - checkStart) : undefined;
    // A VM a previous delta-apply process started for this migration is adopted (after its restart), not doubled.
    let vm: IncomingVm | undefined = session.incomingVm ?? (await this.adopt(session, vmId));
    try {
      vm ??= await this.driver.startIncoming({
        vmId,
        ramPath: session.ramPath,
        ramBytes: session.ramBytes,
        diskUri,
        servicePort,
      });
      session.attachVm(vm);
      const answers = await this.answer(vm, request.queries);
      return {
        ...(request.ramSha256 ? { ramVerified: true, ramCheckMs } : {}),
        ...(digest ? { ramSha256: digest.sha256, ramRegions: shortRegionDigests(digest.regions) } : {}),
        ...(answers ? { answers } : {}),
      };
    } catch (err) {
      throw await this.failed(session, vm, request, err);
    }
  }

  /** The incoming VM goes (a VM that did not resume must not linger half-started); the error says which. */
  private async failed(
    session: MemorySession,
    vm: IncomingVm | undefined,
    request: ResumeVmRequest,
    err: unknown,
  ): Promise<VmResumeError> {
    const { migrationId, vmId } = request;
    this.logger.error(`VM ${vmId} of ${migrationId} did not resume: ${describe(err)}`);
    if (vm) {
      await vm
        .stop()
        .catch((stopErr: unknown) =>
          this.logger.error(`stopping the failed VM ${vmId} of ${migrationId}: ${describe(stopErr)}`),
        );
    }
    session.attachVm(undefined);
    return new VmResumeError({ migrationId, vmId, driver: this.driver.name, cause: err });
  }

  /**
   * Stops a migration's VM: through the handle this process holds, or, for a VM an earlier
   * delta-apply process started, by finding it by id and releasing it. False when there was
   * nothing to stop (the VM is gone already).
   */
  async stop(vmId: string, handle: IncomingVm | undefined): Promise<boolean> {
    if (handle) {
      await handle.stop();
      return true;
    }
    let vm;
    try {
      vm = await this.driver.attach(vmId);
    } catch (err) {
      if (err instanceof WanmigError && (err.code === ErrorCode.NotFound || err.code === ErrorCode.Unavailable)) {
        this.logger.warn(`VM ${vmId} is not running any more: ${err.message}`);
        return false;
      }
      throw err;
    }
    await vm.release();
    return true;
  }

  /**
   * Starts the receiving VM at prepare time (QEMU's -incoming): it holds its service port and
   * reads nothing until resumed, so the RAM may still be arriving. A failure here is only logged:
   * the resume will start the VM itself.
   */
  async startEarly(session: MemorySession, vmId: string, diskUri?: string, servicePort?: number): Promise<void> {
    try {
      const vm = await this.driver.startIncoming({
        vmId,
        ramPath: session.ramPath,
        ramBytes: session.ramBytes,
        diskUri,
        servicePort,
      });
      session.attachVm(vm);
      await session.recordIncoming(vmId);
      this.logger.log(`incoming VM ${vmId} waits for migration ${session.migrationId}`);
    } catch (err) {
      this.logger.warn(`incoming VM ${vmId} not started early: ${describe(err)}`);
    }
  }

  /**
   * The receiving VM an earlier process of this service started (it was killed and restarted mid-migration): the
   * guest still waits, incoming, and is taken over as it is, so the resume does not start a second one under the same
   * name. undefined when there is none to adopt (it died, or the driver cannot adopt): the resume starts one.
   */
  async adopt(session: MemorySession, vmId = session.incomingVmId): Promise<IncomingVm | undefined> {
    if (!vmId || !this.driver.attachIncoming || session.resumedVm) return undefined;
    try {
      const vm = await this.driver.attachIncoming({ vmId, ramPath: session.ramPath });
      session.attachVm(vm);
      this.logger.log(`incoming VM ${vmId} of ${session.migrationId} adopted: it still waits for its memory`);
      return vm;
    } catch (err) {
      if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return undefined;
      this.logger.warn(`incoming VM ${vmId} of ${session.migrationId} not adopted: ${describe(err)}`);
      return undefined;
    }
  }

  /** Answers from the received RAM, before the guest's first tick changes anything. */
  private async answer(vm: IncomingVm, queries: string[] | undefined): Promise<Record<string, string> | undefined> {
    if (!queries?.length || !vm.query) return undefined;
    const answers: Record<string, string> = {};
    for (const q of queries) answers[q] = await vm.query(q);
    return answers;
  }

  /**
   * The RAM about to run must be the source's at pause, byte for byte: never start on a difference. With the source's
   * region digests (`ramRegions`), the error names the regions that differ.
   */
  private async verifyRam(session: MemorySession, request: ResumeVmRequest, migrationId: string): Promise<void> {
    const actual = (await session.precomputedRamDigest) ?? (await ramFileDigests(session.ramPath, session.ramBytes));
    if (actual.sha256 !== request.ramSha256) {
      throw new WanmigError(
        ErrorCode.DigestMismatch,
        `RAM of migration ${migrationId} differs from the source at pause` +
          `${describeRamDifference(actual.regions, request.ramRegions)} (sha256 ${actual.sha256}, source ` +
          `${request.ramSha256}): not started`,
      );
    }
  }
}
