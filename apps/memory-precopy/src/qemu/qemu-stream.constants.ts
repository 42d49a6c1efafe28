import { QemuMigrationStreamId } from '@wanmig/protocol';

/** Stream id of QEMU's own migration byte stream within a migration (shared with the other side). */
export const QEMU_MIGRATION_STREAM_ID = QemuMigrationStreamId;

/** Bytes of QEMU's stream gathered into one frame (before zstd): a few hundred KiB keeps framing cheap. */
export const DEFAULT_QEMU_FRAME_BYTES = 256 * 1024;

/**
 * A partial frame waits this long for more bytes before it leaves anyway. QEMU writes in bursts;
 * while the window is open the stream must not sit in our buffer (at the end of a migration the
 * guest is paused and every millisecond held here is downtime).
 */
export const DEFAULT_QEMU_FLUSH_IDLE_MS = 2;
