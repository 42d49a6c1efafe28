/**
 * Stream id of QEMU's own migration byte stream within a migration (disk is 1, pages 2, device
 * state 3: see libs/protocol memory.dto.ts). The source side defines the same constant
 * (apps/memory-precopy/src/qemu); it moves to `@wanmig/protocol` next to `MemoryStreamId` when the
 * qemu driver is wired into the services. The two must stay equal.
 */
export const QEMU_MIGRATION_STREAM_ID = 4;

/** How long the sink waits for the destination QEMU's `-incoming` socket to appear and accept. */
export const DEFAULT_QEMU_CONNECT_TIMEOUT_MS = 30_000;

/** Largest frame body accepted once decompressed (the source seals 256 KiB frames). */
export const MAX_QEMU_FRAME_BYTES = 4 * 1024 * 1024;
