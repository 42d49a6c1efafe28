import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { trackDir, trackPid, untrackDir, untrackPid } from './child-process.registry.js';
import { NatsServerNotFoundError, NatsServerStartError } from './errors.js';
import { LOOPBACK_HOST, getFreePorts } from './free-port.util.js';
import { resolveNatsServerBinary } from './nats-binary.resolver.js';
import { renderNatsConfig } from './nats-config.renderer.js';
import {
  DEFAULT_START_TIMEOUT_MS,
  DEFAULT_STOP_TIMEOUT_MS,
  type NatsServerOptions,
  type ResolvedPorts,
  buildNatsConfig,
} from './nats-server.options.js';
import { sleep } from './wait.util.js';

export interface NatsServerHandle {
  readonly name: string;
  readonly host: string;
  /** Client port. */
  readonly port: number;
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly httpPort?: number;
  /** `http://127.0.0.1:<httpPort>` when monitoring is on. */
  readonly monitorUrl?: string;
  readonly leafnodePort?: number;
  /** `nats-leaf://127.0.0.1:<leafnodePort>` when a leafnode listener is open. */
  readonly leafnodeUrl?: string;
  /** Temp dir holding config, log and JetStream store; removed by stop(). */
  readonly dir: string;
  readonly configFile: string;
  readonly logFile: string;
  /** JetStream data (`<dir>/jetstream`, created by the server). */
  readonly storeDir: string;
  /** PID of the current process (changes on restart). */
  readonly pid: number;
  readonly running: boolean;
  /** SIGTERM, wait (SIGKILL after stopTimeoutMs), remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Stop and start again on the same ports and store (JetStream state survives). */
  restart(): Promise<void>;
  /** Last bytes of the server log. */
  logTail(maxBytes?: number): string;
}

const MAX_PORT_ATTEMPTS = 3;
const READY_POLL_MS = 20;
const LOG_TAIL_BYTES = 4_000;

/** Starts a nats-server on random loopback ports with a temporary JetStream store and waits until it is ready. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const binary = resolveNatsServerBinary(options.binary);
  const name = options.name ?? `wanmig-${randomBytes(4).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), `wanmig-nats-${name}-`));
  trackDir(dir);
  const server = new NatsServerProcess(binary, name, dir, options);
  try {
    for (let attempt = 1; ; attempt++) {
      await server.configure(await choosePorts(options));
      try {
        await server.spawnAndWait();
        return server;
      } catch (err) {
        // Another process may have grabbed a port between probing and binding: retry with fresh ones.
        const portRace = err instanceof NatsServerStartError && /address already in use/i.test(err.logTail);
        if (!portRace || attempt >= MAX_PORT_ATTEMPTS) throw err;
      }
    }
  } catch (err) {
    await server.stop();
    throw err;
  }
}

async function choosePorts(options: NatsServerOptions): Promise<ResolvedPorts> {
  const wantHttp = options.monitoring !== false;
  const wantLeaf = options.leafnode?.listen === true || options.leafnode?.port !== undefined;
  const [client, http, leaf] = await getFreePorts(3);
  return {
    client: options.port ?? client,
    http: wantHttp ? (options.httpPort ?? http) : undefined,
    leafnode: wantLeaf ? (options.leafnode?.port ?? leaf) : undefined,
  };
}

class NatsServerProcess implements NatsServerHandle {
  readonly host = LOOPBACK_HOST;
  readonly configFile: string;
  readonly logFile: string;
  readonly storeDir: string;
  private ports: ResolvedPorts = { client: 0 };
  private child?: ChildProcess;
  private exited?: Promise<void>;
  private stopping?: Promise<void>;

  constructor(
    private readonly binary: string,
    readonly name: string,
    readonly dir: string,
    private readonly options: NatsServerOptions,
  ) {
    this.configFile = join(dir, 'nats-server.conf');
    this.logFile = join(dir, 'nats-server.log');
    this.storeDir = join(dir, 'jetstream');
  }

  get port(): number {
    return this.ports.client;
  }
  get url(): string {
    return `nats://${this.host}:${this.ports.client}`;
  }
  get httpPort(): number | undefined {
    return this.ports.http;
  }
  get monitorUrl(): string | undefined {
    return this.ports.http === undefined ? undefined : `http://${this.host}:${this.ports.http}`;
  }
  get leafnodePort(): number | undefined {
    return this.ports.leafnode;
  }
  get leafnodeUrl(): string | undefined {
    return this.ports.leafnode === undefined ? undefined : `nats-leaf://${this.host}:${this.ports.leafnode}`;
  }
  get pid(): number {
    return this.child?.pid ?? -1;
  }
  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async configure(ports: ResolvedPorts): Promise<void> {
    this.ports = ports;
    const config = buildNatsConfig(this.options, this.name, this.host, ports, this.dir);
    await writeFile(this.configFile, renderNatsConfig(config));
  }

  async spawnAndWait(): Promise<void> {
    const logFd = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      // stderr goes straight to a file: no pipe to drain, and the log survives for post-mortems.
      child = spawn(this.binary, ['-c', this.configFile], { stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    this.child = child;
    const spawnFailure = new Promise<never>((_, reject) => {
      child.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'ENOENT' ? new NatsServerNotFoundError(this.binary, { cause: err }) : err),
      );
    });
    spawnFailure.catch(() => undefined);
    this.exited = new Promise((resolve) => {
      child.once('exit', () => resolve());
      // A child that never spawned emits 'error' and maybe no 'exit'.
      child.once('error', () => child.pid === undefined && resolve());
    });
    if (child.pid !== undefined) trackPid(child.pid);
    try {
      await Promise.race([this.waitReady(child), spawnFailure]);
    } catch (err) {
      await this.stopProcess();
      throw err;
    }
  }

  private async waitReady(child: ChildProcess): Promise<void> {
    const timeoutMs = this.options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        const how = child.exitCode !== null ? `code ${child.exitCode}` : `signal ${child.signalCode}`;
        throw new NatsServerStartError(this.name, `process exited with ${how}`, this.logTail());
      }
      if (await this.probe()) return;
      if (Date.now() > deadline) {
        throw new NatsServerStartError(this.name, `not ready after ${timeoutMs} ms`, this.logTail());
      }
      await sleep(READY_POLL_MS);
    }
  }

  /** /healthz when monitoring is on (it also covers JetStream), else a TCP connect to the client port. */
  private async probe(): Promise<boolean> {
    if (this.monitorUrl) {
      try {
        const res = await fetch(`${this.monitorUrl}/healthz`, { signal: AbortSignal.timeout(1_000) });
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    }
    return new Promise((resolve) => {
      const socket = connect(this.port, this.host);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
  }

  logTail(maxBytes = LOG_TAIL_BYTES): string {
    try {
      const size = statSync(this.logFile).size;
      const length = Math.min(size, maxBytes);
      const buffer = Buffer.alloc(length);
      const fd = openSync(this.logFile, 'r');
      try {
        readSync(fd, buffer, 0, length, size - length);
      } finally {
        closeSync(fd);
      }
      return buffer.toString('utf8');
    } catch {
      return '';
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.stopProcess();
      await rm(this.dir, { recursive: true, force: true });
      untrackDir(this.dir);
    })();
    return this.stopping;
  }

  async restart(): Promise<void> {
    if (this.stopping) throw new Error(`nats-server ${this.name} was stopped; start a new one`);
    await this.stopProcess();
    await this.spawnAndWait();
  }

  private async stopProcess(): Promise<void> {
    const child = this.child;
    if (!child || !this.exited) return;
    if (this.running) {
      child.kill('SIGTERM');
      const timeoutMs = this.options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
      const timer = new AbortController();
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        sleep(timeoutMs, true, { signal: timer.signal }).catch(() => false),
      ]);
      timer.abort();
      if (timedOut) child.kill('SIGKILL');
    }
    await this.exited;
    if (child.pid !== undefined) untrackPid(child.pid);
  }
}
