/** Every NATS subject wanmig uses is built here, so the naming lives in one place. */
export const SUBJECT_ROOT = 'wanmig.v1';

const token = /^[A-Za-z0-9_-]+$/;
function checkToken(value: string, what: string): string {
  if (!token.test(value)) throw new TypeError(`${what} must be a NATS-safe token, got ${JSON.stringify(value)}`);
  return value;
}

export const Subjects = {
  /** Frames of one stream, sender -> receiver. */
  data: (migrationId: string, streamId: number) =>
    `${SUBJECT_ROOT}.data.${checkToken(migrationId, 'migration id')}.${streamId}`,
  /** Cumulative acks and re-requests, receiver -> sender. */
  ack: (migrationId: string, streamId: number) =>
    `${SUBJECT_ROOT}.ack.${checkToken(migrationId, 'migration id')}.${streamId}`,
  /** Request/reply: the receiver's persisted watermark, used to resume. */
  streamStatus: (migrationId: string, streamId: number) =>
    `${SUBJECT_ROOT}.stream.${checkToken(migrationId, 'migration id')}.${streamId}.status`,
  /** Progress and outcome of one disk transfer, JSON, published by the source side. */
  diskEvents: (migrationId: string) => `${SUBJECT_ROOT}.events.disk.${checkToken(migrationId, 'migration id')}`,
  /** Progress and outcome of one memory pre-copy, JSON, published by the source side. */
  memoryEvents: (migrationId: string) => `${SUBJECT_ROOT}.events.memory.${checkToken(migrationId, 'migration id')}`,
} as const;
