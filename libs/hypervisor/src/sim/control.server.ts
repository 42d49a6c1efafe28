import { unlinkSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { WanmigError } from '@wanmig/protocol';
import {
  MAX_CONTROL_LINE,
  encodeControlError,
  parseControlRequest,
  type ControlRequest,
  type ControlResponse,
} from './control.protocol.js';

export type ControlHandler = (request: ControlRequest) => Promise<unknown>;

/** The guest end of the control channel: a unix socket, JSON lines, requests answered in order per connection. */
export class ControlServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private bound = false;

  constructor(
    private readonly handle: ControlHandler,
    private readonly log: (line: string) => void,
  ) {
    this.server = createServer((socket) => this.accept(socket));
  }

  /**
   * Listens on `path`. A socket file left by a guest that is gone is removed first; one that still
   * answers belongs to a running guest, and listening fails.
   */
  async listen(path: string): Promise<void> {
    if (await answers(path)) throw new Error(`${path} is the control socket of a running guest`);
    try {
      unlinkSync(path);
    } catch {
      // not there: fine
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        this.bound = true;
        resolve();
      });
    });
  }

  /** True once it listens on its socket (which is then its to remove). */
  get listening(): boolean {
    return this.bound;
  }

  async close(): Promise<void> {
    if (!this.bound) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.end();
    setTimeout(() => this.sockets.forEach((s) => s.destroy()), 200).unref();
    await closed;
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.setEncoding('utf8');
    let partial = '';
    let chain: Promise<void> = Promise.resolve();
    socket.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      if (partial.length > MAX_CONTROL_LINE) {
        this.log('control request line too long: connection dropped');
        socket.destroy();
        return;
      }
      for (const line of lines) {
        if (line.trim() === '') continue;
        chain = chain.then(() => this.serve(socket, line)).catch(() => undefined);
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.sockets.delete(socket));
  }

  private async serve(socket: Socket, line: string): Promise<void> {
    let response: ControlResponse;
    let id = -1;
    try {
      const request = parseControlRequest(line);
      id = request.id;
      response = { id, ok: true, result: (await this.handle(request)) ?? {} };
    } catch (err) {
      if (!(err instanceof WanmigError)) {
        this.log(`control request failed: ${(err as Error).stack ?? String(err)}`);
      }
      if (id < 0) id = idOf(line);
      response = { id, ok: false, error: encodeControlError(err) };
    }
    if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
  }
}

function idOf(line: string): number {
  try {
    const id = (JSON.parse(line) as { id?: unknown }).id;
    return Number.isSafeInteger(id) ? (id as number) : -1;
  } catch {
    return -1;
  }
}

/** True when something accepts connections on the unix socket `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
