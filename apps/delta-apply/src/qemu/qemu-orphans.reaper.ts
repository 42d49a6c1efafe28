import { readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Logger, type OnApplicationBootstrap } from '@nestjs/common';
import type { DeltaApplyConfig } from '../delta-apply.config.js';
import {
  procProcessTable,
  readQemuRecord,
  type ProcessInfo,
  type ProcessTable,
  type QemuDestinationRecord,
} from './qemu-destination.record.js';
import { QEMU_RUN_SUBDIR } from './qemu-incoming.registry.js';

/** How long an orphan destination QEMU gets to exit on SIGTERM before SIGKILL. */
export const ORPHAN_TERM_WAIT_MS = 3000;
/** How long after SIGKILL before the reaper gives up on it. */
const ORPHAN_KILL_WAIT_MS = 2000;
const POLL_MS = 50;

/** What the reaper does with one run dir found at startup. */
export const OrphanAction = {
  /** Alive and never resumed: a destination whose feed died with the old process; it must never run. */
  Stop: 'stop',
  /** Alive and resumed: the VM itself; it runs on, its run dir and record stay. */
  Keep: 'keep',
  /** Its QEMU is gone (or the pid now belongs to another process): only the run dir is left to remove. */
  Clean: 'clean',
  /** No readable record: nothing tells which process it was; left alone. */
  Skip: 'skip',
} as const;
export type OrphanAction = (typeof OrphanAction)[keyof typeof OrphanAction];

/** Whether `info` is the QEMU `record` describes: the same start time and a command line naming its run dir. */
export function isRecordedQemu(record: QemuDestinationRecord, runDir: string, info: ProcessInfo | undefined): boolean {
  return info !== undefined && !info.zombie && info.startTime === record.startTime && info.cmdline.includes(runDir);
}

export function decideOrphan(
  record: QemuDestinationRecord | undefined,
  runDir: string,
  info: ProcessInfo | undefined,
): OrphanAction {
  if (!record) return OrphanAction.Skip;
  if (!isRecordedQemu(record, runDir, info)) return OrphanAction.Clean;
  return record.resumed ? OrphanAction.Keep : OrphanAction.Stop;
}

export interface OrphanOutcome {
  runDir: string;
  action: OrphanAction;
  migrationId?: string;
  pid?: number;
  /** Stop only: it still ran after SIGKILL (its run dir is then kept). */
  survived?: boolean;
}

/**
 * At startup, before delta-apply serves verbs: the destination QEMUs a previous delta-apply started and lost track
 * of (killed with -9) are found by the records in `<simRuntimeDir>/qemu/<migrationId>/`. One never resumed is
 * stopped (SIGTERM, SIGKILL after a bound, each time only after checking its pid is still that QEMU) and its run dir
 * removed; a resumed one is the running VM and is left running with its record; a dead one's run dir is removed.
 */
export class QemuOrphanReaper implements OnApplicationBootstrap {
  private readonly logger = new Logger('delta-apply');
  private readonly runRoot: string;

  constructor(
    runtimeDir: string,
    private readonly processes: ProcessTable = procProcessTable,
    private readonly termWaitMs = ORPHAN_TERM_WAIT_MS,
    private readonly killWaitMs = ORPHAN_KILL_WAIT_MS,
  ) {
    this.runRoot = resolve(runtimeDir, QEMU_RUN_SUBDIR);
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.reap();
  }

  async reap(): Promise<OrphanOutcome[]> {
    const names = await readdir(this.runRoot, { withFileTypes: true }).catch(() => []);
    const outcomes: OrphanOutcome[] = [];
    for (const entry of names) {
      if (!entry.isDirectory()) continue;
      outcomes.push(await this.reapOne(join(this.runRoot, entry.name)));
    }
    return outcomes;
  }

  private async reapOne(runDir: string): Promise<OrphanOutcome> {
    const record = await readQemuRecord(runDir);
    const info = record ? await this.processes.inspect(record.pid) : undefined;
    const action = decideOrphan(record, runDir, info);
    const outcome: OrphanOutcome = { runDir, action, migrationId: record?.migrationId, pid: record?.pid };
    switch (action) {
      case OrphanAction.Skip:
        this.logger.warn(`${runDir} has no destination record: left as it is`);
        break;
      case OrphanAction.Keep:
        this.logger.log(
          `the destination QEMU of ${record!.migrationId} runs the VM (pid ${record!.pid}, resumed before a restart): ` +
            'left running',
        );
        break;
      case OrphanAction.Clean:
        await rm(runDir, { recursive: true, force: true });
        this.logger.log(`removed the run dir of ${record!.migrationId}: its destination QEMU is gone`);
        break;
      case OrphanAction.Stop:
        outcome.survived = !(await this.stop(record!, runDir));
        if (outcome.survived) {
          this.logger.error(
            `the orphan destination QEMU of ${record!.migrationId} (pid ${record!.pid}) survived SIGKILL`,
          );
        } else {
          await rm(runDir, { recursive: true, force: true });
          this.logger.warn(
            `stopped the orphan destination QEMU of ${record!.migrationId} (pid ${record!.pid}): it was never resumed ` +
              'and its feed died with the previous delta-apply',
          );
        }
        break;
    }
    return outcome;
  }

  /** SIGTERM, then SIGKILL; each only while the pid is still that QEMU. True once it is gone. */
  private async stop(record: QemuDestinationRecord, runDir: string): Promise<boolean> {
    const ours = async () => isRecordedQemu(record, runDir, await this.processes.inspect(record.pid));
    for (const [signal, waitMs] of [
      ['SIGTERM', this.termWaitMs],
      ['SIGKILL', this.killWaitMs],
    ] as const) {
      if (!(await ours())) return true;
      this.processes.signal(record.pid, signal);
      const deadline = performance.now() + waitMs;
      while (performance.now() < deadline) {
        if (!(await ours())) return true;
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    }
    return !(await ours());
  }
}

export function createQemuOrphanReaper(config: DeltaApplyConfig): QemuOrphanReaper {
  return new QemuOrphanReaper(config.simRuntimeDir);
}
