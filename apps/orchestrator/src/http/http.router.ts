import { ErrorCode } from '@wanmig/protocol';
import { HttpError } from './http.errors.js';
import { type HttpRoute } from './http.routes.js';

export interface RouteMatch {
  route: HttpRoute;
  /** Path parameters, percent-decoded. */
  params: Record<string, string>;
}

interface CompiledRoute {
  route: HttpRoute;
  /** Each segment: a literal, or `{ param }`. */
  segments: (string | { param: string })[];
}

/** Finds the route of a request: 404 when no path matches, 405 (with the allowed methods) when no method does. */
export class HttpRouter {
  private readonly compiled: CompiledRoute[];

  constructor(readonly routes: readonly HttpRoute[]) {
    this.compiled = routes.map((route) => ({
      route,
      segments: splitPath(route.path).map((segment) => {
        const param = /^\{([A-Za-z][A-Za-z0-9]*)\}$/.exec(segment);
        return param ? { param: param[1] } : segment;
      }),
    }));
  }

  match(method: string, pathname: string): RouteMatch {
    const segments = splitPath(pathname);
    const wanted = method === 'HEAD' ? 'GET' : method;
    const allow = new Set<string>();
    for (const { route, segments: pattern } of this.compiled) {
      const params = matchSegments(pattern, segments);
      if (params === null) continue;
      if (route.method === wanted) return { route, params };
      allow.add(route.method);
      if (route.method === 'GET') allow.add('HEAD');
    }
    if (allow.size === 0) throw new HttpError(404, ErrorCode.NotFound, `no route ${pathname}`);
    const methods = [...allow].sort();
    throw new HttpError(
      405,
      ErrorCode.InvalidRequest,
      `${method} not allowed on ${pathname} (allowed: ${methods.join(', ')})`,
      {
        allow: methods,
      },
    );
  }
}

/** `/a/b/` and `/a/b` are the same path. */
function splitPath(path: string): string[] {
  const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  return trimmed.split('/').slice(1);
}

function matchSegments(pattern: CompiledRoute['segments'], segments: string[]): Record<string, string> | null {
  if (pattern.length !== segments.length) return null;
  const params: Record<string, string> = {};
  for (const [i, part] of pattern.entries()) {
    const segment = segments[i];
    if (typeof part === 'string') {
      if (part !== segment) return null;
    } else {
      if (segment === '') return null;
      params[part.param] = decodeSegment(segment);
    }
  }
  return params;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch (cause) {
    throw new HttpError(400, ErrorCode.InvalidRequest, `malformed percent-encoding in path segment ${segment}`, {
      cause,
    });
  }
}
