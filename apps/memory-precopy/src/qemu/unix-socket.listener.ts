import { lstat, rm } from 'node:fs/promises';
import { type Server, connect, createServer } from 'node:net';
import { ErrorCode } from '@wanmig/protocol';
import { QemuStreamError } from './qemu-migration.errors.js';

/** sun_path is 108 bytes on Linux, NUL included. */
export const MAX_UNIX_SOCKET_PATH = 107;

/**
 * Listens on a unix socket path. A stale socket file there (no one answers) is removed first; a
 * live one, or a file that is not a socket, is refused rather than stolen.
 */
export async function listenUnix(path: string, migrationId: string): Promise<Server> {
  const refuse = (message: string, cause?: unknown) =>
    new QemuStreamError(ErrorCode.Conflict, `cannot listen on ${path}: ${message}`, { migrationId, cause });
  if (Buffer.byteLength(path) > MAX_UNIX_SOCKET_PATH) throw refuse(`longer than ${MAX_UNIX_SOCKET_PATH} bytes`);
  const existing = await lstat(path).catch(() => undefined);
  if (existing) {
    if (!existing.isSocket()) throw refuse('the path exists and is not a socket');
    if (await answers(path)) throw refuse('another process listens there');
    await rm(path, { force: true });
  }
  const server = createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(refuse(err.message, err)));
    server.listen(path, () => resolve());
  });
  return server;
}

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
