import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';

/** What a receiver has made durable: every frame below `nextSeq`, up to source position `cursor`. */
export interface Watermark {
  nextSeq: number;
  cursor: number;
}

/** A live receiver's answer to a probe: its watermark plus the next frame it will accept. */
export interface ReceiverPosition extends Watermark {
  received: number;
}

export interface WatermarkStore {
  load(): Promise<Watermark | null>;
  save(mark: Watermark): Promise<void>;
}

/** Keeps the watermark in memory only: for tests and for streams that need no resume. */
export class MemoryWatermarkStore implements WatermarkStore {
  private mark: Watermark | null = null;
  load(): Promise<Watermark | null> {
    return Promise.resolve(this.mark && { ...this.mark });
  }
  save(mark: Watermark): Promise<void> {
    this.mark = { ...mark };
    return Promise.resolve();
  }
}

/**
 * Persists the watermark as a small JSON file, replaced atomically (write, fsync, rename), so a
 * receiver killed at any instant restarts from a watermark it had really made durable.
 */
export class FileWatermarkStore implements WatermarkStore {
  constructor(readonly path: string) {}

  async load(): Promise<Watermark | null> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    const parsed = JSON.parse(text) as Partial<Watermark>;
    if (!Number.isSafeInteger(parsed.nextSeq) || !Number.isSafeInteger(parsed.cursor)) {
      throw new Error(`watermark file ${this.path} is malformed`);
    }
    return { nextSeq: parsed.nextSeq!, cursor: parsed.cursor! };
  }

  async save(mark: Watermark): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.tmp`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(mark));
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.path);
  }
}
