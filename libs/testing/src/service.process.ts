import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { trackPid, untrackPid } from './child-process.registry.js';

export type ServiceName = 'delta-apply' | 'disk-transfer' | 'memory-precopy' | 'orchestrator' | 'net-redirect';

/**
 * The built entry point of a service. This file runs from source (vitest) or from dist, so the
 * repository root is found by walking up to package.json; services always run built.
 */
export function serviceEntry(service: ServiceName): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the wanmig repository root');
    dir = up;
  }
  const entry = join(dir, 'dist', 'apps', service, 'src', 'main.js');
  if (!existsSync(entry))
    throw new Error(`${entry} is missing: build first (npm run build or bash deploy/bootstrap.sh)`);
  return entry;
}

export interface ServiceProcessOptions {
  service: ServiceName;
  args: string[];
  env?: Record<string, string>;
  /** Line (on stdout or stderr) that says the service is up. */
  readyPattern: RegExp;
  readyTimeoutMs?: number;
  /** Where the service's own log lines go (default: dropped, kept for errors). */
  log?: (line: string) => void;
}

/** A wanmig service running as its own process, as it would on a site's host. */
export class ServiceProcess {
  private tail: string[] = [];

  private constructor(
    readonly options: ServiceProcessOptions,
    readonly child: ChildProcess,
  ) {}

  get pid(): number {
    return this.child.pid ?? -1;
  }

  static async start(options: ServiceProcessOptions): Promise<ServiceProcess> {
    const child = spawn(process.execPath, [serviceEntry(options.service), ...options.args], {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // Never outlive the process that started it, even if it dies without cleaning up.
    if (child.pid !== undefined) trackPid(child.pid);
    child.once('exit', () => child.pid !== undefined && untrackPid(child.pid));
    const proc = new ServiceProcess(options, child);
    await proc.waitReady();
    return proc;
  }

  /** The last lines the service printed, for error messages. */
  logTail(): string {
    return this.tail.join('\n');
  }

  private waitReady(): Promise<void> {
    const { readyPattern, readyTimeoutMs = 20_000, service } = this.options;
    return new Promise((resolve, reject) => {
      let ready = false;
      const timer = setTimeout(() => {
        reject(new Error(`${service} did not start within ${readyTimeoutMs} ms:\n${this.logTail()}`));
      }, readyTimeoutMs);
      const onLine = (line: string) => {
        this.tail.push(line);
        if (this.tail.length > 40) this.tail.shift();
        this.options.log?.(line);
        if (!ready && readyPattern.test(line)) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
      };
      for (const stream of [this.child.stdout!, this.child.stderr!]) {
        let partial = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => {
          const lines = (partial + chunk).split('\n');
          partial = lines.pop()!;
          lines.forEach(onLine);
        });
      }
      this.child.once('exit', (code, signal) => {
        if (ready) return;
        clearTimeout(timer);
        reject(new Error(`${service} exited (${signal ?? code}) before it was ready:\n${this.logTail()}`));
      });
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited in time. */
  async stop(timeoutMs = 5000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  }

  /** As a crash would: no shutdown hooks run. */
  async kill9(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGKILL');
    await exited;
  }
}
