import { Module, type DynamicModule } from '@nestjs/common';
import { DataPlaneConnection } from './data-plane.connection.js';
import type { DeltaApplyConfig } from './delta-apply.config.js';
import { DELTA_APPLY_CONFIG, STAT_FS } from './delta-apply.tokens.js';
import { DiskReceiverService } from './disk-receiver.service.js';
import { createDiskController } from './disk.controller.js';
import { defaultStatFs, type StatFs } from './free-space.check.js';

export interface DeltaApplyModuleOptions {
  /** How free space is measured (tests inject a full disk); default `fs.statfs`. */
  statFs?: StatFs;
}

/** delta-apply's root module, built from the validated config: its subjects depend on the site. */
@Module({})
export class DeltaApplyModule {
  static forRoot(config: DeltaApplyConfig, options: DeltaApplyModuleOptions = {}): DynamicModule {
    return {
      module: DeltaApplyModule,
      controllers: [createDiskController(config.site)],
      providers: [
        { provide: DELTA_APPLY_CONFIG, useValue: config },
        { provide: STAT_FS, useValue: options.statFs ?? defaultStatFs },
        DataPlaneConnection,
        DiskReceiverService,
      ],
    };
  }
}
