/**
 * Restores the re-entrancy guard that Deno's `node:http2` lost (denoland/deno#36788; the root cause
 * is in ../shared/design/stack-findings.md, last section). Deno feeds each socket chunk to the
 * native session with `receive()`, which runs `nghttp2_session_mem_recv`. nghttp2 calls back into
 * JS before it is done with a frame; on a GOAWAY (or an unsolicited PING ACK) on a session with no
 * open stream, Deno's own handler closes the session and `destroy()` frees it right there, so
 * nghttp2 returns into freed memory: a SIGSEGV, `free(): invalid pointer` or the
 * `find_stream_on_goaway_func` assertion, at random. One Node grpc-js client closing its channel was
 * enough (every Node client sends GOAWAY on close).
 *
 * The guard wraps three methods of the native session class, once per thread (every worker is its
 * own isolate and imports this too):
 * - `receive` counts how deep we are inside nghttp2;
 * - `getOutgoingChunk` (nghttp2's send) returns nothing while inside, so nothing is sent from a
 *   callback; what it held back is flushed when `receive` returns;
 * - `destroy` inside is remembered and run once `receive` returns, after the flush (so a GOAWAY
 *   we answer with still leaves first).
 *
 * The same wrapper of `receive` is where a server session's input can be checked before nghttp2
 * sees it ({@link limitServerInput}): what is cut there never reaches nghttp2.
 *
 * It relies on Deno internals (the session handle behind a `kHandle` symbol and its method names),
 * so it checks that shape first and reports instead of guessing: {@link http2Guard} says whether
 * it is installed, the service logs one WARN line and exports `notification_server_http2_guard`
 * when it is not, and http2_guard_test.ts pins that it installs on the Deno we ship with.
 */
import http2 from "node:http2";
import { Duplex } from "node:stream";
import { setTimeout } from "node:timers";

/** Whether the guard is in force in this thread, and why not when it is not. */
export interface Http2GuardState {
  /** Whether the guard is in force in this thread. */
  installed: boolean;
  /** Set when not installed: what was expected and what was found. */
  reason?: string;
}

interface SessionHandle {
  receive(chunk: Uint8Array): unknown;
  activeStreamCount(): number;
  getOutgoingChunk(): unknown;
  destroy(...args: unknown[]): unknown;
  /** Own property set by Deno when the session is set up: writes pending chunks to the socket. */
  sendPending?: () => void;
  [DEPTH]?: number;
  [HELD]?: boolean;
  [DEFERRED]?: unknown[];
  /** The server session's input check; null for client sessions (created on first input). */
  [LIMITER]?: ConnectionInput | null;
  [CUT]?: boolean;
}

/** The JS session a native handle belongs to (Deno's `ownerSymbol`). */
interface OwnedSession {
  type?: number;
  /** A server session's node:http2 server. */
  server?: object;
  destroyed?: boolean;
  goaway(code: number, lastStreamID: number): void;
  close(): void;
  destroy(): void;
}

/**
 * Where to cut a connection: the first `pass` bytes of the chunk still reach nghttp2 (the whole
 * frames before the offending one), then a GOAWAY with `code` tells the client that streams up to
 * `lastStream` were taken; those are answered, and nothing more is read from the connection.
 */
export interface InputCut {
  /** Bytes of the chunk that still reach nghttp2. */
  pass: number;
  /** The GOAWAY's last stream id: the last request taken. */
  lastStream: number;
  /** The GOAWAY's error code (RFC 9113 §7). */
  code: number;
}

/** One server connection's input check (the service's is src/transport/http2_inbound.ts). */
export interface ConnectionInput {
  /**
   * Reads `chunk` before nghttp2 does; a cut ends the connection's input there (see
   * {@link InputCut}). `openStreams` says how many streams the session has open before the chunk.
   */
  check(chunk: Uint8Array, openStreams: () => number): InputCut | undefined;
}

/** How long the calls a cut connection had sent whole may take to be answered before it is destroyed. */
export const CUT_GRACE_MS = 2_000;
/** How often a cut connection is looked at for calls still being answered. */
const CUT_POLL_MS = 25;

/** How server sessions' input is checked: one {@link ConnectionInput} per connection. */
export interface ServerInputPolicy {
  /** A fresh check for a connection just accepted. */
  connection(): ConnectionInput;
}

const DEPTH = Symbol("http2-guard.depth");
const HELD = Symbol("http2-guard.held");
const DEFERRED = Symbol("http2-guard.deferred-destroy");
const LIMITER = Symbol("http2-guard.limiter");
const CUT = Symbol("http2-guard.cut");
/** `session.type` of a server session (NGHTTP2_SESSION_SERVER). */
const SERVER_SESSION = 0;
/** Per node:http2 server; the thread's default for servers without one of their own. */
const policies = new WeakMap<object, ServerInputPolicy>();
let threadPolicy: ServerInputPolicy | undefined;
const INSTALLED = Symbol.for("notification-server.http2-guard");
const METHODS = ["receive", "getOutgoingChunk", "destroy", "activeStreamCount"] as const;

/** Destroys deferred so far in this thread (tests read it to see the guard at work). */
let deferredDestroys = 0;

/** The prototype of Deno's native session class, read off a throwaway client session. */
function sessionPrototype(): { proto?: Record<PropertyKey, unknown>; owner?: symbol; reason?: string } {
  const socket = new Duplex({ read() {}, write: (_chunk, _encoding, done) => done() });
  let session: http2.ClientHttp2Session | undefined;
  try {
    session = http2.connect("http://127.0.0.1", { createConnection: () => socket });
    const key = Object.getOwnPropertySymbols(session).find((s) => s.description === "kHandle");
    if (!key) return { reason: "no kHandle symbol on a node:http2 session" };
    const handle = (session as unknown as Record<symbol, unknown>)[key];
    if (typeof handle !== "object" || handle === null) {
      return {
        reason: `the session's kHandle is ${handle === null ? "null" : typeof handle}, not an object`,
      };
    }
    const proto = Object.getPrototypeOf(handle) as Record<PropertyKey, unknown>;
    const missing = METHODS.filter((m) => typeof proto[m] !== "function");
    if (missing.length > 0) {
      return { reason: `the native session has no ${missing.map((m) => `"${m}"`).join(", ")} method` };
    }
    const owner = Object.getOwnPropertySymbols(handle).find((s) =>
      (handle as Record<symbol, unknown>)[s] === session
    );
    if (!owner) return { reason: "the native session has no reference back to its JS session" };
    return { proto, owner };
  } catch (error) {
    return { reason: `probing a node:http2 session failed: ${(error as Error).message}` };
  } finally {
    session?.destroy();
    socket.destroy();
  }
}

function install(): Http2GuardState {
  const found = sessionPrototype();
  const { proto, owner } = found;
  if (!proto || !owner) return { installed: false, reason: found.reason };
  if (proto[INSTALLED]) return { installed: true };
  const receive = proto.receive as SessionHandle["receive"];
  const getOutgoingChunk = proto.getOutgoingChunk as SessionHandle["getOutgoingChunk"];
  const destroy = proto.destroy as SessionHandle["destroy"];

  /** The input check of a server session's handle, made on its first input while a policy is set. */
  const limiterOf = (handle: SessionHandle): ConnectionInput | null => {
    let limiter = handle[LIMITER];
    if (limiter === undefined) {
      const session = (handle as unknown as Record<symbol, OwnedSession | undefined>)[owner];
      const policy = session?.type === SERVER_SESSION
        ? (session.server && policies.get(session.server)) ?? threadPolicy
        : undefined;
      limiter = handle[LIMITER] = policy ? policy.connection() : null;
    }
    return limiter;
  };
  /**
   * Ends the connection's input. The streams nghttp2 took are answered first (Deno creates their JS
   * streams a tick later, so a close() at once would find none and drop them), for at most
   * CUT_GRACE_MS; then a GOAWAY names the last stream taken, and the session closes. The GOAWAY
   * comes last because some clients (Python's h2) read no frame after one.
   */
  const cut = (handle: SessionHandle, how: InputCut) => {
    handle[CUT] = true;
    const session = (handle as unknown as Record<symbol, OwnedSession | undefined>)[owner];
    if (!session) return;
    const deadline = Date.now() + CUT_GRACE_MS;
    const closeWhenAnswered = () => {
      if (session.destroyed) return;
      if (handle.activeStreamCount() > 0 && Date.now() < deadline) {
        setTimeout(closeWhenAnswered, CUT_POLL_MS).unref();
        return;
      }
      try {
        session.goaway(how.code, how.lastStream);
        session.close();
      } catch {
        // Already going: destroyed below.
      }
      setTimeout(() => session.destroyed || session.destroy(), CUT_POLL_MS).unref();
    };
    queueMicrotask(closeWhenAnswered);
  };
  /** nghttp2 reads `chunk`; what it sends meanwhile is held back until it is done. */
  const inside = (handle: SessionHandle, chunk: Uint8Array): unknown => {
    handle[DEPTH] = (handle[DEPTH] ?? 0) + 1;
    try {
      return receive.call(handle, chunk);
    } finally {
      if (--handle[DEPTH]! === 0) settle(handle);
    }
  };

  proto.receive = function (this: SessionHandle, chunk: Uint8Array): unknown {
    if (this[CUT]) return undefined;
    const how = limiterOf(this)?.check(chunk, () => this.activeStreamCount());
    if (!how) return inside(this, chunk);
    const result = how.pass > 0 ? inside(this, chunk.subarray(0, how.pass)) : undefined;
    cut(this, how);
    return result;
  };
  proto.getOutgoingChunk = function (this: SessionHandle): unknown {
    if ((this[DEPTH] ?? 0) > 0) {
      this[HELD] = true;
      return undefined;
    }
    return getOutgoingChunk.call(this);
  };
  proto.destroy = function (this: SessionHandle, ...args: unknown[]): unknown {
    if ((this[DEPTH] ?? 0) > 0) {
      this[DEFERRED] = args;
      return undefined;
    }
    return destroy.apply(this, args);
  };
  /** Back outside nghttp2: send what was held back, then run a deferred destroy. */
  const settle = (handle: SessionHandle) => {
    const args = handle[DEFERRED];
    if (handle[HELD] || args) {
      handle[HELD] = false;
      try {
        handle.sendPending?.();
      } catch {
        // The socket is gone: nothing left to send to.
      }
    }
    if (args) {
      handle[DEFERRED] = undefined;
      deferredDestroys++;
      destroy.apply(handle, args);
    }
  };
  Object.defineProperty(proto, INSTALLED, { value: true });
  return { installed: true };
}

const state = install();

/**
 * Checks the input of `server`'s sessions with `next` from now on (sessions that already had input
 * keep what they had); without `server`, of every server in this thread that has no policy of its
 * own. Without the guard installed this does nothing: see {@link http2Guard}.
 */
export function limitServerInput(next: ServerInputPolicy | undefined, server?: object): void {
  if (!server) threadPolicy = next;
  else if (next) policies.set(server, next);
  else policies.delete(server);
}

/** Whether the guard is installed in this thread (installed on import). */
export function http2Guard(): Http2GuardState {
  return state;
}

/** Session destroys the guard moved out of nghttp2's callbacks in this thread. */
export function http2GuardDeferrals(): number {
  return deferredDestroys;
}
