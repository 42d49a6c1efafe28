import type { NatsConnection } from '@nats-io/nats-core';
import { BlockMap } from '@wanmig/blockmap';
import {
  callControl,
  controlSubject,
  DiskVerb,
  ErrorCode,
  ServiceName,
  WanmigError,
  toWireError,
  type DiskPresentReply,
} from '@wanmig/protocol';

export interface ResumePlanOptions {
  nc: NatsConnection;
  migrationId: string;
  destSite: string;
  /** The disk's dirty map (its geometry; its bits are writes since this process started). */
  dirty: BlockMap;
  /** The activity log's blocks: written since they were last sent and acknowledged, as far as the log knows. */
  unsure: BlockMap;
  /** Calls the destination until it answers (it may be restarting too). */
  untilAnswered: <T>(request: () => Promise<T>) => Promise<T>;
  log?: (line: string) => void;
}

export interface ResumePlan {
  /** What the resumed copy sends before catching up as usual. */
  blocks: BlockMap;
  /** Blocks the destination holds durably, when it could say. */
  presentBlocks?: number;
}

/**
 * What a disk migration resumed after disk-transfer's crash must send, never too little: every block the destination
 * does not hold durably (its present map: the bulk pass's progress, frames lost in flight) and every block the
 * activity log marks as written since it was last acknowledged. A destination that cannot say what it holds is taken
 * to hold nothing: everything goes again.
 */
export async function resumePlan(o: ResumePlanOptions): Promise<ResumePlan> {
  const subject = controlSubject(o.destSite, ServiceName.DeltaApply, DiskVerb.Present);
  let present: BlockMap | undefined;
  try {
    const reply = await o.untilAnswered(() =>
      callControl<DiskPresentReply>(o.nc, subject, { migrationId: o.migrationId }),
    );
    present = BlockMap.deserialize(Buffer.from(reply.map, 'base64'), o.dirty.geometry);
  } catch (err) {
    if (err instanceof WanmigError && err.code === ErrorCode.Unavailable) throw err;
    o.log?.(`migration ${o.migrationId}: the destination's present map is unusable (${toWireError(err).message})`);
  }
  const blocks = present ? present.complement() : BlockMap.full(o.dirty.geometry);
  blocks.unionInPlace(o.unsure);
  return { blocks, ...(present ? { presentBlocks: present.count } : {}) };
}
