import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import {
  controlSubject,
  NetRedirectVerb,
  ServiceName,
  type NetMovedReply,
  type RelayStatusReply,
  type RouteMoveReply,
  type VmNicStatus,
} from '@wanmig/protocol';
import { NetMovedService } from './moved/net-moved.service.js';
import { VmNicRegistry } from './nic/vm-nic.registry.js';
import { RelayRegistry } from './relay/relay.registry.js';
import { RouteAgent } from './route/route.agent.js';

/** `wanmig.v1.<site>.net-redirect.net.*`; patterns carry the site, so the class is made per site. */
export function netRedirectController(site: string): Type<unknown> {
  const on = (verb: NetRedirectVerb) => controlSubject(site, ServiceName.NetRedirect, verb);

  @Controller()
  class NetRedirectController {
    constructor(
      @Inject(NetMovedService) private readonly moves: NetMovedService,
      @Inject(RouteAgent) private readonly routes: RouteAgent,
      @Inject(RelayRegistry) private readonly relays: RelayRegistry,
      @Inject(VmNicRegistry) private readonly nics: VmNicRegistry,
    ) {}

    @MessagePattern(on(NetRedirectVerb.Moved))
    moved(@Payload() body: unknown): Promise<NetMovedReply> {
      return this.moves.moved(body);
    }

    @MessagePattern(on(NetRedirectVerb.RouteMove))
    routeMove(@Payload() body: unknown): Promise<RouteMoveReply> {
      return this.routes.move(body);
    }

    @MessagePattern(on(NetRedirectVerb.RelayStart))
    relayStart(@Payload() body: unknown): Promise<RelayStatusReply> {
      return this.relays.start(body);
    }

    @MessagePattern(on(NetRedirectVerb.RelayStatus))
    relayStatus(@Payload() body: unknown): RelayStatusReply {
      return this.relays.status(body);
    }

    @MessagePattern(on(NetRedirectVerb.RelayStop))
    relayStop(@Payload() body: unknown): Promise<RelayStatusReply> {
      return this.relays.stop(body);
    }

    @MessagePattern(on(NetRedirectVerb.VmAttach))
    vmAttach(@Payload() body: unknown): Promise<VmNicStatus> {
      return this.nics.attach(body);
    }

    @MessagePattern(on(NetRedirectVerb.VmRelay))
    vmRelay(@Payload() body: unknown): Promise<VmNicStatus> {
      return this.nics.relay(body);
    }

    @MessagePattern(on(NetRedirectVerb.VmDetach))
    vmDetach(@Payload() body: unknown): Promise<VmNicStatus> {
      return this.nics.detach(body);
    }

    @MessagePattern(on(NetRedirectVerb.VmStatus))
    vmStatus(@Payload() body: unknown): VmNicStatus {
      return this.nics.status(body);
    }
  }
  return NetRedirectController;
}
