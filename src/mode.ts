/** How this instance delivers, chosen once from the config: the broker when one is set, else the mesh. */
import type { ServerConfig } from "./config/mod.ts";
import type { DeliveryMode } from "./serving/mode.ts";
import { MeshMode } from "./mesh/mode.ts";
import { BrokerMode } from "./broker/mode.ts";

/** The delivery mode for `server` (`notification-server.broker`); each thread makes its own. */
export function deliveryMode(server: ServerConfig): DeliveryMode {
  return server.broker ? new BrokerMode(server, server.broker.nats) : new MeshMode(server);
}
