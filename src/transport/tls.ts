/**
 * TLS from `notification-server.tls`, both ways: what the server presents, and how the instances
 * (peer links) and our own clients (the CLI) dial an instance.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import type { ServerTlsConfig } from "../config/mod.ts";

/** The server's credentials: plaintext without TLS. */
export function serverCredentials(tls: ServerTlsConfig | undefined): grpc.ServerCredentials {
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
