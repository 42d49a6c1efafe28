import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import {
  controlSubject,
  QemuRelayVerb,
  ServiceName,
  type OpenQemuRelayReply,
  type QemuRelayStatusReply,
} from '@wanmig/protocol';
import { QemuRelayRegistry } from './qemu-relay.registry.js';

/** `wanmig.v1.<site>.memory-precopy.mem.qemu.relay*`; made per site, as memoryPrecopyController is. */
export function qemuRelayController(site: string): Type<unknown> {
  const on = (verb: QemuRelayVerb) => controlSubject(site, ServiceName.MemoryPrecopy, verb);

  @Controller()
  class QemuRelayController {
    constructor(@Inject(QemuRelayRegistry) private readonly relays: QemuRelayRegistry) {}

    @MessagePattern(on(QemuRelayVerb.Open))
    open(@Payload() body: unknown): Promise<OpenQemuRelayReply> {
      return this.relays.open(body);
    }

    @MessagePattern(on(QemuRelayVerb.Status))
    status(@Payload() body: unknown): QemuRelayStatusReply {
      return this.relays.status(body);
    }

    @MessagePattern(on(QemuRelayVerb.Close))
    close(@Payload() body: unknown): Promise<QemuRelayStatusReply> {
      return this.relays.close(body);
    }
  }
  return QemuRelayController;
}
