/**
 * How our own clients (the CLI's send and subscribe) dial the service: as the service's instances
 * dial each other. With `notification-server.tls` configured that is TLS, trusting the instances'
 * CA (`peer-ca-file`, else `client-ca-file`) and checking `peer-server-name`, with the configured
 * certificate as the client certificate; plaintext without it.
 */
import type { Config } from "../config/mod.ts";
import { peerCredentials } from "../transport/tls.ts";
import type { DialOptions } from "@notification-server/client";

/** Throws a one-line error when the service serves TLS but the config names no CA to trust. */
export function dialOptions(config: Config): DialOptions {
  const peers = peerCredentials(config.server.tls);
  if ("off" in peers) {
    throw new Error(`The service serves TLS (${config.path}); to dial it, ${peers.off}`);
  }
  return {
    credentials: peers.credentials,
    channelOptions: peers.serverName ? { "grpc.ssl_target_name_override": peers.serverName } : {},
  };
}
