/** The destination end of the qemu driver's memory path: QEMU's migration stream into `-incoming`. */
export * from './qemu-stream.constants.js';
export * from './qemu-incoming.errors.js';
export * from './qemu-incoming.writer.js';
export * from './qemu-migration.sink.js';
