/**
 * Loads the service's protos once, for server and clients: notification.v1 (the client package's,
 * from the one loader both sides use), cluster.v1 (internal) and the standard grpc.health.v1.
 */
// The HTTP/2 crash guard and GOAWAY-free closing, in every process that speaks gRPC (see the package).
import "@notification-server/http2-guard";
import { notificationClient } from "@notification-server/client";
import * as grpc from "@grpc/grpc-js";
import { loadSync, type PackageDefinition } from "@grpc/proto-loader";
import { join } from "node:path";

/**
 * The `proto/` directory (health and cluster; notification.proto is the client package's, embedded
 * in it); `deno compile` embeds it with `--include proto`.
 */
export const PROTO_DIR = join(import.meta.dirname ?? ".", "..", "..", "proto");

let cached: PackageDefinition | undefined;

/** The package definition for health and cluster. */
function packageDefinition(): PackageDefinition {
  cached ??= loadSync(["grpc/health/v1/health.proto", "cluster.proto"], {
    includeDirs: [PROTO_DIR],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return cached;
}

type Loaded = {
  notification: { cluster: { v1: { Cluster: grpc.ServiceClientConstructor } } };
  grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
};

type Services = {
  Notification: grpc.ServiceClientConstructor;
  Health: grpc.ServiceClientConstructor;
  /** The proto's `notification.cluster.v1.Cluster` (peers' Forward), apart from the Cluster class. */
  ClusterService: grpc.ServiceClientConstructor;
};
let constructors: Services | undefined;

/** Service constructors (clients) and definitions (servers), built once. */
export function services(): Services {
  if (!constructors) {
    const loaded = grpc.loadPackageDefinition(packageDefinition()) as unknown as Loaded;
    constructors = {
      Notification: notificationClient(),
      Health: loaded.grpc.health.v1.Health,
      ClusterService: loaded.notification.cluster.v1.Cluster,
    };
  }
  return constructors;
}
