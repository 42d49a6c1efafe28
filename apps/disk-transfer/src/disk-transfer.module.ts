import { Module, type DynamicModule } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { diskTransferController } from './disk-transfer.controller.js';
import { DISK_TRANSFER_CONFIG, NATS_CONNECTION, type DiskTransferConfig } from './disk-transfer.config.js';
import { DiskTransferService } from './disk-transfer.service.js';

@Module({})
export class DiskTransferModule {
  /** `nc` carries the data plane (frames, acks); Nest's own connection carries control requests. */
  static forRoot(config: DiskTransferConfig, nc: NatsConnection): DynamicModule {
    return {
      module: DiskTransferModule,
      controllers: [diskTransferController(config.site)],
      providers: [
        { provide: DISK_TRANSFER_CONFIG, useValue: config },
        { provide: NATS_CONNECTION, useValue: nc },
        DiskTransferService,
      ],
    };
  }
}
