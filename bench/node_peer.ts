/**
 * The benchmark's Node peer: the same grpc-js server code as the service (src/transport/server.ts, health,
 * notification handlers), bundled by `deno bundle --platform node` and run on Node. It serves on
 * 127.0.0.1:<port> (argv[2], 0 for any) without etcd, prints the port, and stops on SIGTERM.
 */
import { HealthService } from "../src/serving/health.ts";
import { NotificationService } from "../src/notification/service.ts";
import { notificationServerDefinition } from "../src/notification/codec.ts";
import { startGrpcServer } from "../src/transport/server.ts";
import process from "node:process";

const notifications = new NotificationService({ instanceId: "node-peer" });
const health = new HealthService({ "": "SERVING", "notification.v1.NotificationService": "SERVING" });
const { server, port } = await startGrpcServer({
  addr: { host: "127.0.0.1", port: Number(process.argv[2] ?? 0) },
  services: {
    notification: notifications.handlers(),
    notificationDefinition: notificationServerDefinition(),
    health: health.handlers(),
  },
});
console.log(`listening ${port}`);
process.on("SIGTERM", () => {
  server.forceShutdown();
  process.exit(0);
});
