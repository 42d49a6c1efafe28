import { closeSync, fstatSync, openSync, readSync, renameSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What a running guest publishes in the runtime directory (`<vmId>.json`) and prints in its ready
 * line: how a driver in any process finds its control socket, RAM file and service.
 */
export interface GuestRuntimeInfo {
  vmId: string;
  pid: number;
  controlSocket: string;
  /** host:port of the guest's TCP service. */
  serviceAddress: string;
  /** The same service on a unix socket. */
  serviceSocket?: string;
  ramFile: string;
  ramBytes: number;
  incoming: boolean;
}

export interface GuestPaths {
  controlSocket: string;
  /** The guest's service on a unix socket: reachable from inside a network namespace, unlike 127.0.0.1. */
  serviceSocket: string;
  infoFile: string;
  /** The guest's stderr: its log, and the tail a GuestDiedError quotes. */
  logFile: string;
  /** Where a launched source guest keeps its RAM unless told otherwise. */
  ramFile: string;
}

export function guestPaths(runtimeDir: string, vmId: string): GuestPaths {
  return {
    controlSocket: join(runtimeDir, `${vmId}.ctl`),
    serviceSocket: join(runtimeDir, `${vmId}.svc`),
    infoFile: join(runtimeDir, `${vmId}.json`),
    logFile: join(runtimeDir, `${vmId}.log`),
    ramFile: join(runtimeDir, `${vmId}.ram`),
  };
}

/** Written to a temporary name and renamed, so a reader never sees half a file. */
export function writeRuntimeInfo(path: string, info: GuestRuntimeInfo): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(info)}\n`);
  renameSync(tmp, path);
}

export async function readRuntimeInfo(path: string): Promise<GuestRuntimeInfo | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const info = JSON.parse(text) as GuestRuntimeInfo;
  return typeof info.pid === 'number' && typeof info.controlSocket === 'string' ? info : undefined;
}

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The last `maxBytes` of a log file, from its first whole line on; '' when there is none. */
export function readLogTail(path: string, maxBytes = 4096): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const from = Math.max(0, size - maxBytes);
    const buf = Buffer.alloc(size - from);
    readSync(fd, buf, 0, buf.length, from);
    const tail = buf.toString('utf8');
    return from > 0 ? tail.slice(tail.indexOf('\n') + 1) : tail;
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
