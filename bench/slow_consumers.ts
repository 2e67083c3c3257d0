/**
 * Memory with subscribers that never read: `subscribers` Subscribe streams over bare HTTP/2 that
 * stop reading at once (flow control then holds the server's writes back), while Sends flood
 * their recipient with `bodyKb` notifications for `seconds`. Reports the service's RSS before and
 * at the end, how many streams were cut off as too slow, and the Send rate meanwhile.
 *
 * `deno run -A bench/slow_consumers.ts [--subscribers N] [--seconds S] [--body-kb K]`
 */
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import { parseArgs } from "node:util";
import { startEtcd } from "@notification-server/registry/testing";
import { notificationClient, send } from "../tests/helpers/grpc.ts";
import { ServiceProcess } from "../tests/helpers/service.ts";
import { rssMiB } from "../tests/helpers/proc.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    subscribers: { type: "string", default: "1000" },
    seconds: { type: "string", default: "10" },
    "body-kb": { type: "string", default: "4" },
  },
});
const subscribers = Number(values.subscribers);
await using etcd = await startEtcd();
await using svc = await ServiceProcess.start({
  endpoints: etcd.endpoints,
  maxSubscribers: subscribers + 10,
  workers: 1,
});
await new Promise((r) => setTimeout(r, 1_000));
const idle = rssMiB(svc.pid);

// 100 streams per connection, as a client library would multiplex them.
const sessions: http2.ClientHttp2Session[] = [];
const message = [0x0a, 5, ...new TextEncoder().encode("flood")];
for (let i = 0; i < subscribers; i++) {
  if (i % 100 === 0) sessions.push(http2.connect(`http://${svc.addr}`));
  const stream = sessions.at(-1)!.request({
    ":method": "POST",
    ":path": "/notification.v1.NotificationService/Subscribe",
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.on("error", () => {});
  stream.end(Buffer.from([0, 0, 0, 0, message.length, ...message]));
  stream.pause(); // never reads
}
const client = notificationClient(svc.addr);
const body = "x".repeat(Number(values["body-kb"]) * 1024);
let sent = 0;
let firstDelivered = -1;
let allCutAfter = -1;
const started = Date.now();
let peak = idle;
const until = Date.now() + Number(values.seconds) * 1000;
const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(svc.pid))), 200);
while (Date.now() < until) {
  const answers = await Promise.all(
    Array.from(
      { length: 8 },
      () => send(client, { recipient: "flood", title: "f", body }).catch(() => undefined),
    ),
  );
  sent += 8;
  const delivered = Math.max(...answers.map((a) => a?.delivered ?? 0));
  if (firstDelivered < 0) firstDelivered = delivered;
  if (delivered === 0 && allCutAfter < 0) allCutAfter = Date.now() - started;
}
clearInterval(sampler);
const end = rssMiB(svc.pid);
console.log(
  `${subscribers} subscribers that never read, ${sent} Sends of ${
    values["body-kb"]
  } KB in ${values.seconds} s: ` +
    `RSS idle ${idle.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB, end ${end.toFixed(0)} MiB; ` +
    `the first Sends reached ${firstDelivered} streams; ` +
    (allCutAfter >= 0
      ? `every stream was cut off as too slow after ${allCutAfter} ms`
      : `some streams still open`),
);
client.close();
for (const s of sessions) s.destroy();
Deno.exit(0);
