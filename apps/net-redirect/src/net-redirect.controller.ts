import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import {
  controlSubject,
  NetRedirectVerb,
  ServiceName,
  type NetMovedReply,
  type RelayStatusReply,
  type RouteMoveReply,
} from '@wanmig/protocol';
import { NetMovedService } from './moved/net-moved.service.js';
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
  }
  return NetRedirectController;
}
