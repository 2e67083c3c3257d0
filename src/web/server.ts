/**
 * The web edge (`notification-server.http`): one `Deno.serve` port per serving thread (workers share
 * it with SO_REUSEPORT, like the gRPC port) over the thread's notification core. Routes:
 *
 *   POST /notification.v1.NotificationService/{Send,SendMany,Subscribe}  Connect, gRPC-Web (connect.ts)
 *   GET  /v1/recipients/{recipient}/events                       Server-Sent Events (sse.ts)
 *   GET  /healthz, /readyz                                       probes
 *   GET  /                                                       the built-in page (page.ts)
 *
 * Bounds before any handler: header size (431), body size (413), method (405), route (404); while
 * draining, 503 (SSE: an end event). Auth, validation, limits and delivery are the core's.
 */
import { createContextValues } from "@connectrpc/connect";
import {
  type UniversalHandler,
  type UniversalServerRequest,
  universalServerResponseToFetch,
} from "@connectrpc/connect/protocol";
import { formatHostPort } from "@notification-server/registry";
import type { HttpConfig, ServerTlsConfig } from "../config/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Caller, NotificationCore } from "../notification/service.ts";
import { BindError } from "../transport/server.ts";
import { connectHandlers, PEER, plainSend } from "./connect.ts";
import { Cors } from "./cors.ts";
import { refusal, WWW_AUTHENTICATE } from "./errors.ts";
import { PAGE_HTML } from "./page.ts";
import { KeepAlive, reconnectLater, serveEvents } from "./sse.ts";

const EVENTS_ROUTE = /^\/v1\/recipients\/([^/]+)\/events$/;
/** What each HTTP/1.1 and HTTP/2 header costs beside its name and value (as HPACK counts it). */
const HEADER_OVERHEAD = 32;

/** A bound HTTP port. */
export interface HttpEdge {
  readonly port: number;
  /** Refuses new requests (503) and waits up to `timeoutMs` for those in flight (streams end first). */
  drain(timeoutMs: number): Promise<"graceful" | "forced">;
  /** Stops at once (a failed start-up). */
  abort(): void;
}

export interface HttpEdgeOptions {
  http: HttpConfig;
  tls?: ServerTlsConfig;
  core: NotificationCore;
  /** Whether `/readyz` answers 200: the notification service is SERVING (joined, broker reachable). */
  ready: () => boolean;
  /** Largest request header section, HPACK-counted (`max-header-list-size`, as for gRPC). */
  maxHeaderListBytes: number;
  metrics?: Metrics;
  /** The port to bind (workers: the one the first bound); `http.addr`'s by default. */
  port?: number;
  reusePort?: boolean;
}

type Info = Deno.ServeHandlerInfo<Deno.NetAddr>;
type Route =
  | "send"
  | "send_many"
  | "subscribe"
  | "events"
  | "healthz"
  | "readyz"
  | "page"
  | "preflight"
  | "other";
/** The metrics' route of each Connect and gRPC-Web method. */
const RPC_ROUTES: Record<string, Route> = { Send: "send", SendMany: "send_many", Subscribe: "subscribe" };

/** Binds the HTTP port and serves it; throws a {@link BindError} if it cannot. */
export function startHttp(options: HttpEdgeOptions): Promise<HttpEdge> {
  const { http, core, metrics } = options;
  const cors = new Cors(http.allowedOrigins);
  const handlers = connectHandlers(core, { maxBodyBytes: http.maxBodyBytes });
  const rpcs = new Map(handlers.map((handler) => [handler.requestPath, handler]));
  let draining = false;
  const sse = { retryMs: http.sseRetryMs, keepAlive: new KeepAlive(http.sseKeepaliveMs) };
  const onSse = (delta: 1 | -1) => metrics?.sseStreams.inc(delta);

  /** Connect and gRPC-Web: a plain Send answered here, everything else by the router. */
  const rpc = async (request: Request, info: Info, handler: UniversalHandler): Promise<[Route, Response]> => {
    const name = RPC_ROUTES[handler.requestPath.slice(handler.requestPath.lastIndexOf("/") + 1)] ?? "other";
    if (request.method !== "POST") return [name, notAllowed(request.method, "POST")];
    const length = Number(request.headers.get("content-length") ?? 0);
    if (length > http.maxBodyBytes) {
      const reason =
        `request body is ${length} bytes; the limit is ${http.maxBodyBytes} (http.max-body-size)`;
      return [name, refusal(413, "resource_exhausted", reason)];
    }
    const plain = name === "send" ? plainSend(core, request, peerOf(info)) : undefined;
    if (plain) return [name, await plain];
    const answer = await handler(universalRequest(request, goneSignal(info), peerOf(info)));
    return [name, refusalWithReason(universalServerResponseToFetch(answer), request)];
  };

  /** Server-Sent Events for the recipient in the path. */
  const events = async (request: Request, info: Info, url: URL, encoded: string): Promise<Response> => {
    if (request.method !== "GET") return notAllowed(request.method, "GET");
    const caller = sseCaller(request, url, peerOf(info));
    if (typeof caller === "string") return refusal(400, "invalid_argument", caller);
    let recipient: string;
    try {
      recipient = decodeURIComponent(encoded);
    } catch {
      return refusal(400, "invalid_argument", "the recipient in the path is not valid percent-encoding");
    }
    return await serveEvents(core, caller, recipient, request, goneSignal(info), sse, onSse);
  };

  const route = async (request: Request, info: Info): Promise<[Route, Response]> => {
    const url = new URL(request.url);
    const path = url.pathname;
    if (path === "/healthz") return ["healthz", new Response("ok\n")];
    if (path === "/readyz") {
      return draining || !options.ready()
        ? ["readyz", new Response("not ready\n", { status: 503 })]
        : ["readyz", new Response("ready\n")];
    }
    if (draining) {
      // EventSource gives up on an error status, so a reconnect that reaches us now is told to
      // come back later (elsewhere, behind a load balancer), on a new connection.
      if (EVENTS_ROUTE.test(path)) return ["events", reconnectLater(sse.retryMs)];
      return ["other", refusal(503, "unavailable", "Server is shutting down", { connection: "close" })];
    }
    if (request.method === "OPTIONS") return ["preflight", cors.preflight(request)];
    const tooLarge = headerProblem(request, options.maxHeaderListBytes);
    if (tooLarge) return ["other", refusal(431, "resource_exhausted", tooLarge)];
    const handler = rpcs.get(path);
    if (handler) return await rpc(request, info, handler);
    const recipient = EVENTS_ROUTE.exec(path)?.[1];
    if (recipient !== undefined) return ["events", await events(request, info, url, recipient)];
    if (path === "/" && http.page) {
      if (request.method !== "GET") return ["page", notAllowed(request.method, "GET")];
      return ["page", new Response(PAGE_HTML, { headers: { "content-type": "text/html; charset=utf-8" } })];
    }
    return ["other", refusal(404, "not_found", `no route for ${request.method} ${path.slice(0, 200)}`)];
  };

  const handler = async (request: Request, info: Info): Promise<Response> => {
    const [name, response] = await route(request, info);
    for (const [key, value] of Object.entries(cors.headers(request.headers.get("origin")))) {
      response.headers.set(key, value);
    }
    if (response.status === 401) response.headers.set("www-authenticate", WWW_AUTHENTICATE);
    metrics?.httpRequests.inc({ route: name, code: String(response.status) });
    return response;
  };

  return new Promise((resolve, reject) => {
    const addr = { host: http.addr.host, port: options.port ?? http.addr.port };
    try {
      const tls = options.tls
        ? {
          cert: Deno.readTextFileSync(options.tls.certFile),
          key: Deno.readTextFileSync(options.tls.keyFile),
        }
        : {};
      const server = Deno.serve({
        hostname: addr.host === "" ? "0.0.0.0" : addr.host,
        port: addr.port,
        reusePort: options.reusePort,
        ...tls,
        onListen: ({ port }) =>
          resolve({
            port,
            drain: async (timeoutMs) => {
              draining = true;
              let timer: ReturnType<typeof setTimeout> | undefined;
              const forced = new Promise<"forced">((done) =>
                timer = setTimeout(() => done("forced"), timeoutMs)
              );
              const outcome = await Promise.race([server.shutdown().then(() => "graceful" as const), forced]);
              clearTimeout(timer);
              return outcome;
            },
            abort: () => void server.shutdown(),
          }),
        onError: () => refusal(500, "internal", "internal error"),
      }, handler);
    } catch (error) {
      reject(BindError.of(addr, error as Error, "the HTTP port"));
    }
  });
}

/** The caller's address, `host:port`. */
function peerOf(info: Info): string {
  return formatHostPort({ host: info.remoteAddr.hostname, port: info.remoteAddr.port });
}

/**
 * Aborts when the client goes away before its response is done. Not request.signal: Deno aborts
 * that on successful responses too, and warns once it is read.
 */
function goneSignal(info: Info): AbortSignal {
  const gone = new AbortController();
  info.completed.catch(() => gone.abort());
  return gone.signal;
}

/** The request as the Connect router takes it, told of the caller and of a client that left. */
function universalRequest(request: Request, gone: AbortSignal, peer: string): UniversalServerRequest {
  return {
    httpVersion: "",
    method: request.method,
    url: request.url,
    header: request.headers,
    body: request.body ?? (async function* () {})(),
    signal: gone,
    contextValues: createContextValues().set(PEER, peer),
  };
}

/** The router answers a wrong content type with a bare 415: it gets its one line here. */
function refusalWithReason(response: Response, request: Request): Response {
  if (response.status !== 415) return response;
  const type = request.headers.get("content-type") ?? "none";
  return refusal(
    415,
    "unimplemented",
    `content-type ${
      JSON.stringify(type.slice(0, 100))
    } is not served here: use application/json or application/proto (Connect), application/grpc-web+proto (gRPC-Web)`,
  );
}

function notAllowed(method: string, allowed: string): Response {
  return refusal(405, "unimplemented", `${method.slice(0, 20)} is not allowed here; use ${allowed}`, {
    allow: allowed,
  });
}

/** What is too large about the request's headers, or undefined. */
function headerProblem(request: Request, maxBytes: number): string | undefined {
  let bytes = 0;
  for (const [name, value] of request.headers) bytes += name.length + value.length + HEADER_OVERHEAD;
  return bytes > maxBytes
    ? `request headers are ${bytes} bytes; the limit is ${maxBytes} (max-header-list-size)`
    : undefined;
}

/**
 * The SSE caller: EventSource cannot set headers, so its token may come as `access_token` in the
 * query (RFC 6750 §2.3; never logged). Both at once is a bad request, as the RFC says.
 */
function sseCaller(request: Request, url: URL, peer: string): Caller | string {
  const header = request.headers.get("authorization") ?? undefined;
  const token = url.searchParams.get("access_token");
  if (token !== null && header !== undefined) {
    return "send the token once: in the Authorization header or as access_token, not both";
  }
  return { authorization: token !== null ? `Bearer ${token}` : header, peer };
}
