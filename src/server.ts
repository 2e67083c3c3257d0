/** The grpc-js server: bind (before anything is registered), add services, stop within a deadline. */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import { setImmediate } from "node:timers";
import { ReflectionService } from "@grpc/reflection";
import type { ServerTlsConfig } from "./config.ts";
import { formatHostPort, type HostPort } from "./host_port.ts";
import { packageDefinition, services } from "./protos.ts";

/** Handlers for the services this server hosts. */
export interface ServerServices {
  notification: grpc.UntypedServiceImplementation;
  health: grpc.UntypedServiceImplementation;
}

/** A bound, serving server and the port it got (useful with port 0). */
export interface BoundServer {
  server: grpc.Server;
  port: number;
  /** Whether frame writes are coalesced (false only if grpc-js's internals changed; see below). */
  coalescing: boolean;
}

/** The server could not bind its address. */
export class BindError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BindError";
  }
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

/** Creates the server, adds the services and reflection, and binds `addr`. */
export async function startGrpcServer(
  addr: HostPort,
  handlers: ServerServices,
  tls?: ServerTlsConfig,
): Promise<BoundServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_REQUEST_BYTES,
    "grpc.keepalive_permit_without_calls": 1,
  });
  const { Notification, Health } = services();
  server.addService(Notification.service, handlers.notification);
  server.addService(Health.service, handlers.health);
  new ReflectionService(packageDefinition()).addToServer(server);
  const target = formatHostPort({ host: addr.host === "" ? "0.0.0.0" : addr.host, port: addr.port });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(target, credentials(tls), (error, boundPort) => {
      if (error) {
        reject(new BindError(`Cannot bind gRPC server to ${target}: ${error.message}`, { cause: error }));
      } else resolve(boundPort);
    });
  });
  return { server, port, coalescing: coalesceWrites(server) };
}

/** The part of grpc-js's private state used by {@link coalesceWrites} (grpc-js is pinned). */
interface WithHttp2Servers {
  http2Servers?: Map<{ on(event: string, listener: (socket: Socket) => void): unknown }, unknown>;
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
  const servers = (server as unknown as WithHttp2Servers).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  for (const http2Server of servers.keys()) {
    http2Server.on("connection", batchWritesPerTurn);
    http2Server.on("secureConnection", batchWritesPerTurn);
  }
  return true;
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
