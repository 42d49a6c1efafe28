import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  jsonLines,
  type ForwarderChildConfig,
  type ForwarderCommand,
  type ForwarderReport,
} from './forwarder.protocol.js';
import {
  emptyCounters,
  TcpForwarder,
  type Endpoint,
  type ForwarderCounters,
  type ForwarderTarget,
  type OpenFlow,
} from './tcp.forwarder.js';

/** A listen error as the relay reports it: `code` EADDRINUSE is a CONFLICT, anything else UNAVAILABLE. */
export class ForwarderStartError extends Error {
  readonly code?: string;
  constructor(message: string, code?: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'ForwarderStartError';
    this.code = code;
  }
}

/** A running forwarder, in this process or in a child inside a namespace; what NetRelay drives. */
export interface ForwarderHandle {
  readonly address: Endpoint;
  /** Every listening endpoint (`listen`, then `alsoListen`), ports as bound. */
  readonly addresses: Endpoint[];
  /** The child's pid (namespaced forwarders). */
  readonly pid?: number;
  counters(): ForwarderCounters;
  /** Called on every change of the counters, and once with an error if the forwarder dies on its own. */
  onChange(listener: (error?: string) => void): void;
  stopAccepting(): void;
  /** New connections (and open `lines` ones) go to `target`; resolves once the forwarder applied it. */
  retarget(target: ForwarderTarget, relay: boolean): Promise<void>;
  /** The open client connections. */
  flows(): Promise<OpenFlow[]>;
  /** Cuts every connection and ends the forwarder (the child exits). Idempotent. */
  destroy(): Promise<void>;
}

export async function startInProcessForwarder(config: ForwarderChildConfig): Promise<ForwarderHandle> {
  let listener: (error?: string) => void = () => {};
  let forwarder: TcpForwarder;
  try {
    forwarder = await TcpForwarder.listen(config, () => listener());
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ForwarderStartError(e.message, e.code, err);
  }
  return {
    address: forwarder.address,
    addresses: forwarder.addresses,
    counters: () => ({ ...forwarder.counters }),
    onChange: (fn) => (listener = fn),
    stopAccepting: () => forwarder.stopAccepting(),
    retarget: (target, relay) => {
      forwarder.retarget(target, relay);
      return Promise.resolve();
    },
    flows: () => Promise.resolve(forwarder.flows()),
    destroy: () => forwarder.destroy(),
  };
}

export interface ChildForwarderOptions {
  netns: string;
  ipBin: string;
  /** How long the child may take to listen (ms). */
  startTimeoutMs: number;
  /** How long it gets to exit after `stop` before SIGKILL (ms). */
  stopTimeoutMs?: number;
  /** Tracks the child's pid while it lives (the service kills what is left at exit). */
  track?: (pid: number, alive: boolean) => void;
}

/** The compiled child script beside this module (dist/apps/net-redirect/src/relay/forwarder.child.js). */
export function forwarderChildScript(): string {
  const script = fileURLToPath(new URL('./forwarder.child.js', import.meta.url));
  if (!existsSync(script)) throw new ForwarderStartError(`${script} is missing: build net-redirect (npm run build)`);
  return script;
}

/**
 * Starts the forwarder inside `netns`: `ip netns exec <netns> node forwarder.child.js '<config>'`, and resolves once it
 * listens. A child that reports a listen error, exits or does not listen in time is gone (killed) before this rejects.
 */
export function startChildForwarder(
  config: ForwarderChildConfig,
  options: ChildForwarderOptions,
): Promise<ForwarderHandle> {
  const argv = [
    options.ipBin,
    'netns',
    'exec',
    options.netns,
    process.execPath,
    forwarderChildScript(),
    JSON.stringify(config),
  ];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  return new ChildForwarder(child, options).started;
}

class ChildForwarder implements ForwarderHandle {
  readonly started: Promise<ForwarderHandle>;
  address: Endpoint = { host: '', port: 0 };
  addresses: Endpoint[] = [];
  private latest: ForwarderCounters = emptyCounters();
  private listener: (error?: string) => void = () => {};
  private stderr = '';
  /** Retargets sent and not yet acknowledged, oldest first (the child answers them in order). */
  private readonly retargets: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private readonly flowQueries: Array<{ resolve: (flows: OpenFlow[]) => void; reject: (err: Error) => void }> = [];
  private readonly exited: Promise<void>;
  private ending = false;

  constructor(
    private readonly child: ChildProcess,
    private readonly options: ChildForwarderOptions,
  ) {
    if (child.pid !== undefined) options.track?.(child.pid, true);
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    void this.exited.then(() => child.pid !== undefined && options.track?.(child.pid, false));
    child.stderr?.on('data', (chunk: Buffer) => {
      if (this.stderr.length < 4096) this.stderr += chunk.toString();
    });
    // The child's stdin is its lifeline: an error writing to it (it died) is reported by its exit.
    child.stdin?.on('error', () => {});
    this.started = new Promise<ForwarderHandle>((resolve, reject) => {
      let listening = false;
      const fail = (message: string, code?: string) => {
        if (listening) return;
        listening = true;
        clearTimeout(timer);
        void this.destroy().then(() => reject(new ForwarderStartError(message, code)));
      };
      const timer = setTimeout(
        () => fail(`the forwarder in ${options.netns} did not listen within ${options.startTimeoutMs} ms`),
        options.startTimeoutMs,
      );
      child.stdout?.on(
        'data',
        jsonLines<ForwarderReport>((report) => {
          if (report.type === 'listening' && !listening) {
            listening = true;
            clearTimeout(timer);
            this.address = report.address;
            this.addresses = report.addresses ?? [report.address];
            resolve(this);
          } else if (report.type === 'retargeted') {
            this.retargets.shift()?.resolve();
          } else if (report.type === 'flows') {
            this.flowQueries.shift()?.resolve(report.flows);
          } else if (report.type === 'error') {
            fail(report.message, report.code);
          } else if (report.type === 'counters') {
            const { type: _type, ...counters } = report;
            this.latest = counters;
            this.listener();
          }
        }),
      );
      child.once('error', (err) => fail(`cannot start ${options.ipBin} netns exec: ${err.message}`));
      child.once('close', (code, signal) => {
        const why = this.stderr.trim() || `exited (${signal ?? code})`;
        for (const pending of this.retargets.splice(0)) {
          pending.reject(
            new ForwarderStartError(`the forwarder in ${options.netns} exited before it retargeted: ${why}`),
          );
        }
        if (!listening) fail(`the forwarder in ${options.netns} could not start: ${why}`);
        else if (!this.ending) this.listener(`the forwarder in ${options.netns} died: ${why}`);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  counters(): ForwarderCounters {
    return { ...this.latest };
  }

  onChange(listener: (error?: string) => void): void {
    this.listener = listener;
  }

  stopAccepting(): void {
    this.send({ type: 'drain' });
  }

  retarget(target: ForwarderTarget, relay: boolean): Promise<void> {
    if (this.ending || this.child.exitCode !== null || this.child.signalCode !== null) {
      return Promise.reject(new ForwarderStartError(`the forwarder in ${this.options.netns} is gone`));
    }
    return new Promise((resolve, reject) => {
      this.retargets.push({ resolve, reject });
      this.send({ type: 'retarget', target, relay });
    });
  }

  flows(): Promise<OpenFlow[]> {
    if (this.ending || this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.flowQueries.push({ resolve, reject });
      this.send({ type: 'flows' });
    });
  }

  async destroy(): Promise<void> {
    if (!this.ending) {
      this.ending = true;
      this.send({ type: 'stop' });
      this.child.stdin?.end();
      const timer = setTimeout(() => this.child.kill('SIGKILL'), this.options.stopTimeoutMs ?? 2_000);
      await this.exited;
      clearTimeout(timer);
    }
    await this.exited;
  }

  private send(command: ForwarderCommand): void {
    if (this.child.stdin?.writable) this.child.stdin.write(`${JSON.stringify(command)}\n`);
  }
}
