import { formatBytes } from '@wanmig/service';

/**
 * One progress line per phase: on a terminal it redraws in place (bar, bytes, rate, ETA); piped,
 * it prints a plain line every few seconds so logs stay readable.
 */
export class ProgressDisplay {
  private lastPlain = 0;
  private lastPhase = '';
  private readonly tty: boolean;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(stream.isTTY);
  }

  update(phase: string, done: number, total: number, elapsedSeconds: number, note = ''): void {
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const rate = elapsedSeconds > 0 ? done / elapsedSeconds : 0;
    const eta = rate > 0 && total > done ? (total - done) / rate : 0;
    const text = `${phase.padEnd(12)} ${formatBytes(done).padStart(10)} / ${formatBytes(total).padEnd(10)} ${formatBytes(rate)}/s${eta > 0 ? ` ETA ${eta.toFixed(0)} s` : ''}${note ? `  ${note}` : ''}`;
    if (this.tty) {
      const width = 24;
      const filled = Math.round(fraction * width);
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
      if (phase !== this.lastPhase && this.lastPhase) this.stream.write('\n');
      this.stream.write(`\r${bar} ${text}\x1b[K`);
    } else {
      const now = performance.now();
      if (phase === this.lastPhase && now - this.lastPlain < 3000) return;
      this.lastPlain = now;
      this.stream.write(`${text}\n`);
    }
    this.lastPhase = phase;
  }

  done(): void {
    if (this.tty && this.lastPhase) this.stream.write('\n');
    this.lastPhase = '';
  }
}
