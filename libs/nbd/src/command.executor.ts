import { errnoFromError } from './errors.js';
import { WriteKind } from './export.backend.js';
import { type ExportEntry } from './export.registry.js';
import {
  AllocationFlag,
  BASE_ALLOCATION_CONTEXT_ID,
  CommandFlag,
  NBD_MAX_EXTENTS,
  NbdCommand,
  NbdErrno,
} from './nbd.constants.js';
import { type BlockExtent } from './reply.codec.js';
import { type ReplyWriter } from './reply.writer.js';
import { type NbdRequestHeader } from './request.codec.js';

/** A failed command, reported to the server's listeners. */
export interface CommandFailure {
  exportName: string;
  command: number;
  offset: number;
  length: number;
  errno: number;
  error: unknown;
}

/**
 * Runs one validated request against an export and sends its reply. Overlapping requests are
 * ordered through the export's RangeLock; WRITE / TRIM / WRITE_ZEROES fire `onWrite` after the
 * backend applied them and await `beforeWriteReply` before replying.
 */
export async function executeCommand(
  entry: ExportEntry,
  req: NbdRequestHeader,
  payload: Buffer | undefined,
  replies: ReplyWriter,
  onFailure: (failure: CommandFailure) => void,
): Promise<void> {
  const { cookie, offset, length } = req;
  const fua = (req.flags & CommandFlag.Fua) !== 0;
  const backend = entry.backend;
  try {
    switch (req.type) {
      case NbdCommand.Read: {
        const data = await locked(entry, req, false, () => backend.read(offset, length));
        replies.read(cookie, offset, data);
        return;
      }
      case NbdCommand.Write:
        await locked(entry, req, true, () => backend.write(offset, payload ?? Buffer.alloc(0), fua));
        await afterWrite(entry, offset, length, WriteKind.Write);
        break;
      case NbdCommand.Flush:
        await backend.flush();
        break;
      case NbdCommand.Trim:
        await locked(entry, req, true, () => backend.trim(offset, length, fua));
        await afterWrite(entry, offset, length, WriteKind.Trim);
        break;
      case NbdCommand.WriteZeroes:
        if ((req.flags & CommandFlag.FastZero) !== 0 && !(await alreadyZero(entry, offset, length))) {
          replies.error(cookie, NbdErrno.ENOTSUP, 'zeroing this range is not faster than writing it');
          return;
        }
        await locked(entry, req, true, () =>
          backend.writeZeroes(offset, length, (req.flags & CommandFlag.NoHole) !== 0, fua),
        );
        await afterWrite(entry, offset, length, WriteKind.WriteZeroes);
        break;
      case NbdCommand.BlockStatus: {
        const extents = await locked(entry, req, false, () => blockStatus(entry, offset, length));
        const reqOne = (req.flags & CommandFlag.ReqOne) !== 0;
        replies.blockStatus(cookie, BASE_ALLOCATION_CONTEXT_ID, sanitizeExtents(extents, length, reqOne));
        return;
      }
      case NbdCommand.Cache:
        break;
    }
    replies.ok(cookie);
  } catch (err) {
    const errno = errnoFromError(err);
    onFailure({ exportName: entry.name, command: req.type, offset, length, errno, error: err });
    replies.error(cookie, errno, err instanceof Error ? err.message : String(err));
  }
}

async function locked<T>(entry: ExportEntry, req: NbdRequestHeader, exclusive: boolean, op: () => Promise<T>) {
  const release = await entry.lock.acquire(req.offset, req.length, exclusive);
  try {
    return await op();
  } finally {
    release();
  }
}

async function afterWrite(entry: ExportEntry, offset: number, length: number, kind: WriteKind): Promise<void> {
  entry.config.onWrite?.(offset, length, kind);
  if (entry.config.beforeWriteReply) await entry.config.beforeWriteReply(offset, length, kind);
}

function blockStatus(entry: ExportEntry, offset: number, length: number): Promise<BlockExtent[]> {
  const backend = entry.backend;
  if (!backend.blockStatus) return Promise.resolve([{ length, flags: 0 }]);
  return backend.blockStatus(offset, length);
}

/** A fast zero succeeds only where the range already reads as zeroes. */
async function alreadyZero(entry: ExportEntry, offset: number, length: number): Promise<boolean> {
  if (length === 0) return true;
  if (!entry.backend.blockStatus) return false;
  const extents = await entry.backend.blockStatus(offset, length);
  let covered = 0;
  for (const e of extents) {
    if ((e.flags & AllocationFlag.Zero) === 0) return false;
    covered += e.length;
    if (covered >= length) return true;
  }
  return false;
}

/**
 * Make backend extents a valid reply: nonzero lengths, at least one descriptor, none past the
 * requested length, at most 2^20 (or exactly one with REQ_ONE).
 */
export function sanitizeExtents(extents: BlockExtent[], length: number, reqOne: boolean): BlockExtent[] {
  const out: BlockExtent[] = [];
  const max = reqOne ? 1 : NBD_MAX_EXTENTS;
  let covered = 0;
  for (const e of extents) {
    if (covered >= length) break;
    if (e.length <= 0) continue;
    const len = Math.min(e.length, length - covered);
    const last = out[out.length - 1];
    if (last && last.flags === e.flags) last.length += len;
    else if (out.length >= max) break;
    else out.push({ length: len, flags: e.flags });
    covered += len;
  }
  if (out.length === 0) out.push({ length: Math.max(length, 1), flags: 0 });
  return out;
}
