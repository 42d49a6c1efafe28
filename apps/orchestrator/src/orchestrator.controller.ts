import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { controlSubject, MigrationVerb, ServiceName, SiteVerb, VmVerb } from '@wanmig/protocol';
import { OrchestratorService } from './orchestrator.service.js';

/** The NATS API: `wanmig.v1.<site>.orchestrator.<verb>`; patterns carry the site, known only at boot. */
export function orchestratorController(site: string): Type<unknown> {
  const on = (verb: string) => controlSubject(site, ServiceName.Orchestrator, verb);

  @Controller()
  class OrchestratorController {
    constructor(@Inject(OrchestratorService) private readonly api: OrchestratorService) {}

    @MessagePattern(on(MigrationVerb.Create))
    create(@Payload() body: unknown) {
      return this.api.createMigration(body);
    }

    @MessagePattern(on(MigrationVerb.Get))
    get(@Payload() body: unknown) {
      return this.api.getMigration(body);
    }

    @MessagePattern(on(MigrationVerb.List))
    list(@Payload() body: unknown) {
      return this.api.listMigrations(body);
    }

    @MessagePattern(on(MigrationVerb.Abort))
    abort(@Payload() body: unknown) {
      return this.api.abortMigration(body);
    }

    @MessagePattern(on(MigrationVerb.Events))
    events(@Payload() body: unknown) {
      return this.api.migrationEvents(body);
    }

    @MessagePattern(on(VmVerb.Create))
    createVm(@Payload() body: unknown) {
      return this.api.createVm(body);
    }

    @MessagePattern(on(VmVerb.Import))
    importVm(@Payload() body: unknown) {
      return this.api.importVm(body);
    }

    @MessagePattern(on(VmVerb.Get))
    getVm(@Payload() body: unknown) {
      return this.api.getVm(body);
    }

    @MessagePattern(on(VmVerb.List))
    listVms() {
      return this.api.listVms();
    }

    @MessagePattern(on(VmVerb.Remove))
    removeVm(@Payload() body: unknown) {
      return this.api.removeVm(body);
    }

    @MessagePattern(on(VmVerb.Adopt))
    adoptVm(@Payload() body: unknown) {
      return this.api.adoptVm(body);
    }

    @MessagePattern(on(VmVerb.AttachNetwork))
    attachVmNetwork(@Payload() body: unknown) {
      return this.api.attachVmNetwork(body);
    }

    @MessagePattern(on(SiteVerb.Info))
    siteInfo() {
      return this.api.siteInfo();
    }

    @MessagePattern(on(SiteVerb.List))
    listSites() {
      return this.api.listSites();
    }
  }
  return OrchestratorController;
}
