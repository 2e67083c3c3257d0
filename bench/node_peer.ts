/**
 * The benchmark's Node peer: the same grpc-js server code as the service (src/transport/server.ts, health,
 * the notification core and its gRPC handlers), bundled by `deno bundle --platform node` and run on Node. It serves on
 * 127.0.0.1:<port> (argv[2], 0 for any) without etcd, prints the port, and stops on SIGTERM.
 */
import { HealthService } from "../src/serving/health.ts";
import { NotificationCore } from "../src/notification/service.ts";
import { notificationHandlers, notificationServerDefinition } from "../src/serving/grpc_notifications.ts";
import { MeshDelivery } from "../src/mesh/mesh_delivery.ts";
import { startGrpcServer } from "../src/transport/server.ts";
import process from "node:process";

const notifications = new NotificationCore({
  delivery: new MeshDelivery({ alone: true }),
  instanceId: () => "node-peer",
});
const health = new HealthService({ "": "SERVING", "notification.v1.NotificationService": "SERVING" });
const { server, port } = await startGrpcServer({
  addr: { host: "127.0.0.1", port: Number(process.argv[2] ?? 0) },
  services: {
    notification: notificationHandlers(notifications),
    notificationDefinition: notificationServerDefinition(),
    health: health.handlers(),
  },
});
console.log(`listening ${port}`);
process.on("SIGTERM", () => {
  server.forceShutdown();
  process.exit(0);
});
