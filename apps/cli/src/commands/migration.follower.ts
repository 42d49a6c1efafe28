import {
  isTerminalPhase,
  MigrationEventSubjects,
  MigrationVerb,
  type CloudEvent,
  type MigrationView,
  type PhaseChangedData,
  type ProgressData,
} from '@wanmig/protocol';
import { formatBytes } from '@wanmig/service';
import type { OrchestratorClient } from '../api/orchestrator.client.js';
import type { ProgressDisplay } from '../progress.display.js';

export interface FollowOptions {
  display?: ProgressDisplay;
  /** One line per phase change (stderr by default). */
  log?: (line: string) => void;
  onEvent?: (event: CloudEvent) => void;
  timeoutMs?: number;
}

const POLL_MS = 500;

/**
 * Watches a migration until it ends: progress bars from its `progress` events, a line per phase, and the record
 * polled as well, so an event missed (or a follower started late) never leaves it waiting.
 */
export async function followMigration(
  client: OrchestratorClient,
  site: string,
  migrationId: string,
  options: FollowOptions = {},
): Promise<MigrationView> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const sub = client.nc.subscribe(MigrationEventSubjects.migration(site, migrationId), {
    callback: (err, msg) => {
      if (err) return;
      let event: CloudEvent;
      try {
        event = msg.json<CloudEvent>();
      } catch {
        return;
      }
      options.onEvent?.(event);
      if (event.type.endsWith('.phase-changed')) {
        const data = event.data as PhaseChangedData;
        options.display?.done();
        log(`${new Date(event.time).toISOString().slice(11, 23)}  ${data.to}${data.note ? `  (${data.note})` : ''}`);
      } else if (event.type.endsWith('.progress')) {
        showProgress(options.display, event.data as ProgressData);
      }
    },
  });
  const deadline = Date.now() + (options.timeoutMs ?? 3_600_000);
  try {
    for (;;) {
      const record = await client.call<MigrationView>(site, MigrationVerb.Get, { migrationId });
      if (isTerminalPhase(record.phase)) return record;
      if (Date.now() > deadline) throw new Error(`migration ${migrationId} still ${record.phase} after the time limit`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    sub.unsubscribe();
    options.display?.done();
  }
}

function showProgress(display: ProgressDisplay | undefined, data: ProgressData): void {
  if (!display) return;
  const { disk, memory } = data;
  if (memory && (data.phase === 'MEM_PRECOPY' || data.phase === 'STOP_AND_COPY')) {
    display.update(
      'memory',
      memory.rawBytesSent,
      Math.max(memory.ramBytes, memory.rawBytesSent),
      memory.elapsedSeconds,
      `round ${memory.round}, dirty ${formatBytes(memory.dirtyBytes)}` +
        (memory.throttlePercent ? `, throttle ${memory.throttlePercent} %` : ''),
    );
  } else if (disk && data.phase === 'DISK_BULK') {
    display.update('disk bulk', disk.bulkBytes, disk.sizeBytes, disk.elapsedSeconds);
  } else if (disk) {
    display.update(
      'disk catch-up',
      disk.rawBytesSent,
      Math.max(disk.rawBytesSent, disk.rawBytesSent + disk.dirtyBytes),
      disk.elapsedSeconds,
      `round ${disk.round}, dirty ${formatBytes(disk.dirtyBytes)}`,
    );
  }
}

/** The phase timeline of a record: each phase with when it began and ended (the next one's start). */
export function phaseTimeline(record: MigrationView): Array<{ name: string; start: string; end: string }> {
  return record.history.map((h, i) => ({
    name: h.phase,
    start: h.at,
    end: record.history[i + 1]?.at ?? h.at,
  }));
}
