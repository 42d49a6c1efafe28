/**
 * Reads the content size from a zstd frame header (RFC 8878 §3.1.1.1) without decompressing, so a
 * decoder can refuse a frame that would expand past its limit before allocating anything.
 * Returns undefined when the data is not a zstd frame or the frame does not record its size.
 */
export const ZSTD_MAGIC = 0xfd2fb528;

const DICT_ID_BYTES = [0, 1, 2, 4];
const CONTENT_SIZE_BYTES = [0, 2, 4, 8];

export function zstdContentSize(frame: Uint8Array): number | undefined {
  if (frame.length < 6) return undefined;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.getUint32(0, true) !== ZSTD_MAGIC) return undefined;
  const descriptor = frame[4];
  const singleSegment = (descriptor & 0x20) !== 0;
  if ((descriptor & 0x08) !== 0) return undefined; // reserved bit must be zero
  let at = 5 + (singleSegment ? 0 : 1) + DICT_ID_BYTES[descriptor & 0x03];
  const flag = descriptor >>> 6;
  const size = flag === 0 ? (singleSegment ? 1 : 0) : CONTENT_SIZE_BYTES[flag];
  if (size === 0 || at + size > frame.length) return undefined;
  switch (size) {
    case 1:
      return frame[at];
    case 2:
      return view.getUint16(at, true) + 256;
    case 4:
      return view.getUint32(at, true);
    default: {
      const lo = view.getUint32(at, true);
      const hi = view.getUint32((at += 4), true);
      return hi >= 2 ** 21 ? undefined : hi * 2 ** 32 + lo;
    }
  }
}
