/** `{"qemu": {"major", "minor", "micro"}, "package"}`, as in the greeting and in `query-version`. */
export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

/** The banner QEMU sends as soon as a client connects, before `qmp_capabilities`. */
export interface QmpGreeting {
  QMP: { version: QmpVersion; capabilities: string[] };
}

/** An asynchronous event (`STOP`, `RESUME`, `SHUTDOWN`, `BLOCK_JOB_READY`, `MIGRATION`...). */
export interface QmpEvent<D = Record<string, unknown>> {
  event: string;
  data?: D;
  timestamp: { seconds: number; microseconds: number };
}

/** Subscribe to every event with this name instead of one event name. */
export const QMP_ANY_EVENT = '*';

export type QmpEventListener = (event: QmpEvent) => void;

/** `query-status`. */
export interface QmpStatus {
  status: string;
  running: boolean;
  singlestep?: boolean;
}
