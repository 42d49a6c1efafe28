import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.writer.js';

/** The file in a destination's run dir that lets a restarted delta-apply find the QEMU it started. */
export const QEMU_RECORD_FILE = 'destination.json';

/** What a destination QEMU's run dir says about it: enough to tell it from a process that reuses its pid. */
export interface QemuDestinationRecord {
  migrationId: string;
  pid: number;
  /** Field 22 of `/proc/<pid>/stat` (clock ticks since boot): a recycled pid has another. */
  startTime: string;
  runDir: string;
  /** Set once `mem.qemu.resume` ran it: from then on it is the VM, not a destination waiting for its feed. */
  resumed: boolean;
  startedAt: number;
  resumedAt?: number;
}

/** A process as `/proc` shows it: its start time, whether it is a zombie, its command line. */
export interface ProcessInfo {
  startTime: string;
  zombie: boolean;
  cmdline: string;
}

/** The process table the reaper reads and signals (`/proc` and `process.kill`; a fake in unit specs). */
export interface ProcessTable {
  /** undefined: no such process. */
  inspect(pid: number): Promise<ProcessInfo | undefined>;
  signal(pid: number, signal: NodeJS.Signals): void;
}

/** Linux's process table. */
export const procProcessTable: ProcessTable = {
  async inspect(pid) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) return undefined;
    const fields = parseStat(stat);
    if (!fields) return undefined;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    return { ...fields, cmdline: cmdline.replaceAll('\0', ' ') };
  },
  signal(pid, signal) {
    try {
      process.kill(pid, signal);
    } catch {
      // Gone already.
    }
  },
};

/** State and start time from `/proc/<pid>/stat` (the command name, in parentheses, may hold spaces). */
export function parseStat(stat: string): { startTime: string; zombie: boolean } | undefined {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
  const startTime = rest[19];
  if (rest[0] === undefined || startTime === undefined || !/^\d+$/.test(startTime)) return undefined;
  return { startTime, zombie: rest[0] === 'Z' || rest[0] === 'X' };
}

/** Writes and updates destinations' records (what the registry calls; absent in its unit specs). */
export class QemuDestinationRecords {
  constructor(private readonly processes: ProcessTable = procProcessTable) {}

  async started(migrationId: string, runDir: string, pid: number): Promise<void> {
    const info = await this.processes.inspect(pid);
    if (!info) return; // it died already: nothing to find later
    const record: QemuDestinationRecord = {
      migrationId,
      pid,
      startTime: info.startTime,
      runDir,
      resumed: false,
      startedAt: Date.now(),
    };
    await writeRecord(record);
  }

  async resumed(runDir: string, resumedAt: number): Promise<void> {
    const record = await readQemuRecord(runDir);
    if (record) await writeRecord({ ...record, resumed: true, resumedAt });
  }
}

/** The record in `runDir`, or undefined when there is none or it does not parse as one. */
export async function readQemuRecord(runDir: string): Promise<QemuDestinationRecord | undefined> {
  const text = await readFile(join(runDir, QEMU_RECORD_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const r = JSON.parse(text) as Partial<QemuDestinationRecord>;
    const valid =
      typeof r.migrationId === 'string' &&
      typeof r.pid === 'number' &&
      Number.isInteger(r.pid) &&
      r.pid > 1 &&
      typeof r.startTime === 'string' &&
      typeof r.runDir === 'string' &&
      typeof r.resumed === 'boolean';
    return valid ? (r as QemuDestinationRecord) : undefined;
  } catch {
    return undefined;
  }
}

async function writeRecord(record: QemuDestinationRecord): Promise<void> {
  await writeFileAtomic(join(record.runDir, QEMU_RECORD_FILE), `${JSON.stringify(record, null, 2)}\n`);
}
