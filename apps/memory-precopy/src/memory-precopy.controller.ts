import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { controlSubject, MemoryPrecopyVerb, ServiceName } from '@wanmig/protocol';
import { MemoryPrecopyService } from './memory-precopy.service.js';

/** Patterns carry the site, known only at boot: the controller class is made per site (as disk-transfer's). */
export function memoryPrecopyController(site: string): Type<unknown> {
  const on = (verb: MemoryPrecopyVerb) => controlSubject(site, ServiceName.MemoryPrecopy, verb);

  @Controller()
  class MemoryPrecopyController {
    constructor(@Inject(MemoryPrecopyService) private readonly service: MemoryPrecopyService) {}

    @MessagePattern(on(MemoryPrecopyVerb.Migrate))
    migrate(@Payload() body: unknown) {
      return this.service.migrate(body);
    }

    @MessagePattern(on(MemoryPrecopyVerb.Progress))
    progress(@Payload() body: unknown) {
      return this.service.progress(body);
    }

    @MessagePattern(on(MemoryPrecopyVerb.Abort))
    abort(@Payload() body: unknown) {
      return this.service.abort(body);
    }

    @MessagePattern(on(MemoryPrecopyVerb.Proceed))
    proceed(@Payload() body: unknown) {
      return this.service.proceed(body);
    }
  }
  return MemoryPrecopyController;
}
