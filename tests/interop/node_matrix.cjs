// Node's own grpc-js calling as Node services call each other: one channel (one connection) for
// every pattern in turn, each call with a deadline, and per-call request ids, binary metadata, many
// keys or large fixed metadata; concurrent callers; a Subscribe held open beside unary calls.
// The patterns are the same in go_client (matrix) and python_matrix.py: see tests/interop_test.ts.
// usage: node node_matrix.cjs HOST:PORT PATTERN...
// Prints one JSON line per pattern: {"pattern":P,"ok":N,"failed":N,"firstError":"...","open":bool}.
"use strict";
const grpc = require("@grpc/grpc-js");
const { randomUUID, randomBytes } = require("node:crypto");

const [addr, ...patterns] = process.argv.slice(2);
const client = new grpc.Client(addr, grpc.credentials.createInsecure());
const identity = (x) => x;

function field(number, text) {
  const data = Buffer.from(text);
  return Buffer.concat([Buffer.from([(number << 3) | 2, data.length]), data]);
}
/** Notification.title (field 3) of an encoded Notification. */
function title(message) {
  for (let i = 0; i < message.length;) {
    const key = message[i++];
    let value = 0;
    for (let shift = 0;; shift += 7) {
      const byte = message[i++];
      value += (byte & 0x7f) * 2 ** shift;
      if (!(byte & 0x80)) break;
    }
    if ((key & 7) !== 2) continue;
    if (key >> 3 === 3) return message.subarray(i, i + value).toString();
    i += value;
  }
  return "";
}
const sendRequest = (recipient, title) => Buffer.concat([field(1, recipient), field(2, title)]);

/** Metadata of `bytes` decoded (HPACK: name + value + 32 per field) in `fields` fields. */
function fixed(bytes, fields) {
  const md = new grpc.Metadata();
  let left = bytes;
  for (let i = 0; i < fields; i++) {
    const name = `x-fixed-${i}`;
    const size = i === fields - 1 ? left : Math.floor(bytes / fields);
    md.set(name, "v".repeat(size - name.length - 32));
    left -= size;
  }
  return () => md.clone();
}

/** Per-call metadata of each pattern, and how many calls by how many callers. */
function plan(pattern) {
  const [kind, a, b] = pattern.split(":");
  switch (kind) {
    case "deadline":
      return { calls: Number(a), callers: 1, metadata: () => new grpc.Metadata() };
    case "request-id":
      return {
        calls: Number(a),
        callers: 1,
        metadata: () => {
          const md = new grpc.Metadata();
          md.set("x-request-id", randomUUID());
          return md;
        },
      };
    case "binary":
      return {
        calls: Number(a),
        callers: 1,
        metadata: () => {
          const md = new grpc.Metadata();
          md.set("x-trace-bin", randomBytes(16));
          return md;
        },
      };
    case "keys":
      return {
        calls: Number(b),
        callers: 1,
        metadata: () => {
          const md = new grpc.Metadata();
          for (let i = 0; i < Number(a); i++) md.set(`x-key-${i}`, `value-${i}`);
          return md;
        },
      };
    case "fixed":
      return { calls: 200, callers: 1, metadata: fixed(Number(a), Number(b)) };
    case "concurrent":
      return {
        calls: Number(a) * Number(b),
        callers: Number(a),
        metadata: () => {
          const md = new grpc.Metadata();
          md.set("x-request-id", randomUUID());
          return md;
        },
      };
    case "subscribe":
      return { calls: Number(a), callers: 1, metadata: plan("request-id:1").metadata, subscribe: true };
    default:
      throw new Error(`unknown pattern ${pattern}`);
  }
}

function send(metadata, recipient, title) {
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/notification.v1.NotificationService/Send",
      identity,
      identity,
      sendRequest(recipient, title),
      metadata,
      { deadline: Date.now() + 5000 },
      (error) => resolve(error),
    );
  });
}

async function run(pattern) {
  const p = plan(pattern);
  const recipient = `node-${randomUUID()}`;
  let stream;
  const titles = [];
  let ended = "";
  if (p.subscribe) {
    stream = client.makeServerStreamRequest(
      "/notification.v1.NotificationService/Subscribe",
      identity,
      identity,
      field(1, recipient),
      new grpc.Metadata(),
      {},
    );
    stream.on("data", (message) => titles.push(title(message)));
    stream.on("error", (error) => ended ||= `${error.code} ${error.details}`);
    stream.on("end", () => ended ||= "ended");
    // Ready once a Send to the recipient reaches it.
    for (let i = 0; i < 100 && titles.length === 0; i++) {
      await send(new grpc.Metadata(), recipient, "matrix-ready");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  let next = 0;
  let ok = 0;
  let failed = 0;
  let firstError = "";
  const lane = async () => {
    while (next < p.calls) {
      next++;
      const error = await send(p.metadata(), "matrix-nobody", "matrix-call");
      if (error) {
        failed++;
        firstError ||= `${error.code} ${error.details}`;
      } else ok++;
    }
  };
  await Promise.all(Array.from({ length: p.callers }, lane));
  let open;
  if (stream) {
    const error = await send(plan("request-id:1").metadata(), recipient, "matrix-last");
    for (let i = 0; i < 100 && !titles.includes("matrix-last"); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    open = !error && titles.includes("matrix-last") && ended === "";
    if (!open) firstError ||= `subscribe: ${ended || "matrix-last not received"}`;
    stream.cancel();
  }
  return { pattern, ok, failed, firstError, open };
}

(async () => {
  for (const pattern of patterns) console.log(JSON.stringify(await run(pattern)));
  client.close();
})();
