import { CodecUsageError } from './errors.js';

/**
 * XBZRLE-style delta, as QEMU encodes RAM pages it has sent before (migration/xbzrle.c): the new
 * page against the previous version, as pairs
 *
 *   uleb128 unchanged-run length, uleb128 changed-run length, changed bytes (the new values)
 *
 * The first unchanged run may be 0; every later one and every changed run is at least 1, as QEMU
 * requires. A trailing unchanged run is left out. Applying a delta only writes the changed runs, so
 * applying it twice gives the same page.
 *
 * Unlike QEMU, an unchanged gap shorter than MERGE_GAP bytes inside a changed region is sent as
 * literal bytes: a separate pair would cost two length bytes, no fewer, and fewer pairs decode faster.
 */
export const XBZRLE_MERGE_GAP = 3;
/** Longest page XBZRLE handles: run lengths then fit 3 uleb128 bytes. */
export const XBZRLE_MAX_LENGTH = 1 << 20;

const NO_WORDS = new Uint32Array(0);
/** Below this many bytes a JS loop beats `set(subarray())`, which allocates a view. */
const SHORT_COPY = 16;

/**
 * Encodes `next` against `base` (same length) into `out`; returns the delta length, or -1 as soon
 * as it is clear the delta would exceed `limit` bytes (then raw is the better choice and the rest
 * of the page is never scanned). Unchanged stretches are skipped four bytes at a time through
 * Uint32Array views when both inputs are 4-byte aligned.
 */
export function xbzrleEncode(base: Uint8Array, next: Uint8Array, out: Uint8Array, limit = out.length): number {
  const length = next.length;
  if (base.length !== length) throw new CodecUsageError(`xbzrle base is ${base.length} bytes, page ${length}`);
  if (length > XBZRLE_MAX_LENGTH) throw new CodecUsageError(`xbzrle page of ${length} bytes is too long`);
  limit = Math.min(limit, out.length);
  const aligned = (base.byteOffset & 3) === 0 && (next.byteOffset & 3) === 0;
  const words = aligned ? length >>> 2 : 0;
  const b32 = aligned ? new Uint32Array(base.buffer, base.byteOffset, words) : NO_WORDS;
  const n32 = aligned ? new Uint32Array(next.buffer, next.byteOffset, words) : NO_WORDS;
  let pos = 0;
  let o = 0;
  while (pos < length) {
    // Unchanged run: bytes up to a word boundary, whole words, then bytes of the first differing word.
    const zeroStart = pos;
    while ((pos & 3) !== 0 && pos < length && base[pos] === next[pos]) pos++;
    if ((pos & 3) === 0) {
      let w = pos >>> 2;
      while (w < words && b32[w] === n32[w]) w++;
      if (w > pos >>> 2) pos = w << 2;
    }
    while (pos < length && base[pos] === next[pos]) pos++;
    if (pos >= length) break;
    const zrun = pos - zeroStart;

    // Changed run: extend over differing bytes and over equal gaps shorter than XBZRLE_MERGE_GAP.
    const changedStart = pos;
    const maxEnd = changedStart + (limit - o);
    pos++;
    while (pos < length) {
      if (pos > maxEnd) return -1;
      if (base[pos] !== next[pos]) {
        pos++;
        continue;
      }
      let gap = 1;
      while (gap < XBZRLE_MERGE_GAP && pos + gap < length && base[pos + gap] === next[pos + gap]) gap++;
      if (gap >= XBZRLE_MERGE_GAP || pos + gap >= length) break;
      pos += gap;
    }
    const nrun = pos - changedStart;
    if (o + ulebSize(zrun) + ulebSize(nrun) + nrun > limit) return -1;
    o = writeUleb(out, o, zrun);
    o = writeUleb(out, o, nrun);
    if (nrun < SHORT_COPY) {
      for (let i = changedStart; i < pos; i++) out[o++] = next[i];
    } else {
      out.set(next.subarray(changedStart, pos), o);
      o += nrun;
    }
  }
  return o;
}

/** Why `delta` is not a well-formed delta for a page of `length` bytes, or undefined when it is. */
export function xbzrleCheck(delta: Uint8Array, length: number): string | undefined {
  const cursor = { at: 0 };
  let pos = 0;
  let first = true;
  while (cursor.at < delta.length) {
    const zrun = readUleb(delta, cursor);
    const nrun = zrun < 0 ? -1 : readUleb(delta, cursor);
    if (zrun < 0 || nrun < 0) return 'run length is truncated or too long';
    if ((zrun === 0 && !first) || nrun === 0) return 'empty run';
    first = false;
    pos += zrun + nrun;
    if (pos > length) return `runs reach byte ${pos} of a ${length}-byte page`;
    if (cursor.at + nrun > delta.length) return 'changed bytes are truncated';
    cursor.at += nrun;
  }
  return undefined;
}

/**
 * Applies a delta onto `page`, which holds the base and receives the result in place. The delta
 * must have passed `xbzrleCheck` for this length; an unchecked malformed delta throws.
 */
export function xbzrleApply(delta: Uint8Array, page: Uint8Array): void {
  const problem = xbzrleCheck(delta, page.length);
  if (problem !== undefined) throw new CodecUsageError(`malformed xbzrle delta: ${problem}`);
  xbzrleApplyChecked(delta, page);
}

/** `xbzrleApply` without the check, for a decoder that has already run `xbzrleCheck` on this delta. */
export function xbzrleApplyChecked(delta: Uint8Array, page: Uint8Array): void {
  const cursor = { at: 0 };
  let pos = 0;
  while (cursor.at < delta.length) {
    pos += readUleb(delta, cursor);
    const nrun = readUleb(delta, cursor);
    const from = cursor.at;
    if (nrun < SHORT_COPY) {
      for (let i = 0; i < nrun; i++) page[pos + i] = delta[from + i];
    } else {
      page.set(delta.subarray(from, from + nrun), pos);
    }
    pos += nrun;
    cursor.at = from + nrun;
  }
}

function ulebSize(value: number): number {
  return value < 0x80 ? 1 : value < 0x4000 ? 2 : 3;
}

function writeUleb(out: Uint8Array, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  out[at++] = value;
  return at;
}

/** Reads a uleb128 of at most 3 bytes; -1 when truncated or longer. */
function readUleb(buf: Uint8Array, cursor: { at: number }): number {
  let value = 0;
  for (let shift = 0; shift < 21; shift += 7) {
    if (cursor.at >= buf.length) return -1;
    const byte = buf[cursor.at++];
    value |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return value;
  }
  return -1;
}
