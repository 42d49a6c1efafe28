import { Controller, Inject, type Type } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import {
  controlSubject,
  DiskDigestRequest,
  DiskVerb,
  MigrationRef,
  PrepareDiskRequest,
  ReleaseDiskRequest,
  ServiceName,
  type DiskDigestReply,
  type DiskPresentReply,
  type DiskStatusReply,
  type PrepareDiskReply,
  type ReleaseDiskReply,
} from '@wanmig/protocol';
import { DiskReceiverService } from './disk-receiver.service.js';
import { parseRequest as parse } from './request.parser.js';

/**
 * Builds the controller for one site's disk subjects (`wanmig.v1.<site>.delta-apply.disk.*`).
 *
 * Why a factory: `@MessagePattern` takes its pattern when the class is defined, but the subjects
 * carry the site, which is only known once the config is loaded. Defining the class inside a
 * function that receives the site gives the decorators their final strings and keeps everything
 * Nest does for a controller (exception filter, lifecycle, DI); the alternative, calling
 * `server.addHandler` by hand, would bypass the filter that turns errors into `{ code, message }`.
 * DeltaApplyModule.forRoot(config) calls it once.
 */
export function createDiskController(site: string): Type<unknown> {
  const subject = (verb: DiskVerb): string => controlSubject(site, ServiceName.DeltaApply, verb);

  @Controller()
  class DiskController {
    constructor(@Inject(DiskReceiverService) private readonly disks: DiskReceiverService) {}

    @MessagePattern(subject(DiskVerb.Prepare))
    prepare(@Payload() body: unknown): Promise<PrepareDiskReply> {
      return this.disks.prepare(parse(PrepareDiskRequest, body));
    }

    @MessagePattern(subject(DiskVerb.Status))
    status(@Payload() body: unknown): DiskStatusReply {
      return this.disks.status(parse(MigrationRef, body));
    }

    @MessagePattern(subject(DiskVerb.Present))
    present(@Payload() body: unknown): DiskPresentReply {
      return this.disks.present(parse(MigrationRef, body));
    }

    @MessagePattern(subject(DiskVerb.Digest))
    digest(@Payload() body: unknown): Promise<DiskDigestReply> {
      return this.disks.digest(parse(DiskDigestRequest, body));
    }

    @MessagePattern(subject(DiskVerb.Release))
    release(@Payload() body: unknown): Promise<ReleaseDiskReply> {
      return this.disks.release(parse(ReleaseDiskRequest, body));
    }
  }
  return DiskController;
}
