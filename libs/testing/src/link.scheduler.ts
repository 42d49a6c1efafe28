/** Settings of one direction of an emulated WAN link. */
export interface WanLinkSettings {
  /** One-way propagation delay in milliseconds. */
  delayMs: number;
  /** Link rate in bits per second; 0 or Infinity means unlimited. */
  bandwidthBps: number;
}

export const UNLIMITED_BANDWIDTH = 0;
/** Queue cap when the rate is unlimited (no bandwidth-delay product to size it by). */
export const UNLIMITED_QUEUE_BYTES = 8 * 1024 * 1024;
/** Smallest queue headroom: one socket read is up to 64 KiB, so anything less would stall the reader. */
export const MIN_QUEUE_MARGIN_BYTES = 64 * 1024;
/** Headroom above the bandwidth-delay product, in link time: covers timer and event-loop jitter. */
export const QUEUE_MARGIN_MS = 25;

/**
 * Timing model of one direction of a WAN link: a serialising link of fixed rate followed by a fixed propagation
 * delay. A chunk arriving at `now` starts transmitting when the link is free, finishes `bytes × 8 / rate` later,
 * and is delivered `delayMs` after that:
 *
 *     due = max(now, linkFreeAt) + bytes / rate + delay
 *
 * This is a token bucket with no burst allowance: the long-run rate can never exceed `bandwidthBps`, whatever
 * the timer precision, because departure times come from this schedule and not from when timers fire.
 * Due times never decrease, so bytes are delivered in order even when the delay is lowered at runtime.
 */
export class LinkScheduler {
  private linkFreeAt = Number.NEGATIVE_INFINITY;
  private lastDueAt = Number.NEGATIVE_INFINITY;
  private current: WanLinkSettings;

  constructor(settings: WanLinkSettings) {
    this.current = validate(settings);
  }

  get settings(): WanLinkSettings {
    return { ...this.current };
  }

  /** Changes the rate or delay for chunks scheduled from now on; chunks already scheduled keep their due time. */
  update(settings: Partial<WanLinkSettings>): void {
    this.current = validate({ ...this.current, ...settings });
  }

  /** Schedules a chunk of `bytes` arriving at `now` (ms) and returns its delivery time (ms). Zero bytes: a marker. */
  schedule(bytes: number, now: number): number {
    const start = Math.max(now, this.linkFreeAt);
    this.linkFreeAt = start + this.transmitMs(bytes);
    const due = Math.max(this.linkFreeAt + this.current.delayMs, this.lastDueAt);
    this.lastDueAt = due;
    return due;
  }

  /** Milliseconds the link needs to serialise `bytes`. */
  transmitMs(bytes: number): number {
    return isUnlimited(this.current.bandwidthBps) ? 0 : (bytes * 8 * 1000) / this.current.bandwidthBps;
  }

  /** Milliseconds of data waiting to go onto the link at `now`. */
  backlogMs(now: number): number {
    return Math.max(0, this.linkFreeAt - now);
  }

  /** Forgets everything in flight (after the link was cut). */
  reset(): void {
    this.linkFreeAt = Number.NEGATIVE_INFINITY;
    this.lastDueAt = Number.NEGATIVE_INFINITY;
  }
}

export interface QueueWatermarks {
  /** Stop reading from senders above this many queued bytes. */
  high: number;
  /** Resume reading at or below this many queued bytes. */
  low: number;
}

/**
 * Bounds for the bytes a direction may hold (in serialisation plus in propagation). At full rate about
 * rate × delay bytes are always in propagation; the margin on top is serialisation backlog. Senders are paused at
 * `high` and resumed at `low`, which still leaves half the margin of backlog so the link never idles while a paused
 * socket wakes up.
 */
export function queueWatermarks(settings: WanLinkSettings, marginBytes?: number): QueueWatermarks {
  if (isUnlimited(settings.bandwidthBps)) {
    return { high: UNLIMITED_QUEUE_BYTES, low: UNLIMITED_QUEUE_BYTES / 2 };
  }
  const bytesPerMs = settings.bandwidthBps / 8 / 1000;
  const inFlight = bytesPerMs * settings.delayMs;
  const margin = marginBytes ?? Math.max(MIN_QUEUE_MARGIN_BYTES, bytesPerMs * QUEUE_MARGIN_MS);
  return { high: Math.ceil(inFlight + margin), low: Math.ceil(inFlight + margin / 2) };
}

export function isUnlimited(bandwidthBps: number): boolean {
  return bandwidthBps <= 0 || !Number.isFinite(bandwidthBps);
}

function validate(settings: WanLinkSettings): WanLinkSettings {
  if (!(settings.delayMs >= 0) || !Number.isFinite(settings.delayMs)) {
    throw new RangeError(`delayMs must be a finite number >= 0, got ${settings.delayMs}`);
  }
  if (!(settings.bandwidthBps >= 0)) {
    throw new RangeError(`bandwidthBps must be >= 0 (0 = unlimited), got ${settings.bandwidthBps}`);
  }
  return { delayMs: settings.delayMs, bandwidthBps: settings.bandwidthBps };
}
