import { createRng, type Rng } from './seeded.rng.js';

/**
 * Text-like content: words from a built-in vocabulary, Zipf-skewed, with numbers, punctuation and
 * line breaks, like logs, configuration and documents in a guest's page cache. Tuned so zstd level 3
 * compresses a batch of such pages about 3-4x, as it does real text.
 */
const COMMON = (
  'the of and to in is for that on with as are this be by from at or it an not was which have can ' +
  'but all will one has their more if other also its been new when were into time only some would ' +
  'data file system user server request response error warning info debug service process thread ' +
  'memory disk block page cache network socket connection client session token value key table ' +
  'index query update insert delete select commit rollback transaction lock wait timeout retry ' +
  'start stop status config option default path version build release module package import export ' +
  'function return class object string number array buffer stream event handler queue worker job ' +
  'migration source destination site link bandwidth latency round dirty sync copy write read send'
).split(' ');

const SYLLABLES = 'ka lo mi ne ru sa te vo zi pa qu re tho an el is or un ex con pro per ing ment tion al'.split(' ');

/** 1 024 words: the common ones first (most frequent under the skew), then made-up words from syllables. */
const VOCABULARY: readonly string[] = (() => {
  const words = [...COMMON];
  let i = 0;
  while (words.length < 1024) {
    const n = 2 + (i % 3);
    let w = '';
    for (let k = 0, x = i * 7 + 3; k < n; k++, x = Math.floor(x / SYLLABLES.length) + k * 5 + i) {
      w += SYLLABLES[x % SYLLABLES.length];
    }
    if (!words.includes(w)) words.push(w);
    i++;
  }
  return words;
})();

/**
 * Recurring phrases (2-6 words): real text repeats word sequences, not just words, and that is
 * what LZ matching in zstd feeds on. Built once from a fixed seed.
 */
const PHRASES: readonly string[] = (() => {
  const rng = createRng(0x7e47);
  return Array.from({ length: 256 }, () =>
    Array.from({ length: 2 + rng.int(5) }, () => VOCABULARY[Math.floor(VOCABULARY.length * rng.float() ** 2)]).join(
      ' ',
    ),
  );
})();

const PUNCTUATION = [',', '.', ':', ';', ' -', '=', '/'];
/** Tuning knobs (measured: zstd level 3 on 256 KiB batches of these pages gives about 3.5x). */
const SKEW = 3;
const PHRASE = 0.2;
const SKEW_NUMBER = PHRASE + 0.03;
const SKEW_HEX = SKEW_NUMBER + 0.005;

/** Fills `out` with text-like bytes. */
export function fillText(rng: Rng, out: Uint8Array): void {
  let at = 0;
  let lineWords = 0;
  while (at < out.length) {
    const r = rng.float();
    let token: string;
    if (r < PHRASE) token = PHRASES[Math.floor(PHRASES.length * rng.float() ** 2)];
    else if (r < SKEW_NUMBER) token = String(rng.int(1000));
    else if (r < SKEW_HEX) token = `0x${(rng.u32() & 0xffff).toString(16)}`;
    else token = VOCABULARY[Math.floor(VOCABULARY.length * rng.float() ** SKEW)];
    if (lineWords === 0 && rng.float() < 0.5) token = token[0].toUpperCase() + token.slice(1);
    if (rng.float() < 0.1) token += PUNCTUATION[rng.int(PUNCTUATION.length)];
    lineWords++;
    const end = lineWords > 6 + rng.int(10) ? '\n' : ' ';
    if (end === '\n') lineWords = 0;
    at += writeAscii(out, at, token + end);
  }
}

function writeAscii(out: Uint8Array, at: number, s: string): number {
  const n = Math.min(s.length, out.length - at);
  for (let i = 0; i < n; i++) out[at + i] = s.charCodeAt(i);
  return n;
}
