import { type Socket, connect } from 'node:net';
import { QmpClosedError, QmpCommandError, QmpConnectError, QmpProtocolError, QmpTimeoutError } from './qmp.errors.js';
import { QMP_ANY_EVENT, type QmpEvent, type QmpEventListener, type QmpGreeting, type QmpVersion } from './qmp.types.js';

/** Connect (socket + greeting + `qmp_capabilities`) and per-command default. */
export const DEFAULT_QMP_TIMEOUT_MS = 10_000;
/** A line longer than this is not QMP (`query-qmp-schema` on 7.2 is ~200 KB). */
export const MAX_QMP_LINE = 32 * 2 ** 20;

export interface QmpConnectOptions {
  /** Bound on reaching the socket, reading the greeting and negotiating capabilities. */
  timeoutMs?: number;
  /** Default bound on each `execute` (DEFAULT_QMP_TIMEOUT_MS). */
  commandTimeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type QmpMessage = Record<string, unknown>;

/**
 * A QMP client over a unix socket: JSON lines, requests matched to replies by `id` (any number may be in flight),
 * events delivered to listeners as they arrive, interleaved with replies. QEMU serves one client per QMP socket:
 * a second client connects but gets no greeting until the first one leaves.
 *
 * Events that a command triggers may arrive before its reply (`stop` → STOP, then the reply), so wait for them
 * from before the command: `const stopped = qmp.waitForEvent('STOP'); await qmp.execute('stop'); await stopped;`.
 */
export class QmpClient {
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Map<string, Set<QmpEventListener>>();
  private readonly closeWatchers = new Set<(err: QmpClosedError) => void>();
  private nextId = 1;
  private partial = '';
  private greetingValue: QmpGreeting | undefined;
  private onGreeting: ((greeting: QmpGreeting) => void) | undefined;
  private closedWith: QmpClosedError | undefined;
  private closing = false;
  private failure: Error | undefined;
  /** Resolves (with the error pending work got) once the connection is closed, whoever closed it. */
  readonly closed: Promise<QmpClosedError>;

  private constructor(
    private readonly socket: Socket,
    readonly socketPath: string,
    private readonly commandTimeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => (this.failure ??= err));
    this.closed = new Promise((resolve) => socket.once('close', () => resolve(this.onClose())));
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const socket = await openSocket(socketPath, timeoutMs);
    const client = new QmpClient(socket, socketPath, options.commandTimeoutMs ?? DEFAULT_QMP_TIMEOUT_MS);
    try {
      await client.awaitGreeting(Math.max(1, deadline - Date.now()), timeoutMs);
      await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
      return client;
    } catch (err) {
      await client.close();
      throw err;
    }
  }

  get greeting(): QmpGreeting {
    return this.greetingValue!;
  }

  /** QEMU's version, from the greeting. */
  get version(): QmpVersion {
    return this.greeting.QMP.version;
  }

  get isOpen(): boolean {
    return this.closedWith === undefined && !this.socket.destroyed;
  }

  /**
   * Runs a command; resolves with its `return` value, rejects with QmpCommandError (QEMU's error),
   * QmpTimeoutError (no reply in time: QEMU may still carry the command out) or QmpClosedError.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (!this.isOpen) return Promise.reject(this.closedWith ?? this.closedError('the socket is closed'));
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpTimeoutError(this.socketPath, `reply to '${command}'`, timeoutMs, { command }));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (r: unknown) => void, reject, timer });
      const request = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(`${JSON.stringify(request)}\n`);
    });
  }

  /**
   * Calls `listener` for each event named `event` (or every event, with `'*'`) until the returned function is
   * called. A listener that throws does not break the connection; its error is rethrown asynchronously, as an
   * uncaught exception, the way an EventEmitter listener's would be.
   */
  on(event: string, listener: QmpEventListener): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(event) === set) this.listeners.delete(event);
    };
  }

  /**
   * The next event named `event` (or `'*'`) for which `predicate` holds. Only events that arrive after the call
   * count. Rejects with QmpTimeoutError after `timeoutMs`, QmpClosedError if the connection closes first, or the
   * predicate's own error.
   */
  waitForEvent<D = Record<string, unknown>>(
    event: string,
    predicate?: (e: QmpEvent<D>) => boolean,
    timeoutMs = this.commandTimeoutMs,
  ): Promise<QmpEvent<D>> {
    if (!this.isOpen) return Promise.reject(this.closedWith ?? this.closedError('the socket is closed'));
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        off();
        this.closeWatchers.delete(onClose);
      };
      const off = this.on(event, (e) => {
        let match: boolean;
        try {
          match = predicate ? predicate(e as QmpEvent<D>) : true;
        } catch (err) {
          finish();
          reject(err instanceof Error ? err : new Error(`predicate threw ${String(err)}`));
          return;
        }
        if (!match) return;
        finish();
        resolve(e as QmpEvent<D>);
      });
      const timer = setTimeout(() => {
        finish();
        reject(new QmpTimeoutError(this.socketPath, `event ${event}`, timeoutMs));
      }, timeoutMs);
      const onClose = (err: QmpClosedError) => {
        finish();
        reject(err);
      };
      this.closeWatchers.add(onClose);
    });
  }

  /** Closes the connection; whatever is in flight is rejected with QmpClosedError. */
  async close(): Promise<void> {
    this.closing = true;
    this.socket.destroy();
    await this.closed;
  }

  private awaitGreeting(timeoutMs: number, totalMs: number): Promise<QmpGreeting> {
    if (this.greetingValue) return Promise.resolve(this.greetingValue);
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        this.onGreeting = undefined;
        this.closeWatchers.delete(onClose);
      };
      const timer = setTimeout(() => {
        finish();
        const hint = 'QEMU serves one QMP client at a time: is another one connected?';
        reject(new QmpTimeoutError(this.socketPath, 'greeting', totalMs, { hint }));
      }, timeoutMs);
      const onClose = (err: QmpClosedError) => {
        finish();
        reject(this.failure instanceof QmpProtocolError ? this.failure : err);
      };
      this.onGreeting = (greeting) => {
        finish();
        resolve(greeting);
      };
      this.closeWatchers.add(onClose);
    });
  }

  private onData(chunk: string): void {
    let from = 0;
    for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n', from)) {
      const line = this.partial + chunk.slice(from, nl);
      this.partial = '';
      from = nl + 1;
      if (line.trim() !== '') this.onLine(line);
      if (this.socket.destroyed) return;
    }
    this.partial += chunk.slice(from);
    if (this.partial.length > MAX_QMP_LINE) this.fail(`a line longer than ${MAX_QMP_LINE} bytes`);
  }

  private onLine(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch (err) {
      this.fail(`not JSON: ${line.slice(0, 200)}`, err);
      return;
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.fail(`not a JSON object: ${line.slice(0, 200)}`);
      return;
    }
    const m = message as QmpMessage;
    if (this.greetingValue === undefined) {
      if (typeof m.QMP !== 'object' || m.QMP === null) {
        this.fail(`expected the QMP greeting, got: ${line.slice(0, 200)}`);
        return;
      }
      this.greetingValue = m as unknown as QmpGreeting;
      this.onGreeting?.(this.greetingValue);
      return;
    }
    if (typeof m.event === 'string') this.dispatch(m as unknown as QmpEvent);
    else if ('return' in m || 'error' in m) this.settle(m);
    // Anything else is a message kind newer than this client: ignored.
  }

  private settle(m: QmpMessage): void {
    if (typeof m.id !== 'number') return; // every request carries a numeric id: a reply without one is not ours
    const pending = this.pending.get(m.id);
    if (!pending) return; // timed out already
    this.pending.delete(m.id);
    clearTimeout(pending.timer);
    if ('return' in m) {
      pending.resolve(m.return);
      return;
    }
    const error = (m.error ?? {}) as { class?: unknown; desc?: unknown };
    const errorClass = typeof error.class === 'string' ? error.class : 'GenericError';
    const desc = typeof error.desc === 'string' ? error.desc : JSON.stringify(m.error);
    pending.reject(new QmpCommandError(pending.command, errorClass, desc));
  }

  private dispatch(event: QmpEvent): void {
    const targets = [...(this.listeners.get(event.event) ?? []), ...(this.listeners.get(QMP_ANY_EVENT) ?? [])];
    for (const listener of targets) {
      try {
        listener(event);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  private fail(message: string, cause?: unknown): void {
    this.failure ??= new QmpProtocolError(this.socketPath, message, { cause });
    this.socket.destroy();
  }

  private closedError(reason: string): QmpClosedError {
    return new QmpClosedError(this.socketPath, reason, { cause: this.failure });
  }

  private onClose(): QmpClosedError {
    const reason = this.closing
      ? 'closed by this client'
      : this.failure
        ? this.failure.message
        : 'QEMU closed the connection (it quit or died)';
    const err = (this.closedWith ??= this.closedError(reason));
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(err);
    }
    for (const watcher of [...this.closeWatchers]) watcher(err);
    this.closeWatchers.clear();
    return err;
  }
}

function openSocket(socketPath: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new QmpTimeoutError(socketPath, 'connection', timeoutMs));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new QmpConnectError(socketPath, err.code, { cause: err }));
    };
    socket.once('error', onError);
  });
}
