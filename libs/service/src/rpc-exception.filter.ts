import { Catch, Logger, type ArgumentsHost, type RpcExceptionFilter } from '@nestjs/common';
import { RpcException } from '@nestjs/microservices';
import { toWireError, WanmigError } from '@wanmig/protocol';
import { throwError, type Observable } from 'rxjs';

/**
 * Translates errors at the edge: a WanmigError crosses NATS as `{ code, message }`; anything else
 * becomes a generic INTERNAL error and its detail stays in this service's log.
 */
@Catch()
export class WanmigRpcExceptionFilter implements RpcExceptionFilter<unknown> {
  private readonly logger = new Logger('rpc');

  catch(exception: unknown, host: ArgumentsHost): Observable<never> {
    if (!(exception instanceof WanmigError)) {
      const pattern = host.switchToRpc().getContext<{ getSubject?: () => string }>()?.getSubject?.();
      const detail = exception instanceof Error ? (exception.stack ?? exception.message) : String(exception);
      this.logger.error(`unexpected error${pattern ? ` on ${pattern}` : ''}: ${detail}`);
    }
    const wire = exception instanceof RpcException ? toWireError(exception.getError()) : toWireError(exception);
    return throwError(() => wire);
  }
}
