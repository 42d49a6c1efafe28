import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** Base of net-redirect's errors: each names the migration it is about. */
export class NetRedirectError extends WanmigError {
  readonly migrationId?: string;
  constructor(code: ErrorCode, message: string, fields: { migrationId?: string; cause?: unknown } = {}) {
    super(code, message, { cause: fields.cause });
    this.name = 'NetRedirectError';
    this.migrationId = fields.migrationId;
  }
}

/** A request that contradicts what this site already did for the migration. */
export class NetRedirectConflictError extends NetRedirectError {
  constructor(migrationId: string, what: string) {
    super(ErrorCode.Conflict, `migration ${migrationId}: ${what}`, { migrationId });
    this.name = 'NetRedirectConflictError';
  }
}

/** The move's CloudEvent could not be stored (JetStream down, no stream for it). */
export class EventPublishError extends NetRedirectError {
  readonly subject: string;
  constructor(migrationId: string, subject: string, cause: unknown) {
    super(
      ErrorCode.Unavailable,
      `cannot publish the move of migration ${migrationId} on ${subject}: ${cause instanceof Error ? cause.message : String(cause)}`,
      { migrationId, cause },
    );
    this.name = 'EventPublishError';
    this.subject = subject;
  }
}

/**
 * `confirm.required` and the controllers did not confirm: none listens or too few answered in time (UNAVAILABLE), or
 * one refused (CONFLICT). The event is stored all the same; a repeat asks the hook again.
 */
export class MoveNotConfirmedError extends NetRedirectError {
  readonly hookSubject: string;
  constructor(migrationId: string, hookSubject: string, reason: string, refused: boolean) {
    super(
      refused ? ErrorCode.Conflict : ErrorCode.Unavailable,
      `the move of migration ${migrationId} is not confirmed on ${hookSubject}: ${reason}`,
      { migrationId },
    );
    this.name = 'MoveNotConfirmedError';
    this.hookSubject = hookSubject;
  }
}

/** The route agent cannot act: not configured, or an `ip` command failed (its stderr is in the message). */
export class RouteAgentUnavailableError extends NetRedirectError {
  readonly command?: string;
  readonly stderr?: string;
  constructor(
    message: string,
    fields: { migrationId?: string; command?: string; stderr?: string; cause?: unknown } = {},
  ) {
    super(ErrorCode.Unavailable, message, fields);
    this.name = 'RouteAgentUnavailableError';
    this.command = fields.command;
    this.stderr = fields.stderr;
  }
}

/** The route agent knows no next hop for the site asked. */
export class RouteSiteUnknownError extends NetRedirectError {
  readonly site: string;
  constructor(migrationId: string, site: string, known: string[]) {
    super(
      ErrorCode.NotFound,
      `the route agent knows no next hop for ${site} (it knows ${known.length > 0 ? known.join(', ') : 'none'})`,
      { migrationId },
    );
    this.name = 'RouteSiteUnknownError';
    this.site = site;
  }
}

/** No relay of this migration at this site. */
export class RelayNotFoundError extends NetRedirectError {
  constructor(migrationId: string) {
    super(ErrorCode.NotFound, `no relay of migration ${migrationId} at this site`, { migrationId });
    this.name = 'RelayNotFoundError';
  }
}

/** The relay's listen address is taken: nothing was left running. */
export class RelayAddressInUseError extends NetRedirectError {
  readonly address: string;
  constructor(migrationId: string, address: string, cause?: unknown) {
    super(ErrorCode.Conflict, `relay of migration ${migrationId}: ${address} is already in use`, {
      migrationId,
      cause,
    });
    this.name = 'RelayAddressInUseError';
    this.address = address;
  }
}

/** The relay could not start (a namespace that does not exist, an address not on this host): nothing is left running. */
export class RelayUnavailableError extends NetRedirectError {
  constructor(migrationId: string, reason: string, cause?: unknown) {
    super(ErrorCode.Unavailable, `relay of migration ${migrationId} cannot start: ${reason}`, { migrationId, cause });
    this.name = 'RelayUnavailableError';
  }
}

/** The service is stopping: no new work. */
export class ShuttingDownError extends NetRedirectError {
  constructor() {
    super(ErrorCode.Unavailable, 'net-redirect is shutting down');
    this.name = 'ShuttingDownError';
  }
}

/** Base of the VM NICs' errors (`net.vm.*`): each names the VM. */
export class VmNicError extends NetRedirectError {
  readonly vmId: string;
  constructor(code: ErrorCode, vmId: string, message: string, cause?: unknown) {
    super(code, `NIC of VM ${vmId}: ${message}`, { cause });
    this.name = 'VmNicError';
    this.vmId = vmId;
  }
}

/** No NIC of this VM at this site. */
export class VmNicNotFoundError extends VmNicError {
  constructor(vmId: string) {
    super(ErrorCode.NotFound, vmId, 'none at this site');
    this.name = 'VmNicNotFoundError';
  }
}

/** A request that contradicts the NIC as it is (other addresses or ports, another namespace, a detached NIC). */
export class VmNicConflictError extends VmNicError {
  constructor(vmId: string, what: string) {
    super(ErrorCode.Conflict, vmId, what);
    this.name = 'VmNicConflictError';
  }
}

/** A port of the NIC is taken at one of its addresses (or its tunnel host): nothing was left behind. */
export class VmNicPortInUseError extends VmNicError {
  readonly port: number;
  constructor(vmId: string, port: number, where: string, cause?: unknown) {
    super(ErrorCode.Conflict, vmId, `port ${port} is already in use (${where}); nothing was left behind`, cause);
    this.name = 'VmNicPortInUseError';
    this.port = port;
  }
}

/**
 * A relay that names a port the NIC does not have, a tunnel item that is not `{ port, tunnelPort }`, or one of the
 * NIC's own endpoints.
 */
export class VmNicInvalidRequestError extends VmNicError {
  constructor(vmId: string, what: string) {
    super(ErrorCode.InvalidRequest, vmId, what);
    this.name = 'VmNicInvalidRequestError';
  }
}

/** The NIC cannot be made: no namespace configured, an `ip` command or a forwarder failed (nothing is left behind). */
export class VmNicUnavailableError extends VmNicError {
  readonly command?: string;
  constructor(vmId: string, reason: string, fields: { command?: string; cause?: unknown } = {}) {
    super(ErrorCode.Unavailable, vmId, reason, fields.cause);
    this.name = 'VmNicUnavailableError';
    this.command = fields.command;
  }
}
