/**
 * CORS for pages on other origins (`notification-server.http.cors.allowed-origins`): the browser
 * itself refuses a page whose origin is not listed, because no CORS header comes back for it.
 * Nothing is allowed by default; `*` allows every origin (tokens, not cookies, authenticate here).
 */
import { STREAM_HEADERS } from "./connect.ts";

const ALLOW_HEADERS = [
  "authorization",
  "content-type",
  "connect-protocol-version",
  "connect-timeout-ms",
  "grpc-timeout",
  "x-grpc-web",
  "x-user-agent",
  "last-event-id",
].join(", ");
const EXPOSE_HEADERS = ["grpc-status", "grpc-message", ...STREAM_HEADERS].join(", ");
/** How long a browser may keep a preflight's answer. */
const MAX_AGE_SECONDS = 600;

export class Cors {
  readonly #origins: ReadonlySet<string>;
  readonly #any: boolean;

  constructor(allowedOrigins: readonly string[]) {
    this.#origins = new Set(allowedOrigins.map((origin) => origin.toLowerCase()));
    this.#any = this.#origins.has("*");
  }

  /** The headers that let `origin`'s page read the response, or none. */
  headers(origin: string | null): Record<string, string> {
    if (origin === null || !(this.#any || this.#origins.has(origin.toLowerCase()))) return {};
    return {
      "access-control-allow-origin": origin,
      "access-control-expose-headers": EXPOSE_HEADERS,
      vary: "Origin",
    };
  }

  /** The answer to a preflight (OPTIONS): 204, with permission only for a listed origin. */
  preflight(request: Request): Response {
    const allowed = this.headers(request.headers.get("origin"));
    if (!allowed["access-control-allow-origin"]) {
      return new Response(null, { status: 204, headers: { vary: "Origin" } });
    }
    return new Response(null, {
      status: 204,
      headers: {
        ...allowed,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": ALLOW_HEADERS,
        "access-control-max-age": String(MAX_AGE_SECONDS),
      },
    });
  }
}
