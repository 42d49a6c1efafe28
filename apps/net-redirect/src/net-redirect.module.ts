import { Inject, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import { NatsControllerHook } from './moved/controller.hook.js';
import { JetStreamMoveSink } from './moved/move-event.sink.js';
import { NetMovedService } from './moved/net-moved.service.js';
import { NATS_CONNECTION, NET_REDIRECT_CONFIG, type NetRedirectConfig } from './net-redirect.config.js';
import { netRedirectController } from './net-redirect.controller.js';
import { VmNicRegistry } from './nic/vm-nic.registry.js';
import { forwarderStarter } from './relay/forwarder.starter.js';
import { RelayRegistry } from './relay/relay.registry.js';
import { processExecutor, type CommandExecutor } from './route/command.executor.js';
import { RouteAgent } from './route/route.agent.js';
import { parseRouteVia } from './route/route-via.table.js';

@Module({})
export class NetRedirectModule implements OnApplicationShutdown {
  constructor(@Inject(NATS_CONNECTION) private readonly nc: NatsConnection) {}

  /** `nc` carries the events and the hook; Nest's own connection carries the verbs. */
  static forRoot(config: NetRedirectConfig, nc: NatsConnection, executor: CommandExecutor = processExecutor) {
    const via = parseRouteVia(config.routeVia);
    // One starter for relays and NICs: its children are tracked together and killed together at exit.
    const starter = forwarderStarter({ ipBin: config.ipBin });
    return {
      module: NetRedirectModule,
      controllers: [netRedirectController(config.site)],
      providers: [
        { provide: NET_REDIRECT_CONFIG, useValue: config },
        { provide: NATS_CONNECTION, useValue: nc },
        {
          provide: NetMovedService,
          useFactory: () =>
            new NetMovedService(
              config.site,
              new JetStreamMoveSink(nc, { site: config.site, domain: config.jsDomain || config.site }),
              new NatsControllerHook(nc),
            ),
        },
        {
          provide: RouteAgent,
          useFactory: () =>
            new RouteAgent(
              {
                site: config.site,
                netns: config.routeNetns || undefined,
                via: via.ok && via.table.size > 0 ? via.table : undefined,
                ipBin: config.ipBin,
                commandTimeoutMs: config.commandTimeoutMs,
              },
              executor,
            ),
        },
        { provide: RelayRegistry, useFactory: () => new RelayRegistry(starter) },
        {
          provide: VmNicRegistry,
          useFactory: () =>
            new VmNicRegistry(
              {
                netns: config.vmNetns || undefined,
                tunnelHost: config.vmTunnelHost || undefined,
                ipBin: config.ipBin,
                commandTimeoutMs: config.commandTimeoutMs,
              },
              executor,
              starter,
            ),
        },
      ],
    } satisfies DynamicModule;
  }

  /** After the relays are cut and the NICs detached (the registries' beforeApplicationShutdown): flush, close `nc`. */
  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}
