import type { Socket } from 'node:net';
import {
  type BlockExtent,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataHead,
  encodeSimpleReply,
} from './reply.codec.js';

/**
 * Writes transmission replies to a socket, each one contiguous (header and data corked together),
 * in simple or structured form as the handshake agreed. Once the socket is gone, replies are dropped.
 */
export class ReplyWriter {
  constructor(
    private readonly socket: Socket,
    private readonly structured: boolean,
  ) {}

  /** The peer is not reading fast enough: hold off producing more replies. */
  get needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** Success without data (a simple reply is allowed even with structured replies). */
  ok(cookie: bigint): void {
    this.send(encodeSimpleReply(0, cookie));
  }

  /** Successful READ carrying `data` read at `offset`. */
  read(cookie: bigint, offset: number, data: Buffer): void {
    if (!this.structured) this.send(encodeSimpleReply(0, cookie), data);
    else if (data.length === 0) this.send(encodeNoneChunk(cookie));
    else this.send(encodeOffsetDataHead(cookie, offset, data.length, true), data);
  }

  /** Failure: an ERROR chunk with a message when structured, else a simple reply with the errno. */
  error(cookie: bigint, errno: number, message: string): void {
    if (this.structured) this.send(encodeErrorChunk(cookie, errno, message, true));
    else this.send(encodeSimpleReply(errno, cookie));
  }

  blockStatus(cookie: bigint, contextId: number, extents: BlockExtent[]): void {
    this.send(encodeBlockStatusChunk(cookie, contextId, extents, true));
  }

  private send(head: Buffer, data?: Buffer): void {
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) return;
    if (!data || data.length === 0) {
      socket.write(head);
      return;
    }
    socket.cork();
    socket.write(head);
    socket.write(data);
    socket.uncork();
  }
}
