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
import { FlowPins, PIN_TABLE_BASE } from './route/flow.pins.js';
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
    const table = via.ok && via.table.size > 0 ? via.table : undefined;
    const routeNetns = config.routeNetns || undefined;
    // The NICs and the route agent know each other: the agent pins the NICs' open flows before a /32 moves away, and
    // a NIC that detaches has its pins removed.
    const pins = new FlowPins(
      {
        ipBin: config.ipBin,
        netns: routeNetns,
        commandTimeoutMs: config.commandTimeoutMs,
        table: PIN_TABLE_BASE + Math.max(0, [...(table?.keys() ?? [])].sort().indexOf(config.site)),
      },
      executor,
    );
    const nics: VmNicRegistry = new VmNicRegistry(
      {
        netns: config.vmNetns || undefined,
        tunnelHost: config.vmTunnelHost || undefined,
        holdMs: config.vmHoldMs,
        ipBin: config.ipBin,
        commandTimeoutMs: config.commandTimeoutMs,
      },
      executor,
      starter,
      (addresses): Promise<void> => routes.unpin(addresses),
    );
    const routes: RouteAgent = new RouteAgent(
      {
        site: config.site,
        netns: routeNetns,
        via: table,
        ipBin: config.ipBin,
        commandTimeoutMs: config.commandTimeoutMs,
        flows: { source: nics, pins },
      },
      executor,
    );
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
        { provide: RouteAgent, useFactory: () => routes },
        { provide: RelayRegistry, useFactory: () => new RelayRegistry(starter) },
        { provide: VmNicRegistry, useFactory: () => nics },
      ],
    } satisfies DynamicModule;
  }

  /** After the relays are cut and the NICs detached (the registries' beforeApplicationShutdown): flush, close `nc`. */
  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}
