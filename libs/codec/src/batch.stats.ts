import { type EncodingName } from './record.layout.js';

export interface EncodingStats {
  /** Pages (or partial pages) given this encoding. */
  pages: number;
  /** Bytes of the target they cover. */
  rawBytes: number;
  /** Record bytes they took, headers included. */
  encodedBytes: number;
}

export interface BatchStats {
  records: number;
  rawBytes: number;
  encodedBytes: number;
  byEncoding: Record<EncodingName, EncodingStats>;
}

export function emptyStats(): BatchStats {
  const e = (): EncodingStats => ({ pages: 0, rawBytes: 0, encodedBytes: 0 });
  return { records: 0, rawBytes: 0, encodedBytes: 0, byEncoding: { raw: e(), zero: e(), ref: e(), xbzrle: e() } };
}

/** Adds `from` into `into` (e.g. to total a whole transfer). */
export function addStats(into: BatchStats, from: BatchStats): BatchStats {
  into.records += from.records;
  into.rawBytes += from.rawBytes;
  into.encodedBytes += from.encodedBytes;
  for (const name of Object.keys(into.byEncoding) as EncodingName[]) {
    into.byEncoding[name].pages += from.byEncoding[name].pages;
    into.byEncoding[name].rawBytes += from.byEncoding[name].rawBytes;
    into.byEncoding[name].encodedBytes += from.byEncoding[name].encodedBytes;
  }
  return into;
}

export function countPage(stats: BatchStats, name: EncodingName, rawBytes: number, encodedBytes: number): void {
  const e = stats.byEncoding[name];
  e.pages++;
  e.rawBytes += rawBytes;
  e.encodedBytes += encodedBytes;
  stats.rawBytes += rawBytes;
  stats.encodedBytes += encodedBytes;
}
