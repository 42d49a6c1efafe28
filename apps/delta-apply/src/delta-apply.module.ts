import { Module, type DynamicModule } from '@nestjs/common';
import type { HypervisorDriver } from '@wanmig/hypervisor';
import { DataPlaneConnection } from './data-plane.connection.js';
import type { DeltaApplyConfig } from './delta-apply.config.js';
import { DELTA_APPLY_CONFIG, HYPERVISOR_DRIVER, STAT_FS } from './delta-apply.tokens.js';
import { DiskReceiverService } from './disk-receiver.service.js';
import { createDiskController } from './disk.controller.js';
import { defaultStatFs, type StatFs } from './free-space.check.js';
import { createHypervisorDriver } from './hypervisor-driver.factory.js';
import { MemoryReceiverService } from './memory-receiver.service.js';
import { createMemoryController } from './memory.controller.js';
import { createQemuIncomingController } from './qemu/qemu-incoming.controller.js';
import { createQemuIncomingRegistry, QemuIncomingRegistry } from './qemu/qemu-incoming.registry.js';
import { createQemuOrphanReaper, QemuOrphanReaper } from './qemu/qemu-orphans.reaper.js';
import { RoomLedger } from './room.ledger.js';

export interface DeltaApplyModuleOptions {
  /** How free space is measured (tests inject a full disk); default `fs.statfs`. */
  statFs?: StatFs;
  /** The driver destination VMs are started with (tests inject a fake); default createHypervisorDriver. */
  driver?: HypervisorDriver;
}

/** delta-apply's root module, built from the validated config: its subjects depend on the site. */
@Module({})
export class DeltaApplyModule {
  static forRoot(config: DeltaApplyConfig, options: DeltaApplyModuleOptions = {}): DynamicModule {
    return {
      module: DeltaApplyModule,
      controllers: [
        createDiskController(config.site),
        createMemoryController(config.site),
        createQemuIncomingController(config.site),
      ],
      providers: [
        { provide: DELTA_APPLY_CONFIG, useValue: config },
        { provide: STAT_FS, useValue: options.statFs ?? defaultStatFs },
        { provide: HYPERVISOR_DRIVER, useValue: options.driver ?? createHypervisorDriver(config) },
        DataPlaneConnection,
        RoomLedger,
        DiskReceiverService,
        MemoryReceiverService,
        {
          provide: QemuIncomingRegistry,
          useFactory: createQemuIncomingRegistry,
          inject: [DELTA_APPLY_CONFIG, DataPlaneConnection, DiskReceiverService],
        },
        // Before the verbs are served: destination QEMUs a killed delta-apply left behind.
        { provide: QemuOrphanReaper, useFactory: createQemuOrphanReaper, inject: [DELTA_APPLY_CONFIG] },
      ],
    };
  }
}
