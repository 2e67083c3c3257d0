/**
 * Client connections of one grpc-js server, and how to end them on shutdown without an HTTP/2
 * GOAWAY. grpc-js's `tryShutdown` sends every connection a GOAWAY, and a Deno client that gets one
 * can crash inside nghttp2 (denoland/deno#36788): 6 of 8 Deno clients of an instance died when it
 * drained, 0 of 8 with this (bench/README.md). So a stopping server refuses new connections, lets
 * every call on a connection finish, then ends that connection's socket (its last frames flushed,
 * then FIN): clients see the connection close with no call on it, and reconnect elsewhere. By then
 * the instance has been out of discovery for the drain delay, so no client is starting calls here.
 */
import type { Socket } from "node:net";
import { endThenDestroy } from "@notification-server/http2-guard";

/** A node:http2 server as grpc-js keeps it (the events used here). */
export interface Http2ServerEvents {
  on(event: "connection" | "secureConnection", listener: (socket: Socket) => void): unknown;
  on(event: "stream", listener: (stream: Http2StreamLike) => void): unknown;
}

/** The part of a server-side HTTP/2 stream used here. */
export interface Http2StreamLike {
  session?: { socket?: { remoteAddress?: string; remotePort?: number } } & object;
  once(event: "close", listener: () => void): unknown;
}

interface Connection {
  /** The TLS socket when there is one (ending it flushes TLS records), else the TCP socket. */
  socket: Socket;
  /** Open HTTP/2 streams: calls in progress. */
  streams: number;
  /** Whether it has started a request (a stream) yet. */
  requested: boolean;
  /** Handed out by {@link ConnectionTracker.takeOldestSilent} to make room. */
  evicted?: boolean;
}

export class ConnectionTracker {
  readonly #byPeer = new Map<string, Connection>();
  readonly #bySession = new WeakMap<object, Connection>();
  #draining = false;
  #drained = () => {};

  /** Client connections open now. */
  get size(): number {
    return this.#byPeer.size;
  }

  /** Tracks the connections and calls of `server` (call once per node:http2 server). */
  watch(server: Http2ServerEvents): void {
    const add = (socket: Socket) => {
      if (this.#draining) {
        socket.destroy(); // shutting down: connect to another instance
        return;
      }
      const key = peerKey(socket);
      const known = this.#byPeer.get(key);
      if (known) {
        known.socket = socket; // the TLS socket over the TCP one seen first
        return;
      }
      this.#byPeer.set(key, { socket, streams: 0, requested: false });
      socket.once("close", () => {
        this.#byPeer.delete(key);
        if (this.#draining && this.#byPeer.size === 0) this.#drained();
      });
    };
    server.on("connection", add);
    server.on("secureConnection", add);
    server.on("stream", (stream) => {
      // Looked up by address once per connection, not on every call.
      const session = stream.session;
      let connection = session && this.#bySession.get(session);
      if (!connection) {
        connection = this.#byPeer.get(peerKey(session?.socket ?? {}));
        if (!connection) return;
        if (session) this.#bySession.set(session, connection);
      }
      const open = connection;
      open.streams++;
      open.requested = true;
      stream.once("close", () => {
        open.streams--;
        if (this.#draining && open.streams === 0) close(open.socket);
      });
    });
  }

  /**
   * Refuses new connections from now on and ends each open one once it has no call in progress.
   * Resolves when every connection is closed.
   */
  drain(): Promise<void> {
    this.#draining = true;
    const done = new Promise<void>((resolve) => (this.#drained = resolve));
    if (this.#byPeer.size === 0) this.#drained();
    for (const connection of this.#byPeer.values()) {
      if (connection.streams === 0) close(connection.socket);
    }
    return done;
  }

  /**
   * The oldest connection that has not started a request, marked so that it is handed out once:
   * with every slot taken, it makes room for a new one (http2 silence costs a slot, not a call).
   */
  takeOldestSilent(): Socket | undefined {
    for (const connection of this.#byPeer.values()) {
      if (!connection.requested && !connection.evicted) {
        connection.evicted = true;
        return connection.socket;
      }
    }
    return undefined;
  }

  /** Whether the connection of `socket` (TCP or TLS) has started a request. */
  requested(socket: Socket): boolean {
    return this.#byPeer.get(peerKey(socket))?.requested ?? false;
  }

  /** Destroys the connection with the most open streams; false when there is none. */
  destroyLargest(): boolean {
    let largest: Connection | undefined;
    for (const connection of this.#byPeer.values()) {
      if (!largest || connection.streams > largest.streams) largest = connection;
    }
    largest?.socket.destroy();
    return largest !== undefined;
  }

  /** Destroys every connection at once (the shutdown deadline passed). */
  destroyAll(): void {
    for (const connection of this.#byPeer.values()) connection.socket.destroy();
  }
}

function peerKey(socket: { remoteAddress?: string; remotePort?: number }): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

/** Flushes what is written (our write batching holds frames until the turn ends), then FIN. */
function close(socket: Socket): void {
  endThenDestroy(socket);
}
