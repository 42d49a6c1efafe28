import { execFile, execFileSync } from 'node:child_process';
import { IP_BINARY, ipCommand, type HostRoute } from './ip.commands.js';
import { NetCommandError } from './net.errors.js';

export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;
const MAX_COMMAND_OUTPUT_BYTES = 16 * 1024 * 1024;

export interface RunOptions {
  timeoutMs?: number;
}

/** Runs `ip <args>` and returns its stdout; a non-zero exit or a timeout becomes a NetCommandError. */
export function runIp(args: readonly string[], options: RunOptions = {}): Promise<string> {
  const argv = [IP_BINARY, ...args];
  return new Promise((resolve, reject) => {
    execFile(
      IP_BINARY,
      args,
      {
        timeout: options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        maxBuffer: MAX_COMMAND_OUTPUT_BYTES,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const code = (err as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
        const why = (err as { killed?: boolean }).killed
          ? `timeout after ${options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS} ms`
          : code;
        reject(new NetCommandError(argv, why, stderr, { cause: err }));
      },
    );
  });
}

/** The synchronous form, for clean-up in an 'exit' hook: never throws, reports whether the command succeeded. */
export function runIpSync(args: readonly string[], timeoutMs = 5_000): { ok: boolean; stdout: string } {
  try {
    const stdout = execFileSync(IP_BINARY, args, {
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return { ok: true, stdout };
  } catch {
    return { ok: false, stdout: '' };
  }
}

/** Runs a command inside a namespace (`ip netns exec`) and returns its stdout. */
export function netnsExec(netns: string, argv: readonly string[], options: RunOptions = {}): Promise<string> {
  return runIp(ipCommand.exec(netns, argv), options);
}

/**
 * The route agent's primitive: points `<address>/32` at `via` in `netns` (`ip route replace`, so it creates or moves
 * the route in one step, as a BGP /32 or a VPLS would move the VM's traffic).
 */
export async function replaceHostRoute(route: HostRoute, options: RunOptions = {}): Promise<void> {
  await runIp(ipCommand.replaceHostRoute(route), options);
}

/** The pids of all processes in a namespace (`ip netns pids`); empty if it is gone. */
export async function namespacePids(netns: string): Promise<number[]> {
  try {
    return parsePids(await runIp(ipCommand.namespacePids(netns)));
  } catch {
    return [];
  }
}

/** Names from `ip netns list` ("name" or "name (id: 3)" per line). */
export async function listNamespaces(): Promise<string[]> {
  return parseNamespaceList(await runIp(ipCommand.listNamespaces()));
}

export function parseNamespaceList(output: string): string[] {
  return output
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0])
    .filter((name): name is string => !!name);
}

export function parsePids(output: string): number[] {
  return output
    .split(/\s+/)
    .filter((word) => /^\d+$/.test(word))
    .map(Number);
}

/** The gateway in `ip route get` output ("10.1.2.3 via 10.200.1.2 dev to-siteA ..."), or undefined if direct. */
export function parseRouteVia(output: string): string | undefined {
  return /\bvia\s+(\S+)/.exec(output)?.[1];
}
