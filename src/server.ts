/** The grpc-js server: bind (before anything is registered), add services, stop within a deadline. */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import { setImmediate } from "node:timers";
import type { ServerTlsConfig } from "./config.ts";
import { formatHostPort, type HostPort } from "./host_port.ts";
import { notificationServerDefinition, services } from "./protos.ts";
import { addReflection } from "./reflection.ts";

/** Handlers for the services this server hosts. */
export interface ServerServices {
  notification: grpc.UntypedServiceImplementation;
  health: grpc.UntypedServiceImplementation;
  /** The internal Cluster service (forwarding between instances), when clustered. */
  cluster?: grpc.UntypedServiceImplementation;
}

/** A bound, serving server and the port it got (useful with port 0). */
export interface BoundServer {
  server: grpc.Server;
  port: number;
  /** Whether frame writes are coalesced (false only if grpc-js's internals changed; see below). */
  coalescing: boolean;
  /** Whether connection limits are in force (likewise). */
  guarded: boolean;
  /** Client connections open now. */
  connections(): number;
}

/** The server could not bind its address. */
export class BindError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BindError";
  }
}

/** grpc-js's bind error in user terms ("No address added out of total 1 resolved errors: [...]"). */
function bindProblem(error: Error): string {
  const text = error.message;
  if (/EADDRINUSE/.test(text)) return "address already in use (another process listens there)";
  if (/EACCES/.test(text)) return "permission denied (ports below 1024 need privileges)";
  if (/EADDRNOTAVAIL/.test(text)) return "no such address on this machine";
  return text;
}

/** Largest request accepted; larger ones get RESOURCE_EXHAUSTED from grpc-js itself. */
export const MAX_REQUEST_BYTES = 256 * 1024;

function credentials(tls: ServerTlsConfig | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const certChain = Buffer.from(Deno.readFileSync(tls.certFile));
  const clientCa = tls.clientCaFile ? Buffer.from(Deno.readFileSync(tls.clientCaFile)) : null;
  // Without a client CA, grpc-js fills the server's `ca` with the whole system root bundle
  // (~220 KB) and Deno's TLS server then breaks the handshake ("excessive message size"). When
  // client certificates are not checked the list is unused, so give it our own certificate.
  return grpc.ServerCredentials.createSsl(
    clientCa ?? certChain,
    [{ cert_chain: certChain, private_key: Buffer.from(Deno.readFileSync(tls.keyFile)) }],
    clientCa !== null,
  );
}

/** How this instance dials its peers (cluster forwarding), or why it cannot. */
export type PeerCredentials =
  | { credentials: grpc.ChannelCredentials; serverName?: string }
  | { off: string };

/**
 * Plaintext without server TLS. With it: the peers' CA (`peer-ca-file`, else `client-ca-file`),
 * our own certificate as the client certificate (servers that require one get it), and the name
 * in every instance's certificate (`peer-server-name`; Deno's TLS refuses an IP as the name).
 */
export function peerCredentials(tls: ServerTlsConfig | undefined): PeerCredentials {
  if (!tls) return { credentials: grpc.credentials.createInsecure() };
  const ca = tls.peerCaFile ?? tls.clientCaFile;
  if (!ca) {
    return {
      off: "set notification-server.tls.peer-ca-file (the CA that signed the instances' certificates)",
    };
  }
  if (!tls.peerServerName) {
    return {
      off: "set notification-server.tls.peer-server-name (a DNS name in every instance's certificate)",
    };
  }
  return {
    credentials: grpc.credentials.createSsl(
      Buffer.from(Deno.readFileSync(ca)),
      Buffer.from(Deno.readFileSync(tls.keyFile)),
      Buffer.from(Deno.readFileSync(tls.certFile)),
    ),
    serverName: tls.peerServerName,
  };
}

/** Creates the server, adds the services and reflection, and binds `addr`. */
export async function startGrpcServer(
  addr: HostPort,
  handlers: ServerServices,
  tls?: ServerTlsConfig,
  limits: ConnectionLimits = { maxConnections: 10_000, handshakeTimeoutMs: 10_000 },
): Promise<BoundServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_REQUEST_BYTES,
    "grpc.keepalive_permit_without_calls": 1,
  });
  const { Health, Cluster } = services();
  server.addService(notificationServerDefinition(), handlers.notification);
  server.addService(Health.service, handlers.health);
  if (handlers.cluster) server.addService(Cluster.service, handlers.cluster);
  addReflection(server, [
    "notification.v1.NotificationService",
    "grpc.health.v1.Health",
    ...(handlers.cluster ? ["notification.cluster.v1.Cluster"] : []),
  ]);
  const target = formatHostPort({ host: addr.host === "" ? "0.0.0.0" : addr.host, port: addr.port });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(target, credentials(tls), (error, boundPort) => {
      if (error) {
        reject(
          new BindError(`Cannot bind gRPC server to ${target}: ${bindProblem(error)}`, { cause: error }),
        );
      } else resolve(boundPort);
    });
  });
  const open = new Set<Socket>();
  return {
    server,
    port,
    coalescing: coalesceWrites(server),
    guarded: guardConnections(server, limits, open),
    connections: () => open.size,
  };
}

/** A node:http2 server as grpc-js keeps it. */
interface ListeningServer {
  on(event: string, listener: (socket: Socket) => void): unknown;
  maxConnections?: number;
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

/** Limits on client connections; see {@link guardConnections}. */
export interface ConnectionLimits {
  /** Concurrent connections; more are closed as they arrive. */
  maxConnections: number;
  /** A connection that has sent no byte by then is closed. */
  handshakeTimeoutMs: number;
}

/**
 * Bounds what idle or abusive clients can hold: each connection costs a file descriptor, and
 * descriptors run out for etcd's reconnects first (400 silent connections under a 256-fd limit
 * kept the service from reaching etcd for 20 s). Connections that never send a byte are closed
 * after `handshakeTimeoutMs`; past `maxConnections` new ones are closed at once (node's
 * `net.Server.maxConnections`). Returns false if grpc-js's internals changed (a test pins it).
 */
function guardConnections(server: grpc.Server, limits: ConnectionLimits, open: Set<Socket>): boolean {
  const servers = listeningServers(server);
  for (const http2Server of servers) {
    http2Server.maxConnections = limits.maxConnections;
    http2Server.on("connection", (socket: Socket) => {
      open.add(socket);
      const timer = setTimeout(() => {
        if (socket.bytesRead === 0) socket.destroy();
      }, limits.handshakeTimeoutMs);
      socket.once("close", () => {
        clearTimeout(timer);
        open.delete(socket);
      });
    });
  }
  return servers.length > 0;
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
 * Refuses new calls, ends open streams via `endStreams`, lets in-flight unary calls finish, and
 * cancels whatever is left after `timeoutMs`. Returns whether it had to force.
 */
export async function stopGrpcServer(
  server: grpc.Server,
  timeoutMs: number,
  endStreams: () => void,
): Promise<"graceful" | "forced"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const graceful = new Promise<"graceful">((resolve) => server.tryShutdown(() => resolve("graceful")));
  endStreams();
  const deadline = new Promise<"forced">((resolve) => {
    timer = setTimeout(() => resolve("forced"), timeoutMs);
  });
  const outcome = await Promise.race([graceful, deadline]);
  clearTimeout(timer);
  if (outcome === "forced") server.forceShutdown();
  return outcome;
}
