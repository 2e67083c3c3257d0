/** Loads our protos (notification.v1 and the standard grpc.health.v1) once, for server and clients. */
import * as grpc from "@grpc/grpc-js";
import { loadSync, type PackageDefinition } from "@grpc/proto-loader";
import { join } from "node:path";

/** The `proto/` directory; `deno compile` embeds it with `--include proto`. */
export const PROTO_DIR = join(import.meta.dirname ?? ".", "..", "proto");

let cached: PackageDefinition | undefined;

/** The package definition for both protos (also what reflection describes). */
export function packageDefinition(): PackageDefinition {
  cached ??= loadSync(["notification.proto", "grpc/health/v1/health.proto"], {
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
  notification: { v1: { NotificationService: grpc.ServiceClientConstructor } };
  grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
};

type Services = { Notification: grpc.ServiceClientConstructor; Health: grpc.ServiceClientConstructor };
let constructors: Services | undefined;

/** Service constructors (clients) and definitions (servers), built once. */
export function services(): Services {
  if (!constructors) {
    const loaded = grpc.loadPackageDefinition(packageDefinition()) as unknown as Loaded;
    constructors = {
      Notification: loaded.notification.v1.NotificationService,
      Health: loaded.grpc.health.v1.Health,
    };
  }
  return constructors;
}
