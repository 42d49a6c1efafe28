import { type Socket, connect } from 'node:net';
import { ControlConnectionLostError, ControlProtocolError, ControlTimeoutError } from '../errors.js';
import {
  MAX_CONTROL_LINE,
  decodeControlError,
  parseControlResponse,
  type ControlOp,
  type ControlResponse,
} from './control.protocol.js';

interface Pending {
  op: ControlOp;
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** The driver end of a guest's control channel: one unix socket connection, requests matched by id. */
export class ControlClient {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private lost: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly vmId: string,
  ) {
    socket.setEncoding('utf8');
    let partial = '';
    socket.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      if (partial.length > MAX_CONTROL_LINE) socket.destroy(new ControlProtocolError('response line too long'));
      for (const line of lines) if (line.trim() !== '') this.settle(line);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => this.failAll());
  }

  /** Connects to the control socket; rejects with the socket error (ENOENT, ECONNREFUSED) for the caller to diagnose. */
  static connect(path: string, vmId: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new ControlClient(socket, vmId));
      });
      socket.once('error', reject);
    });
  }

  get open(): boolean {
    return this.lost === undefined && !this.socket.destroyed;
  }

  call<T>(op: ControlOp, args: Record<string, unknown>, timeoutMs: number): Promise<T> {
    if (this.lost) return Promise.reject(this.lost);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ControlTimeoutError(this.vmId, op, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { op, resolve: resolve as (r: unknown) => void, reject, timer });
      this.socket.write(`${JSON.stringify({ id, op, args })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private settle(line: string): void {
    let response: ControlResponse;
    try {
      response = parseControlResponse(line);
    } catch (err) {
      this.socket.destroy(err as Error);
      return;
    }
    const pending = this.pending.get(response.id);
    if (!pending) return;
    this.pending.delete(response.id);
    clearTimeout(pending.timer);
    if (response.ok) pending.resolve(response.result);
    else pending.reject(decodeControlError(this.vmId, pending.op, response.error));
  }

  private failAll(): void {
    this.lost ??= new ControlConnectionLostError(this.vmId);
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(this.lost);
    }
  }
}
