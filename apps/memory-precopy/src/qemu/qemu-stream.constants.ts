/**
 * Stream id of QEMU's own migration byte stream within a migration (disk is 1, pages 2, device
 * state 3: see libs/protocol memory.dto.ts). Defined here, and again on the destination side
 * (apps/delta-apply/src/qemu), until the qemu driver is wired in and the id moves to
 * `@wanmig/protocol` next to `MemoryStreamId`; the two must stay equal.
 */
export const QEMU_MIGRATION_STREAM_ID = 4;

/** Bytes of QEMU's stream gathered into one frame (before zstd): a few hundred KiB keeps framing cheap. */
export const DEFAULT_QEMU_FRAME_BYTES = 256 * 1024;

/**
 * A partial frame waits this long for more bytes before it leaves anyway. QEMU writes in bursts;
 * while the window is open the stream must not sit in our buffer (at the end of a migration the
 * guest is paused and every millisecond held here is downtime).
 */
export const DEFAULT_QEMU_FLUSH_IDLE_MS = 2;
