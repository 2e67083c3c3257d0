/**
 * HTTP/2 client sessions in this process close without a GOAWAY when no call is open on them:
 * their socket is ended (FIN) instead. grpc-js closes a session with `session.close()`, which
 * sends GOAWAY, and a Deno process that *receives* a GOAWAY can crash inside nghttp2
 * (denoland/deno#36788): an instance crashed at shutdown when its peers closed their links to it,
 * as did test processes when etcd answered their clients' GOAWAY. A session with calls still open
 * (often ones just cancelled, as a peer link is when its peer leaves) is ended once they have
 * closed, or after 5 s. Installed once per process by the modules that make HTTP/2 clients
 * (src/protos.ts, etcd_client.ts, notification_client.ts).
 */
import http2 from "node:http2";
import type { Duplex } from "node:stream";

type Connect = typeof http2.connect;
/** How long calls still open on a closing session may take before its socket is ended anyway. */
const CALLS_GRACE_MS = 5_000;
/** How long an ended socket may stay half-open before it is destroyed. */
const LINGER_MS = 1_000;
const PATCHED = Symbol.for("notification-server.http2-close");

interface Patchable {
  connect: Connect;
  [PATCHED]?: true;
}

function install(): void {
  const module = http2 as unknown as Patchable;
  if (module[PATCHED]) return;
  module[PATCHED] = true;
  const connect = module.connect;
  module.connect = function (this: unknown, authority: string | URL, ...rest: unknown[]) {
    const options = typeof rest[0] === "object" && rest[0] !== null
      ? rest[0] as http2.SecureClientSessionOptions
      : undefined;
    let socket: Duplex | undefined;
    if (options?.createConnection) {
      const create = options.createConnection;
      rest[0] = {
        ...options,
        createConnection: (...args: Parameters<typeof create>) => (socket = create(...args)),
      };
    }
    const session = (connect as (...a: unknown[]) => http2.ClientHttp2Session).call(this, authority, ...rest);
    let open = 0;
    let closing = false;
    let ended = false;
    // Ends the socket once: frames written so far are flushed, then FIN; destroyed if it lingers.
    const end = () => {
      if (ended || !socket) return;
      ended = true;
      endThenDestroy(socket, () => {
        if (!session.destroyed) session.destroy();
      });
    };
    const request = session.request.bind(session);
    session.request = ((...args: Parameters<typeof request>) => {
      const stream = request(...args);
      open++;
      stream.once("close", () => {
        open--;
        if (closing && open === 0) end();
      });
      return stream;
    }) as typeof session.request;
    const close = session.close.bind(session);
    session.close = ((callback?: () => void) => {
      if (!socket) return close(callback);
      if (callback) session.once("close", callback);
      closing = true;
      // Calls still open (often just cancelled: their RST_STREAM is on its way) finish first.
      if (open === 0) end();
      else setTimeout(end, CALLS_GRACE_MS);
    }) as typeof session.close;
    return session;
  } as Connect;
}

/**
 * Ends `socket` without a GOAWAY: what is written is flushed, then FIN; destroyed if the peer has
 * not closed within a second. `onClose` runs once it is closed. (The server's drain uses it too.)
 */
export function endThenDestroy(socket: Duplex, onClose: () => void = () => {}): void {
  socket.end();
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once("close", () => {
    clearTimeout(timer);
    onClose();
  });
}

install();
