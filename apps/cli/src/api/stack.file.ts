import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/** What `wanmig up` leaves for the other commands: where each site's NATS server listens. */
export interface StackFile {
  pid: number;
  sites: Record<string, { natsUrl: string; httpUrl?: string }>;
  wan: { delayMs: number; bandwidthBps: number };
  startedAt: string;
}

export function stackFilePath(): string {
  return process.env.WANMIG_STACK_FILE ?? join(tmpdir(), 'wanmig', 'stack.json');
}

export async function writeStackFile(stack: StackFile): Promise<string> {
  const path = stackFilePath();
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `${JSON.stringify(stack, null, 2)}\n`);
  return path;
}

/** The running stack, or undefined when none was started (or the one recorded has exited). */
export async function readStackFile(): Promise<StackFile | undefined> {
  let stack: StackFile;
  try {
    stack = JSON.parse(await readFile(stackFilePath(), 'utf8')) as StackFile;
  } catch {
    return undefined;
  }
  try {
    process.kill(stack.pid, 0);
  } catch {
    return undefined;
  }
  return stack;
}

export async function removeStackFile(): Promise<void> {
  await rm(stackFilePath(), { force: true });
}
