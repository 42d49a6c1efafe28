/** Typed errors of the test harness. Each sets `name`, accepts `{ cause }` and carries what a caller needs. */

export interface ErrorOptionsWithCause {
  cause?: unknown;
}

/** The `nats-server` binary is not installed (or the configured path does not exist). */
export class NatsServerNotFoundError extends Error {
  override readonly name = 'NatsServerNotFoundError';

  constructor(
    readonly binary: string,
    options?: ErrorOptionsWithCause,
  ) {
    super(
      `nats-server binary not found: ${binary}. Run \`bash deploy/bootstrap.sh\` ` +
        '(or `apt-get install nats-server`), or set NATS_SERVER_BIN to its path.',
      options,
    );
  }
}

/** A nats-server process did not become ready: it exited, or the readiness probe timed out. */
export class NatsServerStartError extends Error {
  override readonly name = 'NatsServerStartError';

  constructor(
    readonly serverName: string,
    readonly reason: string,
    readonly logTail: string,
    options?: ErrorOptionsWithCause,
  ) {
    super(
      `nats-server ${serverName} failed to start: ${reason}${logTail ? `\n--- log tail ---\n${logTail}` : ''}`,
      options,
    );
  }
}

/** A condition polled by the harness (readiness, leafnode link, remote interest) did not hold in time. */
export class WaitTimeoutError extends Error {
  override readonly name = 'WaitTimeoutError';

  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    options?: ErrorOptionsWithCause,
  ) {
    super(`timed out after ${timeoutMs} ms waiting for ${what}`, options);
  }
}

/** The WAN emulator could not listen, or was used after `close()`. */
export class WanEmulatorError extends Error {
  override readonly name = 'WanEmulatorError';

  constructor(message: string, options?: ErrorOptionsWithCause) {
    super(message, options);
  }
}

/** The two-site topology failed to come up; whatever had started was torn down before this was thrown. */
export class TopologyStartError extends Error {
  override readonly name = 'TopologyStartError';

  constructor(
    readonly stage: string,
    options?: ErrorOptionsWithCause,
  ) {
    super(`two-site topology failed while ${stage}`, options);
  }
}
