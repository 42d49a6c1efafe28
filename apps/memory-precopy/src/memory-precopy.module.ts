import { Module, type DynamicModule } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { SimDriver } from '@wanmig/hypervisor';
import {
  HYPERVISOR_DRIVER,
  MEMORY_PRECOPY_CONFIG,
  NATS_CONNECTION,
  type MemoryPrecopyConfig,
} from './memory-precopy.config.js';
import { memoryPrecopyController } from './memory-precopy.controller.js';
import { MemoryPrecopyService } from './memory-precopy.service.js';
import { qemuRelayController } from './qemu/qemu-relay.controller.js';
import { QemuRelayRegistry } from './qemu/qemu-relay.registry.js';

@Module({})
export class MemoryPrecopyModule {
  /** `nc` carries the data plane; Nest's own connection carries control requests. */
  static forRoot(config: MemoryPrecopyConfig, nc: NatsConnection): DynamicModule {
    return {
      module: MemoryPrecopyModule,
      controllers: [memoryPrecopyController(config.site), qemuRelayController(config.site)],
      providers: [
        { provide: MEMORY_PRECOPY_CONFIG, useValue: config },
        { provide: NATS_CONNECTION, useValue: nc },
        { provide: HYPERVISOR_DRIVER, useValue: new SimDriver({ runtimeDir: config.runtimeDir }) },
        MemoryPrecopyService,
        { provide: QemuRelayRegistry, useFactory: () => new QemuRelayRegistry(nc, config.runtimeDir) },
      ],
    };
  }
}
