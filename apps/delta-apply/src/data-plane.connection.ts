import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { ErrorCode, WanmigError } from '@wanmig/protocol';
import type { DeltaApplyConfig } from './delta-apply.config.js';
import { DELTA_APPLY_CONFIG } from './delta-apply.tokens.js';

/**
 * The NATS connection the stream receivers use. Nest's transport keeps its own connection for the
 * control subjects and does not share it; frames also must not go through a queue group (a
 * migration's frames belong to the one process holding its image), so data gets a connection of
 * its own. Opened before the receivers resume at boot, closed after they stopped at shutdown.
 */
/** nats-server's default max_payload, assumed until the server has said otherwise. */
const DEFAULT_NATS_MAX_PAYLOAD = 1024 * 1024;

@Injectable()
export class DataPlaneConnection implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('delta-apply');
  private connection?: NatsConnection;

  constructor(@Inject(DELTA_APPLY_CONFIG) private readonly config: DeltaApplyConfig) {}

  async onModuleInit(): Promise<void> {
    try {
      this.connection = await connect({
        servers: this.config.natsUrl,
        name: `delta-apply.${this.config.site}.data`,
        maxReconnectAttempts: -1,
      });
    } catch (cause) {
      const reason = cause instanceof Error ? cause.message : String(cause);
      throw new WanmigError(ErrorCode.Unavailable, `cannot reach NATS at ${this.config.natsUrl}: ${reason}`, { cause });
    }
  }

  get nc(): NatsConnection {
    if (!this.connection) throw new Error('data-plane connection used before the module was initialised');
    return this.connection;
  }

  /** The server's max_payload (what one message, a control reply included, may carry). */
  get maxPayload(): number {
    return this.connection?.info?.max_payload ?? DEFAULT_NATS_MAX_PAYLOAD;
  }

  async onApplicationShutdown(): Promise<void> {
    const nc = this.connection;
    this.connection = undefined;
    if (!nc || nc.isClosed()) return;
    try {
      await nc.flush();
    } catch (err) {
      this.logger.warn(`data-plane flush at shutdown failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    await nc.close();
  }
}
