import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import {
  controlSubject,
  QemuIncomingVerb,
  ServiceName,
  type AbortQemuIncomingReply,
  type QemuIncomingStatusReply,
  type ResumeQemuReply,
  type StartQemuIncomingReply,
} from '@wanmig/protocol';
import { QemuIncomingRegistry } from './qemu-incoming.registry.js';

/**
 * `wanmig.v1.<site>.delta-apply.mem.qemu.*`: the destination QEMU of a migration. A factory for the same reason as
 * createDiskController: the subjects carry the site.
 */
export function createQemuIncomingController(site: string): Type<unknown> {
  const subject = (verb: QemuIncomingVerb): string => controlSubject(site, ServiceName.DeltaApply, verb);

  @Controller()
  class QemuIncomingController {
    constructor(@Inject(QemuIncomingRegistry) private readonly destinations: QemuIncomingRegistry) {}

    @MessagePattern(subject(QemuIncomingVerb.Start))
    start(@Payload() body: unknown): Promise<StartQemuIncomingReply> {
      return this.destinations.start(body);
    }

    @MessagePattern(subject(QemuIncomingVerb.Status))
    status(@Payload() body: unknown): Promise<QemuIncomingStatusReply> {
      return this.destinations.status(body);
    }

    @MessagePattern(subject(QemuIncomingVerb.Resume))
    resume(@Payload() body: unknown): Promise<ResumeQemuReply> {
      return this.destinations.resume(body);
    }

    @MessagePattern(subject(QemuIncomingVerb.Abort))
    abort(@Payload() body: unknown): Promise<AbortQemuIncomingReply> {
      return this.destinations.abort(body);
    }
  }
  return QemuIncomingController;
}
