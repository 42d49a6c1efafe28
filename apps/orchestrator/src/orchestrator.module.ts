import { Module, type DynamicModule } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { NATS_CONNECTION, ORCHESTRATOR_CONFIG, type OrchestratorConfig } from './orchestrator.config.js';
import { orchestratorController } from './orchestrator.controller.js';
import { OrchestratorService } from './orchestrator.service.js';

@Module({})
export class OrchestratorModule {
  /** `nc` carries KV, events and calls to the other services; Nest's own connection serves the API. */
  static forRoot(config: OrchestratorConfig, nc: NatsConnection): DynamicModule {
    return {
      module: OrchestratorModule,
      controllers: [orchestratorController(config.site)],
      providers: [
        { provide: ORCHESTRATOR_CONFIG, useValue: config },
        { provide: NATS_CONNECTION, useValue: nc },
        OrchestratorService,
      ],
    };
  }
}
