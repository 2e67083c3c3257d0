// Real Node grpc-js clients, as short-lived callers use them (serverless functions, CLIs, probes):
// each connects, calls Health/Check once and closes its channel. grpc-js sends a GOAWAY on close.
// usage: node node_clients.cjs HOST:PORT COUNT [CONCURRENCY]
// Prints one JSON line: {"ok":N,"failed":N,"firstError":"..."}.
"use strict";
const grpc = require("@grpc/grpc-js");

const [addr, count, concurrency] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4] ?? 1)];
const encode = (x) => Buffer.from(x);
const decode = (x) => x;

function once() {
  // Its own connection: grpc-js would otherwise share one connection between clients to an address.
  const client = new grpc.Client(addr, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      encode,
      decode,
      Buffer.alloc(0),
      { deadline: Date.now() + 5000 },
      (error) => {
        client.close();
        resolve(error);
      },
    );
  });
}

(async () => {
  let next = 0;
  let ok = 0;
  let failed = 0;
  let firstError = "";
  const lane = async () => {
    while (next < count) {
      next++;
      const error = await once();
      if (error) {
        failed++;
        firstError ||= `${error.code} ${error.details}`;
      } else ok++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  console.log(JSON.stringify({ ok, failed, firstError }));
})();
