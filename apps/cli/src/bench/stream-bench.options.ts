import type { DatasetMix } from '@wanmig/codec';
import { UsageError } from '../errors.js';
import { parseBitRate, parseDuration, parseSize } from '@wanmig/service';

export const MIXES: Record<string, DatasetMix> = {
  random: { random: 1 },
  mixed: { zero: 0.4, duplicate: 0.2, text: 0.2, random: 0.2 },
  text: { text: 1 },
  zero: { zero: 1 },
};

export interface StreamBenchOptions {
  /** One-way delay of the emulated WAN; ignored with `loopback`. */
  delayMs: number;
  /** Link rate in bits per second; ignored with `loopback`. */
  bandwidthBps: number;
  size: number;
  mix: string;
  seed: number;
  /** Cut the link at this fraction of the payload (0 = never) for `cutMs`. */
  cutAt: number;
  cutMs: number;
  /** One nats-server and no emulator: the ceiling of stream+codec on this machine. */
  loopback: boolean;
  codec: boolean;
  windowBytes?: number;
  json: boolean;
}

export const STREAM_BENCH_DEFAULTS: StreamBenchOptions = {
  delayMs: 50,
  bandwidthBps: 200e6,
  size: 512 * 2 ** 20,
  mix: 'random',
  seed: 1,
  cutAt: 0,
  cutMs: 10_000,
  loopback: false,
  codec: true,
  json: false,
};

export function streamBenchOptions(values: Record<string, string | boolean | undefined>): StreamBenchOptions {
  const o = { ...STREAM_BENCH_DEFAULTS };
  const str = (key: string) => (typeof values[key] === 'string' ? values[key] : undefined);
  if (str('delay')) o.delayMs = parseDuration(str('delay')!, '--delay');
  if (str('bandwidth')) o.bandwidthBps = parseBitRate(str('bandwidth')!, '--bandwidth');
  if (str('size')) o.size = parseSize(str('size')!, '--size');
  if (str('mix')) o.mix = str('mix')!;
  if (!(o.mix in MIXES)) throw new UsageError(`--mix must be one of ${Object.keys(MIXES).join(', ')}`);
  if (str('seed')) o.seed = Number(str('seed'));
  if (str('cut-at')) o.cutAt = Number(str('cut-at'));
  if (!(o.cutAt >= 0 && o.cutAt < 1)) throw new UsageError('--cut-at is a fraction of the payload in [0, 1)');
  if (str('cut-for')) o.cutMs = parseDuration(str('cut-for')!, '--cut-for');
  if (str('window')) o.windowBytes = parseSize(str('window')!, '--window');
  o.loopback = values.loopback === true;
  o.codec = values['no-codec'] !== true;
  o.json = values.json === true;
  if (o.size <= 0) throw new UsageError('--size must be positive');
  return o;
}
