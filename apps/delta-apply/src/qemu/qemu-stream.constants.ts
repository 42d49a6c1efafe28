import { QemuMigrationStreamId } from '@wanmig/protocol';

/** Stream id of QEMU's own migration byte stream within a migration (shared with the other side). */
export const QEMU_MIGRATION_STREAM_ID = QemuMigrationStreamId;

/** How long the sink waits for the destination QEMU's `-incoming` socket to appear and accept. */
export const DEFAULT_QEMU_CONNECT_TIMEOUT_MS = 30_000;

/** Largest frame body accepted once decompressed (the source seals 256 KiB frames). */
export const MAX_QEMU_FRAME_BYTES = 4 * 1024 * 1024;
