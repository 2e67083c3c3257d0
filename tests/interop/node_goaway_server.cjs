// A server we did not write, on real Node (node:http2, no grpc-js): it sends a GOAWAY on every
// connection as soon as the connection has no open stream, as servers that recycle or drain
// connections do. It answers NotificationService/Send and Subscribe itself (one notification, then
// the stream ends OK) and relays every other call to etcd, so our clients meet idle-session GOAWAYs
// both from "an instance" and from "etcd".
// usage: node node_goaway_server.cjs ETCD_HOST:ETCD_PORT
// Prints "listening PORT", then "goaway N" each time it sends one.
"use strict";
const http2 = require("node:http2");

const etcd = process.argv[2];
let goaways = 0;

function varint(n) {
  const out = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}
const field = (number, bytes) => Buffer.concat([varint((number << 3) | 2), varint(bytes.length), bytes]);
const str = (number, text) => field(number, Buffer.from(text));
const grpcFrame = (message) => {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
};

function answer(stream, message) {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(grpcFrame(message));
}

function relay(stream, headers) {
  const upstream = http2.connect(`http://${etcd}`);
  upstream.on("error", () => {});
  const forwarded = {};
  for (const [k, v] of Object.entries(headers)) if (!k.startsWith(":") || k === ":path") forwarded[k] = v;
  const call = upstream.request({ ...forwarded, ":method": "POST" });
  let trailers = { "grpc-status": "14", "grpc-message": "relay lost etcd" };
  call.on("response", (h) => {
    const status = h["grpc-status"];
    if (status !== undefined) trailers = { "grpc-status": status, "grpc-message": h["grpc-message"] ?? "" };
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  });
  call.on("trailers", (t) => (trailers = t));
  stream.on("wantTrailers", () => stream.sendTrailers(trailers));
  call.on("data", (chunk) => stream.write(chunk));
  call.on("end", () => stream.end());
  call.on("close", () => upstream.close());
  call.on("error", () => {});
  stream.on("data", (chunk) => call.write(chunk));
  stream.on("end", () => call.end());
  stream.on("close", () => call.close());
}

const server = http2.createServer();
server.on("session", (session) => {
  session.on("error", () => {});
  let sent = false;
  const check = () =>
    setTimeout(() => {
      if (sent || session.destroyed || session.closed) return;
      if (openStreams.get(session) > 0) return;
      sent = true;
      session.goaway(http2.constants.NGHTTP2_NO_ERROR);
      console.log(`goaway ${++goaways}`);
    }, 20);
  openStreams.set(session, 0);
  session.on("stream", (stream) => {
    openStreams.set(session, openStreams.get(session) + 1);
    stream.on("close", () => {
      openStreams.set(session, openStreams.get(session) - 1);
      check();
    });
  });
});
const openStreams = new WeakMap();
server.on("stream", (stream, headers) => {
  stream.on("error", () => {});
  const path = headers[":path"];
  if (path === "/notification.v1.NotificationService/Send") {
    stream.resume();
    stream.on(
      "end",
      () => answer(stream, Buffer.concat([str(1, "node-1"), Buffer.from([0x18, 1]), str(4, "node")])),
    );
  } else if (path === "/notification.v1.NotificationService/Subscribe") {
    stream.resume();
    stream.on("end", () => answer(stream, Buffer.concat([str(1, "node-n1"), str(3, "from node")])));
  } else relay(stream, headers);
});
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
