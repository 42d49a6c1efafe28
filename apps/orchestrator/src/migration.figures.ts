/** The migration's figures from what the engines report (pure). */
import type { MemoryMigrationReport, MemoryStatusReply, MigrationFigures } from '@wanmig/protocol';

/** From memory-precopy's report of a switchover that went through, with the disk finalized in its pause. */
export function switchoverFigures(report: MemoryMigrationReport, routeMovedAt?: number): MigrationFigures {
  const answers = Object.keys(report.answersAtPause);
  return {
    ramBytes: report.ramBytes,
    memoryRawBytes: report.rawBytesSent,
    memoryWireBytes: report.frameBytesSent,
    memoryRounds: report.rounds.length,
    stopReason: report.stopReason,
    downtimeMs: Math.round(report.pausedMs),
    ramCheckMs: report.ramCheckMs,
    ramVerified: report.ramVerified,
    answersMatch:
      answers.length > 0 && answers.every((q) => report.answersAtPause[q] === report.answersAtDestination[q]),
    serviceAddress: report.destination.serviceAddress,
    pausedAt: report.pausedAt,
    resumedAt: report.destination.resumedAt,
    ...(report.holdMs !== undefined ? { holdMs: Math.round(report.holdMs) } : {}),
    ...(routeMovedAt !== undefined ? { routeMovedAt } : {}),
    ...(report.diskFinalizeMs !== undefined ? { diskFinalizeMs: Math.round(report.diskFinalizeMs) } : {}),
    ...(report.disk
      ? {
          diskBytes: report.disk.sizeBytes,
          diskRawBytes: report.disk.rawBytesSent,
          diskWireBytes: report.disk.frameBytesSent,
          diskRounds: report.disk.rounds.length,
          diskVerified: report.disk.verified === true,
          diskVerifyMs: Math.round(report.disk.verifyMs),
        }
      : {}),
  };
}

/** Without memory-precopy's report (it restarted after the resume): where and since when the destination runs it. */
export function resumedFigures(
  status: Pick<MemoryStatusReply, 'serviceAddress' | 'resumedAt'>,
): MigrationFigures {
  return {
    ...(status.serviceAddress ? { serviceAddress: status.serviceAddress } : {}),
    ...(status.resumedAt !== undefined ? { resumedAt: status.resumedAt } : {}),
  };
}
