/** The source end of the qemu driver's memory path: QEMU's migration stream relayed over NATS. */
export * from './qemu-stream.constants.js';
export * from './qemu-migration.errors.js';
export * from './qemu-migration.source.js';
export * from './qemu-stream.sender.js';
export { MAX_UNIX_SOCKET_PATH } from './unix-socket.listener.js';
