/**
 * HTTP/2 client sessions in this process close without a GOAWAY when no call is open on them:
 * their socket is ended (FIN) instead. grpc-js closes a session with `session.close()`, which
 * sends GOAWAY, and a Deno process that *receives* a GOAWAY can crash inside nghttp2
 * (denoland/deno#36788): an instance crashed at shutdown when its peers closed their links to it,
 * as did test processes when etcd answered their clients' GOAWAY. A session with calls still open
 * closes the usual way. Installed once per process by importing this module (main.ts, mod.ts).
 */
import http2 from "node:http2";
import type { Duplex } from "node:stream";

type Connect = typeof http2.connect;
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
    const request = session.request.bind(session);
    session.request = ((...args: Parameters<typeof request>) => {
      const stream = request(...args);
      open++;
      stream.once("close", () => open--);
      return stream;
    }) as typeof session.request;
    const close = session.close.bind(session);
    session.close = ((callback?: () => void) => {
      if (!socket || open > 0) return close(callback);
      if (callback) session.once("close", callback);
      socket.end();
      const timer = setTimeout(() => socket?.destroy(), 1_000);
      socket.once("close", () => {
        clearTimeout(timer);
        if (!session.destroyed) session.destroy();
      });
    }) as typeof session.close;
    return session;
  } as Connect;
}

install();
