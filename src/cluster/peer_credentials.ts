/** How this instance dials its peers: the same TLS material as its own server, or plaintext without it. */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import type { ServerTlsConfig } from "../config/mod.ts";

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
