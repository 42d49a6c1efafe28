/**
 * The receiving side of the stream benchmark, in its own process as the destination site's
 * service would be: it applies frames to a sparse file and reports the file's sha256 at the end.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { connect } from '@nats-io/transport-node';
import { FileChunkTarget, FileWatermarkStore, RecordSink, StreamReceiver } from '@wanmig/stream';
import { ownCpuSeconds } from './process-cpu.js';

export interface ReceiverChildArgs {
  natsUrl: string;
  migrationId: string;
  streamId: number;
  path: string;
  size: number;
}

export type ReceiverChildMessage =
  | { type: 'ready' }
  | {
      type: 'done';
      sha256: string;
      cpuSeconds: number;
      rejected: Partial<Record<string, number>>;
      duplicates: number;
      naks: number;
    }
  | { type: 'error'; message: string };

function report(msg: ReceiverChildMessage): void {
  process.send?.(msg);
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as ReceiverChildArgs;
  const nc = await connect({ servers: args.natsUrl, maxReconnectAttempts: -1 });
  const target = new FileChunkTarget(args.path, args.size, { create: true });
  const receiver = new StreamReceiver({
    nc,
    migrationId: args.migrationId,
    streamId: args.streamId,
    sink: new RecordSink(target),
    store: new FileWatermarkStore(`${args.path}.watermark`),
  });
  await receiver.start();
  report({ type: 'ready' });
  await receiver.finished();
  await receiver.stop();
  target.close();
  const cpuSeconds = ownCpuSeconds();
  const sha256 = await sha256File(args.path);
  const { rejected, duplicates, naks } = receiver.stats;
  report({ type: 'done', sha256, cpuSeconds, rejected, duplicates, naks });
  await nc.close();
}

main().catch((err: unknown) => {
  report({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
});
