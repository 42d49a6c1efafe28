import { randomUUID } from 'node:crypto';
import { Logger } from '@nestjs/common';
import {
  CLOUDEVENTS_SPECVERSION,
  NET_MOVED_EVENT_TYPE,
  NetMovedConfirm,
  NetMovedRequest,
  NetRedirectSubjects,
  validateDto,
  ValidationError,
  type NetMovedEvent,
  type NetMovedReply,
} from '@wanmig/protocol';
import { EventPublishError, MoveNotConfirmedError, NetRedirectConflictError } from '../errors.js';
import type { ControllerHook, HookOutcome } from './controller.hook.js';
import type { MoveEventSink } from './move-event.sink.js';

/** Migrations whose move is remembered for repeats and conflicts. */
const REMEMBERED_MIGRATIONS = 4096;

interface MoveRecord {
  /** What the move is (VM, addresses, sites): a repeat must say the same. */
  key: string;
  event: NetMovedEvent;
  subject: string;
  published: boolean;
  /** The last reply given (absent while no attempt succeeded). */
  reply?: NetMovedReply;
  /** Attempts of this migration run one after the other. */
  queue: Promise<unknown>;
}

export function netMovedSource(site: string): string {
  return `wanmig/net-redirect/${site}`;
}

/**
 * `net.moved`: stores the move as a CloudEvent (`io.wanmig.net.moved`) beside the migration's events, then asks the
 * external controllers on the hook. A repeat of a move keeps its event (same id, stored once) and answers as before,
 * unless it asks for a confirmation the last answer lacks: then the hook is asked again. Another move under the same
 * migration id is CONFLICT.
 */
export class NetMovedService {
  private readonly logger = new Logger('net-redirect');
  private readonly moves = new Map<string, MoveRecord>();

  constructor(
    private readonly site: string,
    private readonly sink: MoveEventSink,
    private readonly hook: ControllerHook,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async moved(body: unknown): Promise<NetMovedReply> {
    const request = validateDto(NetMovedRequest, body);
    if (request.fromSite === request.toSite) {
      throw new ValidationError([`toSite: the VM is already at ${request.fromSite}`], NetMovedRequest.name);
    }
    const addresses = [...new Set(request.addresses)];
    const key = JSON.stringify([request.vmId, [...addresses].sort(), request.fromSite, request.toSite]);
    const record = this.record(request.migrationId, key, () => ({
      specversion: CLOUDEVENTS_SPECVERSION,
      id: randomUUID(),
      source: netMovedSource(this.site),
      type: NET_MOVED_EVENT_TYPE,
      subject: request.migrationId,
      time: this.now().toISOString(),
      datacontenttype: 'application/json',
      data: {
        migrationId: request.migrationId,
        vmId: request.vmId,
        addresses,
        fromSite: request.fromSite,
        toSite: request.toSite,
      },
    }));
    const attempt = record.queue.catch(() => undefined).then(() => this.attempt(record, request));
    record.queue = attempt;
    return await attempt;
  }

  private record(migrationId: string, key: string, event: () => NetMovedEvent): MoveRecord {
    const known = this.moves.get(migrationId);
    if (known) {
      if (known.key !== key) {
        const d = known.event.data;
        throw new NetRedirectConflictError(
          migrationId,
          `its move is already ${d.vmId} (${d.addresses.join(', ')}) from ${d.fromSite} to ${d.toSite}`,
        );
      }
      return known;
    }
    const record: MoveRecord = {
      key,
      event: event(),
      subject: NetRedirectSubjects.movedEvent(this.site, migrationId),
      published: false,
      queue: Promise.resolve(),
    };
    this.moves.set(migrationId, record);
    if (this.moves.size > REMEMBERED_MIGRATIONS) this.moves.delete(this.moves.keys().next().value as string);
    return record;
  }

  private async attempt(record: MoveRecord, request: NetMovedRequest): Promise<NetMovedReply> {
    const confirm = request.confirm ?? new NetMovedConfirm();
    const { migrationId } = request;
    if (record.reply && (record.reply.confirmed || !confirm.required)) return record.reply;
    if (!record.published) {
      try {
        const { seq, duplicate } = await this.sink.publish(record.subject, record.event);
        this.logger.log(
          `move of migration ${migrationId} published on ${record.subject} (seq ${seq}${duplicate ? ', again' : ''})`,
        );
      } catch (err) {
        throw new EventPublishError(migrationId, record.subject, err);
      }
      record.published = true;
    }
    const hookSubject = NetRedirectSubjects.movedHook();
    const outcome = await this.hook.ask(hookSubject, JSON.stringify(record.event), {
      timeoutMs: confirm.timeoutMs,
      answers: confirm.controllers,
    });
    const verdict = judge(outcome, confirm);
    const reply: NetMovedReply = {
      migrationId,
      eventId: record.event.id,
      eventSubject: record.subject,
      confirmations: outcome.answers,
      confirmed: verdict.reason === undefined,
      ...(verdict.reason === undefined ? {} : { reason: verdict.reason }),
    };
    if (verdict.reason !== undefined && confirm.required) {
      this.logger.warn(`move of migration ${migrationId} not confirmed: ${verdict.reason}`);
      throw new MoveNotConfirmedError(migrationId, hookSubject, verdict.reason, verdict.refused);
    }
    record.reply = reply;
    return reply;
  }
}

/** Confirmed: as many `applied` answers as asked for and no refusal. Otherwise why not, and whether one refused. */
function judge(outcome: HookOutcome, confirm: NetMovedConfirm): { reason?: string; refused: boolean } {
  const refusals = outcome.answers.filter((a) => !a.applied);
  if (refusals.length > 0) {
    const why = refusals.map((a) => `${a.controller ?? 'a controller'} refused${a.reason ? `: ${a.reason}` : ''}`);
    return { reason: why.join('; '), refused: true };
  }
  if (outcome.noResponders) return { reason: 'no controller listens on the hook', refused: false };
  const applied = outcome.answers.length;
  if (applied < confirm.controllers) {
    return {
      reason: `${applied} of ${confirm.controllers} controller${confirm.controllers > 1 ? 's' : ''} answered within ${confirm.timeoutMs} ms`,
      refused: false,
    };
  }
  return { refused: false };
}
