/** Typed errors of the network test bed. Each sets `name`, accepts `{ cause }` and carries what a caller needs. */
import type { ErrorOptionsWithCause } from '../errors.js';

/** An `ip` command (or a program started with `ip netns exec`) failed or timed out. */
export class NetCommandError extends Error {
  override readonly name = 'NetCommandError';

  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | string | null,
    readonly stderr: string,
    options?: ErrorOptionsWithCause,
  ) {
    super(`${argv.join(' ')} failed (${exitCode ?? 'no exit code'})${stderr ? `: ${stderr.trim()}` : ''}`, options);
  }
}

/** The bed could not be set up, was given input outside its address plan, or was used after destroy(). */
export class NetBedError extends Error {
  override readonly name = 'NetBedError';

  constructor(
    message: string,
    readonly prefix?: string,
    options?: ErrorOptionsWithCause,
  ) {
    super(prefix ? `net bed ${prefix}: ${message}` : message, options);
  }
}
