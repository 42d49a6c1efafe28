import 'reflect-metadata';
import type { NatsConnection } from '@nats-io/nats-core';
import { type INestMicroservice, Logger, type LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Transport, type MicroserviceOptions } from '@nestjs/microservices';
import { ExternalRequestDeserializer } from './external-request.deserializer.js';
import { WanmigRpcExceptionFilter } from './rpc-exception.filter.js';

export interface ServiceBootstrapOptions {
  /** Root module of the service. */
  module: object;
  natsUrl: string;
  /** Queue group: several instances of a service share the work. */
  queue: string;
  logLevels?: LogLevel[];
}

/**
 * Starts a NestJS microservice on the NATS transport with wanmig's error translation and a
 * graceful shutdown: on SIGTERM/SIGINT it stops taking requests, lets Nest's shutdown hooks
 * finish or checkpoint what is in flight, then closes.
 */
export async function bootstrapService(options: ServiceBootstrapOptions): Promise<INestMicroservice> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(options.module, {
    transport: Transport.NATS,
    options: {
      servers: [options.natsUrl],
      queue: options.queue,
      maxReconnectAttempts: -1,
      deserializer: new ExternalRequestDeserializer(),
    },
    logger: options.logLevels ?? ['log', 'warn', 'error'],
  });
  app.useGlobalFilters(new WanmigRpcExceptionFilter());
  app.enableShutdownHooks();
  await app.listen();
  // Subscriptions go out buffered: once the server has answered a ping it holds them, so a service that says it
  // is ready answers its subjects (a request right after a restart finds a responder).
  await app.unwrap<NatsConnection>().flush();
  new Logger(options.queue).log(`listening on ${options.natsUrl}`);
  return app;
}
