/**
 * Uses @notification-server/registry and @notification-server/client as another program would: registers an instance of a service
 * of its own, watches that service until the instance shows up, then subscribes to a running
 * notification-server and prints the first notification for its recipient.
 *
 * deno run -A main.ts [--etcd localhost:2379] [--service notification-server] [--recipient alice]
 */
import { createEtcdClient, EtcdDiscovery, EtcdRegistrar } from "@notification-server/registry";
import { subscribe } from "@notification-server/client";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    etcd: { type: "string", default: "localhost:2379" },
    service: { type: "string", default: "notification-server" },
    recipient: { type: "string", default: "alice" },
  },
});
const etcdOptions = { endpoints: values.etcd.split(","), dialTimeoutMs: 5_000 };
const etcd = createEtcdClient(etcdOptions);

// 1. Register an instance of our own service under a 10 s lease (kept alive in the background).
const registrar = new EtcdRegistrar(etcd, { leaseTtlSeconds: 10 });
const id = `example-${crypto.randomUUID().slice(0, 8)}`;
await registrar.register({ id, name: "example-greeter", addr: "127.0.0.1:50051", metadata: { v: "1" } });
console.log(`registered ${registrar.key}`);

// 2. Watch the service until our instance is in the list.
const stop = new AbortController();
for await (const instances of new EtcdDiscovery(etcd).watch("example-greeter", { signal: stop.signal })) {
  const mine = instances.find((i) => i.id === id);
  if (mine) {
    console.log(`discovered ${mine.id} ${mine.addr}`);
    stop.abort();
  }
}

// 3. Subscribe to the notification service (found through etcd) and print the first notification.
const done = new AbortController();
console.log(`subscribing to ${values.service} for ${values.recipient}`);
for await (
  const notification of subscribe({
    etcd: etcdOptions,
    name: values.service,
    recipient: values.recipient,
    signal: done.signal,
  })
) {
  console.log(`received ${notification.title}`);
  done.abort();
}

await registrar.deregister();
etcd.close();
console.log("done");
