import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import {
  controlSubject,
  MemoryVerb,
  MigrationRef,
  PrepareMemoryRequest,
  ReleaseMemoryRequest,
  ResumeVmRequest,
  ServiceName,
  type CheckResumeReply,
  type MemoryStatusReply,
  type PrepareMemoryReply,
  type ReleaseMemoryReply,
  type ResumeVmReply,
} from '@wanmig/protocol';
import { MemoryReceiverService } from './memory-receiver.service.js';
import { parseRequest as parse } from './request.parser.js';

/**
 * Builds the controller for one site's memory subjects (`wanmig.v1.<site>.delta-apply.mem.*` and
 * `vm.resume`); a factory for the same reason as createDiskController: the subjects carry the site.
 */
export function createMemoryController(site: string): Type<unknown> {
  const subject = (verb: MemoryVerb): string => controlSubject(site, ServiceName.DeltaApply, verb);

  @Controller()
  class MemoryController {
    constructor(@Inject(MemoryReceiverService) private readonly memory: MemoryReceiverService) {}

    @MessagePattern(subject(MemoryVerb.Prepare))
    prepare(@Payload() body: unknown): Promise<PrepareMemoryReply> {
      return this.memory.prepare(parse(PrepareMemoryRequest, body));
    }

    @MessagePattern(subject(MemoryVerb.Status))
    status(@Payload() body: unknown): MemoryStatusReply {
      return this.memory.status(parse(MigrationRef, body));
    }

    @MessagePattern(subject(MemoryVerb.Resume))
    resume(@Payload() body: unknown): Promise<ResumeVmReply> {
      return this.memory.resume(parse(ResumeVmRequest, body));
    }

    @MessagePattern(subject(MemoryVerb.Check))
    check(@Payload() body: unknown): Promise<CheckResumeReply> {
      return this.memory.check(parse(ResumeVmRequest, body));
    }

    @MessagePattern(subject(MemoryVerb.Release))
    release(@Payload() body: unknown): Promise<ReleaseMemoryReply> {
      return this.memory.release(parse(ReleaseMemoryRequest, body));
    }
  }
  return MemoryController;
}
