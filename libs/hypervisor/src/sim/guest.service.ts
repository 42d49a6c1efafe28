import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { rm } from 'node:fs/promises';
import { ErrorCode } from '@wanmig/protocol';
import {
  MAX_SERVICE_LINE,
  ServiceCommand,
  ServiceRequestError,
  formatServiceError,
  parseServiceRequest,
  type ServiceRequest,
} from './service.protocol.js';

/** Answers service requests from RAM and disk (the guest). */
export type ServiceAnswerer = (request: ServiceRequest) => Promise<string> | string;

/** How long `open()` waits for held requests to be answered before the guest runs on. */
export const HELD_REPLY_WAIT_MS = 1000;

/**
 * The guest's TCP service on 127.0.0.1. While the guest is paused (or incoming) requests are held,
 * not refused: a client sees the pause as latency. `open()` answers the held requests against the
 * state at that moment before it resolves, so the guest can run on only after they are answered.
 */
export class GuestService {
  private readonly server: Server;
  /** The same service on a unix socket: what a site's NIC (net-redirect, inside a namespace) forwards to. */
  private readonly unixServer: Server;
  private readonly sockets = new Set<Socket>();
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;
  /** Replies to requests that arrived while held, settled once written. */
  private readonly held = new Set<Promise<void>>();
  private closing = false;

  constructor(
    private readonly answer: ServiceAnswerer,
    private readonly log: (line: string) => void,
  ) {
    this.server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.unixServer = createServer((socket) => this.accept(socket));
    this.hold();
  }

  async listen(port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address() as AddressInfo;
    return `127.0.0.1:${address.port}`;
  }

  /** Also serves on a unix socket at `path` (a stale socket file there is replaced). */
  async listenUnix(path: string): Promise<void> {
    await rm(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.unixServer.once('error', reject);
      this.unixServer.listen(path, () => {
        this.unixServer.off('error', reject);
        resolve();
      });
    });
  }

  get holding(): boolean {
    return this.gate !== undefined;
  }

  /** From now on requests wait until `open()`. */
  hold(): void {
    if (this.gate) return;
    this.gate = new Promise((resolve) => (this.openGate = resolve));
  }

  /** Lets requests through; resolves once those that were held are answered (or after HELD_REPLY_WAIT_MS). */
  async open(): Promise<void> {
    if (!this.gate) return;
    const held = [...this.held];
    this.gate = undefined;
    this.openGate?.();
    this.openGate = undefined;
    if (held.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(held),
      new Promise((resolve) => (timer = setTimeout(resolve, HELD_REPLY_WAIT_MS))),
    ]);
    clearTimeout(timer);
  }

  get connections(): number {
    return this.sockets.size;
  }

  async close(): Promise<void> {
    this.closing = true;
    const closed = [this.server, this.unixServer]
      .filter((server) => server.listening)
      .map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(closed);
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.setEncoding('utf8');
    let partial = '';
    let chain: Promise<void> = Promise.resolve();
    socket.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      if (partial.length > MAX_SERVICE_LINE) {
        socket.end(`${formatServiceError(ErrorCode.InvalidRequest, 'request line too long')}\n`);
        partial = '';
        return;
      }
      for (const raw of lines) {
        const line = raw.replace(/\r$/, '');
        const reply = chain.then(() => this.serve(socket, line)).catch(() => undefined);
        chain = reply;
        if (this.gate) {
          this.held.add(reply);
          void reply.finally(() => this.held.delete(reply));
        }
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.sockets.delete(socket));
  }

  private async serve(socket: Socket, line: string): Promise<void> {
    if (socket.destroyed) return;
    let reply: string;
    let quit = false;
    try {
      const request = parseServiceRequest(line);
      quit = request.command === ServiceCommand.Quit;
      while (this.gate) await this.gate;
      reply = quit ? 'BYE' : await this.answer(request);
    } catch (err) {
      if (err instanceof ServiceRequestError) reply = formatServiceError(err.code, err.message);
      else {
        this.log(`service request ${JSON.stringify(line)} failed: ${(err as Error).stack ?? String(err)}`);
        reply = formatServiceError(ErrorCode.Internal, 'internal error (see the guest log)');
      }
    }
    if (socket.destroyed) return;
    if (quit) socket.end(`${reply}\n`);
    else socket.write(`${reply}\n`);
  }
}
