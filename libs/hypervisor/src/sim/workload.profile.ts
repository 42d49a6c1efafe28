import { SimWorkload } from './sim.constants.js';

/** How a page write changes the page, as weights (normalised). */
export interface PageWriteMix {
  /** A few bytes of the current content change (fields, counters): XBZRLE territory. */
  mutate: number;
  text: number;
  random: number;
  /** A copy of another page of RAM. */
  duplicate: number;
  zero: number;
}

/** The seeded workload a sim guest runs; all rates at 0 % throttle. */
export interface WorkloadProfile {
  /** RAM bytes written per second (whole pages). */
  ramBytesPerSecond: number;
  /** Fraction of the workload's pages it writes (its write set); 1 = anywhere in RAM. */
  writeSetFraction: number;
  /** Pages per write: 1 for scattered updates, more for buffers written in one go. */
  maxRunPages: number;
  pageMix: PageWriteMix;
  /** Fraction of bytes a `mutate` write changes. */
  mutateFraction: number;
  kvUpdatesPerSecond: number;
  diskBytesPerSecond: number;
}

const MB = 1e6;
const NO_WRITES: PageWriteMix = { mutate: 0, text: 0, random: 0, duplicate: 0, zero: 0 };

export const WORKLOAD_PROFILES: Readonly<Record<SimWorkload, Readonly<WorkloadProfile>>> = {
  /** The counter only. */
  [SimWorkload.Idle]: {
    ramBytesPerSecond: 0,
    writeSetFraction: 0,
    maxRunPages: 1,
    pageMix: NO_WRITES,
    mutateFraction: 0,
    kvUpdatesPerSecond: 0,
    diskBytesPerSecond: 0,
  },
  /** Read-mostly: a hot 1 % of pages (sessions, counters) updated in place, a little at a time. */
  [SimWorkload.Web]: {
    ramBytesPerSecond: 4 * MB,
    writeSetFraction: 0.01,
    maxRunPages: 1,
    pageMix: { ...NO_WRITES, mutate: 1 },
    mutateFraction: 0.05,
    kvUpdatesPerSecond: 50,
    diskBytesPerSecond: 0,
  },
  /** A database: a 10 % buffer pool rewritten at 8 MB/s, plus block writes to its disk. */
  [SimWorkload.Db]: {
    ramBytesPerSecond: 8 * MB,
    writeSetFraction: 0.1,
    maxRunPages: 2,
    pageMix: { ...NO_WRITES, mutate: 0.6, text: 0.25, duplicate: 0.15 },
    mutateFraction: 0.1,
    kvUpdatesPerSecond: 200,
    diskBytesPerSecond: 2 * MB,
  },
  /** Fresh content all over RAM faster than a 200 Mbit/s link drains it (25 MB/s), plus disk writes. */
  [SimWorkload.WriteHeavy]: {
    ramBytesPerSecond: 48 * MB,
    writeSetFraction: 1,
    maxRunPages: 16,
    pageMix: { ...NO_WRITES, random: 0.8, text: 0.1, zero: 0.1 },
    mutateFraction: 0,
    kvUpdatesPerSecond: 100,
    diskBytesPerSecond: 4 * MB,
  },
};
