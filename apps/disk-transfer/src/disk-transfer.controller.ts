import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { controlSubject, DiskTransferVerb, ServiceName } from '@wanmig/protocol';
import { DiskTransferService } from './disk-transfer.service.js';

/**
 * Control subjects carry the site (`wanmig.v1.<site>.disk-transfer.…`), known only once the
 * config is read, while Nest reads patterns from decorators: so the controller class is made per
 * site, at boot, with its patterns filled in.
 */
export function diskTransferController(site: string): Type<unknown> {
  const on = (verb: DiskTransferVerb) => controlSubject(site, ServiceName.DiskTransfer, verb);

  @Controller()
  class DiskTransferController {
    constructor(@Inject(DiskTransferService) private readonly service: DiskTransferService) {}

    @MessagePattern(on(DiskTransferVerb.Export))
    export(@Payload() body: unknown) {
      return this.service.export(body);
    }

    @MessagePattern(on(DiskTransferVerb.Unexport))
    unexport(@Payload() body: unknown) {
      return this.service.unexport(body);
    }

    @MessagePattern(on(DiskTransferVerb.Migrate))
    migrate(@Payload() body: unknown) {
      return this.service.migrate(body);
    }

    @MessagePattern(on(DiskTransferVerb.Progress))
    progress(@Payload() body: unknown) {
      return this.service.progress(body);
    }

    @MessagePattern(on(DiskTransferVerb.Finalize))
    finalize(@Payload() body: unknown) {
      return this.service.finalize(body);
    }

    @MessagePattern(on(DiskTransferVerb.SetBandwidth))
    setBandwidth(@Payload() body: unknown) {
      return this.service.setBandwidth(body);
    }

    @MessagePattern(on(DiskTransferVerb.Abort))
    abort(@Payload() body: unknown) {
      return this.service.abort(body);
    }
  }
  return DiskTransferController;
}
