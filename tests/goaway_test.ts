/**
 * No HTTP/2 GOAWAY between our processes: a Deno process that receives one can crash inside
 * nghttp2 (denoland/deno#36788). A stopping server ends its connections with a plain close once
 * their calls are done (src/transport/drain.ts), and our clients close theirs the same way, even right after
 * cancelling a call (packages/http2_guard/src/http2_close.ts). Real gRPC servers and clients over loopback; the other
 * side is a raw node:http2 peer so the GOAWAY itself can be seen.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { serveInProcess } from "./helpers/in_process.ts";
import { eventually } from "./helpers/grpc.ts";
import { NETWORK_TEST } from "@notification-server/registry/testing";

/** A gRPC message frame: uncompressed flag, length, bytes. */
function frame(message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

Deno.test("a stopping server ends a finished call's connection without a GOAWAY", NETWORK_TEST, async () => {
  const server = await serveInProcess();
  const session = http2.connect(`http://${server.addr}`);
  let goaway = false;
  session.on("goaway", () => (goaway = true));
  session.on("error", () => {});
  const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
  try {
    // One unary call answered, and one Subscribe stream open when the stop begins.
    const call = (path: string, body: Uint8Array) => {
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.end(frame(body));
      const trailers = new Promise<string | undefined>((resolve) => {
        stream.on("trailers", (t) => resolve(t["grpc-status"] as string | undefined));
        stream.on("close", () => resolve(undefined));
      });
      stream.resume();
      return trailers;
    };
    assert.equal(await call("/grpc.health.v1.Health/Check", new Uint8Array()), "0");
    // SubscribeRequest { recipient: "a" }: field 1, length 1, "a".
    const subscription = call("/notification.v1.NotificationService/Subscribe", new Uint8Array([10, 1, 97]));
    await eventually(() => server.serving.subscribers() === 1, 2_000, "subscribed");
    const outcome = await server.serving.drain(2_000);
    assert.equal(outcome, "graceful");
    assert.equal(await subscription, "0", "the open stream ended with OK first");
    await closed;
    assert.equal(goaway, false, "the connection closed without a GOAWAY");
  } finally {
    session.destroy();
  }
});

Deno.test(
  "our gRPC clients close without a GOAWAY, even right after cancelling a call",
  NETWORK_TEST,
  async () => {
    // A raw HTTP/2 server that answers every call with headers and then holds it open.
    const server = http2.createServer();
    const goaways: number[] = [];
    const sessions: http2.ServerHttp2Session[] = [];
    server.on("session", (session) => {
      sessions.push(session);
      session.on("goaway", (code) => goaways.push(code));
      session.on("error", () => {});
    });
    let open = 0;
    server.on("stream", (stream: http2.ServerHttp2Stream) => {
      open++;
      stream.on("close", () => open--);
      stream.on("error", () => {});
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    try {
      for (const cancelFirst of [false, true]) {
        const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
        const call = client.makeServerStreamRequest(
          "/x.Y/Z",
          (x: Uint8Array) => Buffer.from(x),
          (x: Buffer) => x,
          new Uint8Array(),
        );
        call.on("error", () => {});
        await new Promise<void>((resolve) => call.on("metadata", () => resolve()));
        const session = sessions.at(-1)!;
        const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
        // As a peer link does when its peer leaves: cancel the stream, close the channel at once.
        if (cancelFirst) call.cancel();
        else {
          call.cancel();
          await eventually(() => open === 0, 2_000, "the call closed on the server");
        }
        client.close();
        await closed;
        assert.deepEqual(goaways, [], `no GOAWAY (${cancelFirst ? "cancelled just before" : "idle"})`);
      }
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  },
);
