import { ErrorCode, WanmigError, type MigrationPhase } from '@wanmig/protocol';
import { ServiceAwayError } from './errors.js';

/** What a call to a service the migration needs came to: its answer, or that it is away for now. */
export type Answer<T> = { ok: true; value: T } | { ok: false };

export interface ServiceAbsenceOptions {
  migrationId: string;
  site: string;
  deadlineMs: number;
  log: (line: string) => void;
  /** Waits between two calls to a service that is away (the runner's poll pause, cut short by an abort). */
  pause: () => Promise<void>;
  now?: () => number;
}

/**
 * The local services a migration needs may be away for a while: killed and restarted by their supervisor, they come
 * back within seconds and go on (disk-transfer from its persisted state, memory-precopy from round 1). This keeps, per
 * service, since when it has not answered: UNAVAILABLE (no responder, a timeout) is tolerated until the migration's
 * service deadline, then it is a ServiceAwayError naming the service and how long it was away.
 */
export class ServiceAbsence {
  private readonly since = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly o: ServiceAbsenceOptions) {
    this.now = o.now ?? Date.now;
  }

  /**
   * Calls the service once: its answer, `{ ok: false }` while it is away within the deadline, a ServiceAwayError
   * past it. Any other error is the caller's.
   */
  async call<T>(service: string, phase: MigrationPhase, request: () => Promise<T>): Promise<Answer<T>> {
    // Away since the question that went unanswered was asked (a timeout answers late).
    const asked = this.now();
    try {
      const value = await request();
      const since = this.since.get(service);
      if (since !== undefined) {
        this.since.delete(service);
        const away = ((this.now() - since) / 1000).toFixed(1);
        this.o.log(`migration ${this.o.migrationId}: ${service} at ${this.o.site} answers again after ${away} s`);
      }
      return { ok: true, value };
    } catch (err) {
      if (!(err instanceof WanmigError && err.code === ErrorCode.Unavailable)) throw err;
      const at = this.now();
      const since = this.since.get(service);
      if (since === undefined) {
        this.since.set(service, asked);
        this.o.log(
          `migration ${this.o.migrationId}: ${service} at ${this.o.site} does not answer; ` +
            `waiting up to ${this.o.deadlineMs / 1000} s for it`,
        );
      } else if (at - since > this.o.deadlineMs) {
        throw new ServiceAwayError({
          migrationId: this.o.migrationId,
          phase,
          service,
          site: this.o.site,
          awayMs: at - since,
          deadlineMs: this.o.deadlineMs,
          cause: err,
        });
      }
      return { ok: false };
    }
  }

  /** Calls until the service answers (a start request to a service that is restarting), within the deadline. */
  async untilAnswered<T>(service: string, phase: MigrationPhase, request: () => Promise<T>): Promise<T> {
    for (;;) {
      const answer = await this.call(service, phase, request);
      if (answer.ok) return answer.value;
      await this.o.pause();
    }
  }

  /**
   * An engine's progress: undefined while the engine is away (within the deadline), or when it answered NOT_FOUND
   * (restarted without the migration) and `restart` asked it again. Without `restart`, NOT_FOUND is thrown.
   */
  async progress<T>(
    service: string,
    phase: MigrationPhase,
    poll: () => Promise<T>,
    restart?: () => Promise<void>,
  ): Promise<T | undefined> {
    const answer = await this.call(service, phase, () =>
      poll().catch((err: unknown) => {
        if (restart && err instanceof WanmigError && err.code === ErrorCode.NotFound) return undefined;
        throw err;
      }),
    );
    if (!answer.ok) return undefined;
    if (answer.value !== undefined) return answer.value;
    this.o.log(`migration ${this.o.migrationId}: ${service} at ${this.o.site} lost it (restarted): asking it again`);
    await restart!();
    return undefined;
  }
}
