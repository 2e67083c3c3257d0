/** The grpc-js server: bind (before anything is registered), add services, stop within a deadline. */
import { limitServerInput, type ServerInputPolicy } from "@notification-server/http2-guard";
import { type CutReason, InboundLimiter, type InboundLimits } from "./http2_inbound.ts";
import { MemoryPressure } from "./memory_pressure.ts";
import * as grpc from "@grpc/grpc-js";
import * as net from "node:net";
import type { Socket } from "node:net";
import { setImmediate } from "node:timers";
import type { ServerTlsConfig } from "../config/mod.ts";
import { serverCredentials } from "./tls.ts";
import { ConnectionTracker, type Http2ServerEvents } from "./drain.ts";
import { type Limit, LocalLimit } from "../_util/limits.ts";
import { DEFAULTS } from "../config/defaults.ts";
import { formatHostPort, type HostPort } from "@notification-server/registry";
import { services } from "./protos.ts";
import { addReflection } from "./reflection.ts";

/** Handlers for the services this server hosts. */
export interface ServerServices {
  notification: grpc.UntypedServiceImplementation;
  /**
   * The NotificationService definition to serve `notification` with: the one with the codec's checks
   * (serving/grpc_notifications.ts). The plain generated one when absent.
   */
  notificationDefinition?: grpc.ServiceDefinition;
  health: grpc.UntypedServiceImplementation;
  /** The internal Cluster service (forwarding between instances); served, never listed by reflection. */
  cluster?: grpc.UntypedServiceImplementation;
}

/** A bound, serving server and the port it got (useful with port 0). */
export interface BoundServer {
  server: grpc.Server;
  port: number;
  /** Whether frame writes are coalesced (false only if grpc-js's internals changed; see below). */
  coalescing: boolean;
  /** Client connections open now. */
  connections(): number;
  /** Open connections and their calls, for a shutdown without GOAWAY (see drain.ts). */
  tracker: ConnectionTracker;
  /** Stops accepting connections (with workers, the others still do); open ones are left alone. */
  stopListening(): Promise<void>;
}

/** The server could not bind its address. */
export class BindError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BindError";
  }

  /** The one line for failing to bind `what` (the gRPC server, or the HTTP port) to `addr` because of `cause`. */
  static of(addr: HostPort, cause: Error, what = "gRPC server"): BindError {
    return new BindError(`Cannot bind ${what} to ${bindTarget(addr)}: ${bindProblem(cause)}`, { cause });
  }
}

/**
 * A bind error in user terms: grpc-js's ("No address added out of total 1 resolved errors:
 * [...EADDRINUSE...]"), node:net's (code EADDRINUSE) or Deno's ("Address already in use (os error 98)").
 */
function bindProblem(error: Error): string {
  const text = `${(error as { code?: string }).code ?? ""} ${error.message}`;
  if (/EADDRINUSE|os error 98\b/.test(text)) return "address already in use (another process listens there)";
  if (/EACCES|os error 13\b/.test(text)) return "permission denied (ports below 1024 need privileges)";
  if (/EADDRNOTAVAIL|os error 99\b/.test(text)) return "no such address on this machine";
  return error.message;
}

/** Largest request accepted; larger ones get RESOURCE_EXHAUSTED from grpc-js itself. */
export const MAX_REQUEST_BYTES = 256 * 1024;

/** Streams one connection may refuse (over max-concurrent-streams) before it is cut (Node's default). */
const MAX_REFUSED_STREAMS = 100;

/** What grpc-js hands node:http2 when it creates its server (private; grpc-js is pinned). */
interface WithHttp2Options {
  commonServerOptions?: { settings?: Record<string, number> };
}

/**
 * A grpc-js server with our services and reflection, not yet bound. Every connection's input is
 * checked against `limits` before nghttp2 sees it (http2_guard.ts, http2_inbound.ts); the stream
 * and header limits are also advertised in SETTINGS, so well-behaved clients never meet the cut.
 */
function createServer(handlers: ServerServices, limits: StreamLimits): grpc.Server {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_REQUEST_BYTES,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_concurrent_streams": limits.maxConcurrentStreams,
  });
  const options = (server as unknown as WithHttp2Options).commonServerOptions;
  if (options) options.settings = { ...options.settings, maxHeaderListSize: limits.maxHeaderListBytes };
  const { Notification, Health, ClusterService } = services();
  server.addService(handlers.notificationDefinition ?? Notification.service, handlers.notification);
  server.addService(Health.service, handlers.health);
  if (handlers.cluster) server.addService(ClusterService.service, handlers.cluster);
  // The Cluster service is internal: served for peers, never listed.
  addReflection(server, ["notification.v1.NotificationService", "grpc.health.v1.Health"]);
  return server;
}

function bindTarget(addr: HostPort): string {
  return formatHostPort({ host: addr.host === "" ? "0.0.0.0" : addr.host, port: addr.port });
}

/** Limits of {@link startGrpcServer}: per connection, and on connections. */
export interface ServeLimits extends StreamLimits {
  /** Concurrent connections (the instance's: workers share one counter). */
  connections: Limit;
  /** A connection that has not started a request by then is closed, whatever bytes it sent. */
  handshakeTimeoutMs: number;
}

/** {@link ServeLimits} for one thread from the config's defaults: servers built without a config. */
function defaultLimits(): ServeLimits {
  const { handshakeTimeoutMs, maxConcurrentStreams, maxHeaderListBytes } = DEFAULTS;
  return {
    handshakeTimeoutMs,
    maxConcurrentStreams,
    maxHeaderListBytes,
    connections: new LocalLimit(DEFAULTS.maxConnections),
  };
}

/**
 * Creates the server and binds `addr` with our own listener feeding grpc-js through a connection
 * injector: one start path for one thread and for workers (`reusePort`: each worker binds the
 * same port and the kernel spreads connections over them). Refuses connections past
 * `limits.connections` and closes those that start no request within the handshake timeout.
 */
export async function startGrpcServer(options: {
  addr: HostPort;
  services: ServerServices;
  tls?: ServerTlsConfig;
  /** @default the config's defaults, one thread's connection bound */
  limits?: ServeLimits;
  /** Workers bind the same port (SO_REUSEPORT); the kernel spreads connections over them. */
  reusePort?: boolean;
}): Promise<BoundServer> {
  const { addr, services: handlers, tls, limits = defaultLimits() } = options;
  const server = createServer(handlers, limits);
  const injector = server.createConnectionInjector(serverCredentials(tls));
  const tracker = track(server);
  const pressure = new MemoryPressure({
    shedLargest: () => {
      const cut = tracker.destroyLargest();
      if (cut) limits.onCut?.("memory");
      return cut;
    },
    onPressure: (active, fraction) => limits.onPressure?.(active, fraction),
  });
  const inbound: InboundLimits = {
    ...limits,
    maxRefusedStreams: MAX_REFUSED_STREAMS,
    streamsOpened: (n) => pressure.streamsOpened(n),
  };
  const policy: ServerInputPolicy = {
    connection: () => {
      const limiter = new InboundLimiter(inbound);
      return {
        check: (chunk, openStreams) => {
          const cut = limiter.check(chunk, openStreams);
          if (cut) limits.onCut?.(cut.reason);
          return cut;
        },
      };
    },
  };
  // The injector's node:http2 server, so servers in one thread keep their own limits; the whole
  // thread's should grpc-js's internals change (then coalescing is off too, and a test says so).
  const http2Servers = listeningServers(server);
  if (http2Servers.length === 0) limitServerInput(policy);
  for (const http2Server of http2Servers) limitServerInput(policy, http2Server);
  const admit = (socket: Socket) => {
    limits.onAccept?.();
    closeIfNoRequest(socket, tracker, limits);
    injector.injectConnection(socket);
  };
  const refuse = (socket: Socket) => {
    socket.destroy();
    limits.onCut?.("max_connections");
  };
  const listener = net.createServer((socket) => {
    if (limits.connections.tryAcquire()) return admit(socket);
    // Every slot taken: a connection that has not started a request gives its slot to this one,
    // so silent connections can delay new clients but never lock them out.
    const silent = tracker.takeOldestSilent();
    if (!silent) return refuse(socket);
    // Its slot is given back when its TCP socket closes, which a TLS socket's close may precede.
    silent.once("close", () =>
      setTimeout(() => {
        if (!socket.destroyed && limits.connections.tryAcquire()) admit(socket);
        else refuse(socket);
      }, 0));
    silent.destroy();
    limits.onCut?.("no_request");
  });
  await new Promise<void>((resolve, reject) => {
    listener.once("error", (error) => reject(BindError.of(addr, error)));
    listener.listen(
      {
        host: addr.host === "" ? "0.0.0.0" : addr.host,
        port: addr.port,
        reusePort: options.reusePort ?? false,
      } as net.ListenOptions,
      () => resolve(),
    );
  });
  let listening = true;
  return {
    server,
    port: (listener.address() as net.AddressInfo).port,
    // The injector's node:http2 server is in grpc-js's list, so the write batching applies.
    coalescing: coalesceWrites(server),
    connections: () => tracker.size,
    tracker,
    stopListening: () =>
      new Promise((resolve) => {
        if (!listening) return resolve();
        listening = false;
        pressure.stop();
        listener.close(() => resolve());
      }),
  };
}

/**
 * Throws a {@link BindError} unless `addr` (a fixed port) is free, before workers share it with
 * {@link startGrpcServer}'s `reusePort`. It is bound here for a moment without SO_REUSEPORT: that
 * fails while anything listens there, even another instance's workers, which the workers' own
 * binds (with SO_REUSEPORT) would silently join.
 */
export function checkPortFree(addr: HostPort, what?: string): void {
  try {
    Deno.listen({ hostname: addr.host === "" ? "0.0.0.0" : addr.host, port: addr.port }).close();
  } catch (error) {
    throw BindError.of(addr, error as Error, what);
  }
}

/** A node:http2 server as grpc-js keeps it. */
interface ListeningServer {
  on(event: string, listener: (socket: Socket) => void): unknown;
}

/** The part of grpc-js's private state used here (grpc-js is pinned). */
interface WithHttp2Servers {
  http2Servers?: Map<ListeningServer, unknown>;
}

/**
 * Deno's `node:http2` writes every HTTP/2 frame with its own syscall: a unary response is three
 * (headers, data, trailers), and that write path was 36% of the server's CPU under load. Corking
 * each connection until the immediate phase of the event loop sends everything written in one
 * turn in one write: all the responses to a batch of requests read together, not only the frames
 * of one response (uncorking on the next tick did only that: one write per response, 16x the
 * syscalls and 20% more CPU per call). Numbers in bench/README.md.
 * Without grpc-js's `http2Servers` (another version) this does nothing and returns false; a test
 * pins it to true.
 */
function coalesceWrites(server: grpc.Server): boolean {
  const servers = listeningServers(server);
  for (const http2Server of servers) {
    http2Server.on("connection", batchWritesPerTurn);
    http2Server.on("secureConnection", batchWritesPerTurn);
  }
  return servers.length > 0;
}

/** grpc-js's node:http2 servers behind `server` (none if its internals changed). */
function listeningServers(server: grpc.Server): ListeningServer[] {
  const servers = (server as unknown as WithHttp2Servers).http2Servers;
  return servers instanceof Map ? [...servers.keys()] : [];
}

/** What one connection may hold (see {@link createServer}). */
export interface StreamLimits {
  /** Streams open at once on one connection. */
  maxConcurrentStreams: number;
  /** Decoded size of one request's headers, in bytes (HPACK sizes). */
  maxHeaderListBytes: number;
  /** Told each time a connection is accepted. */
  onAccept?(): void;
  /** Told each time a connection is cut for going over one of these. */
  onCut?(reason: CutReason): void;
  /** Told when the heap passes the shedding mark (true) and is back under it (false). */
  onPressure?(active: boolean, heapFraction: number): void;
}

/** A tracker of `server`'s connections and calls (on every node:http2 server grpc-js has now). */
function track(server: grpc.Server): ConnectionTracker {
  const tracker = new ConnectionTracker();
  for (const http2Server of listeningServers(server)) {
    tracker.watch(http2Server as unknown as Http2ServerEvents);
  }
  return tracker;
}

/**
 * Closes `socket` unless it has started a request within the handshake timeout (a TLS handshake,
 * a preface or a trickle of bytes is not enough: each would hold a connection slot for ever), and
 * gives its slot back once it closes.
 */
function closeIfNoRequest(socket: Socket, tracker: ConnectionTracker, limits: ServeLimits): void {
  const timer = setTimeout(() => {
    if (tracker.requested(socket)) return;
    socket.destroy();
    limits.onCut?.("no_request");
  }, limits.handshakeTimeoutMs);
  socket.once("close", () => {
    clearTimeout(timer);
    limits.connections.release();
  });
}

const batched = new WeakSet<Socket>();

/**
 * Holds everything written to `socket` during one turn of the event loop and sends it in one
 * write in the immediate phase (see {@link coalesceWrites}). Applying it twice is harmless.
 */
export function batchWritesPerTurn(socket: Socket): void {
  if (batched.has(socket)) return;
  batched.add(socket);
  const write = socket.write.bind(socket);
  let corked = false;
  socket.write = ((...args: Parameters<Socket["write"]>) => {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(() => {
        corked = false;
        socket.uncork();
      });
    }
    return write(...args);
  }) as Socket["write"];
}

/**
 * Refuses new connections, ends open streams via `endStreams`, lets in-flight unary calls finish,
 * closes each connection once it has no call left (without a GOAWAY: see drain.ts), and cancels
 * whatever is left after `timeoutMs`. Returns whether it had to force.
 */
export async function stopGrpcServer(
  bound: BoundServer,
  timeoutMs: number,
  endStreams: () => void,
): Promise<"graceful" | "forced"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closing = bound.stopListening();
  const drained = bound.tracker.drain().then(() => "graceful" as const);
  endStreams();
  const deadline = new Promise<"forced">((resolve) => {
    timer = setTimeout(() => resolve("forced"), timeoutMs);
  });
  const outcome = await Promise.race([drained, deadline]);
  clearTimeout(timer);
  await closing;
  if (outcome === "forced") bound.tracker.destroyAll();
  // Closes the listener and grpc-js's own state; no connection is left to send a GOAWAY to.
  bound.server.forceShutdown();
  return outcome;
}
