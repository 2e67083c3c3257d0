import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import net from "node:net";
import process from "node:process";
import { batchWritesPerTurn, startGrpcServer, stopGrpcServer } from "./server.ts";
import { serveInProcess } from "../../tests/helpers/in_process.ts";
import { FRAME, headers, PREFACE, referenceBomb, send, settings } from "../../tests/helpers/h2_attack.ts";

/** A connected loopback pair: `server` is the accepted side. */
async function socketPair(): Promise<{ server: net.Socket; client: net.Socket; close: () => void }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const port = (listener.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => listener.once("connection", resolve));
  const client = net.connect(port, "127.0.0.1");
  const server = await accepted;
  return {
    server,
    client,
    close: () => {
      client.destroy();
      server.destroy();
      listener.close();
    },
  };
}

/** Counts the writes that reach the socket's handle (one syscall each), as opposed to socket.write calls. */
function countFlushes(socket: net.Socket): () => number {
  let flushes = 0;
  const inner = socket as unknown as Record<"_write" | "_writev", (...args: unknown[]) => unknown>;
  for (const name of ["_write", "_writev"] as const) {
    const original = inner[name].bind(socket);
    inner[name] = (...args: unknown[]) => {
      flushes++;
      return original(...args);
    };
  }
  return () => flushes;
}

Deno.test("writes from separate callbacks of one event-loop turn leave in one write, in order", async () => {
  const { server, client, close } = await socketPair();
  try {
    batchWritesPerTurn(server);
    batchWritesPerTurn(server); // applying it twice must not nest the wrapper
    const flushes = countFlushes(server);
    let received = "";
    const receivedUpTo = (length: number) =>
      new Promise<void>((resolve) => {
        const check = () => received.length >= length && (client.off("data", onData), resolve());
        const onData = (chunk: Buffer) => {
          received += chunk;
          check();
        };
        client.on("data", onData);
        check();
      });
    // Like the responses to one batch of requests: produced in different callbacks of one turn.
    server.write("a");
    queueMicrotask(() => server.write("b"));
    process.nextTick(() => server.write("c"));
    await receivedUpTo(3);
    assert.equal(received, "abc");
    assert.equal(flushes(), 1, "one write to the handle for the whole turn");
    // A later turn is flushed too (nothing stays corked).
    setTimeout(() => server.write("d"), 0);
    await receivedUpTo(4);
    assert.equal(received, "abcd");
    assert.equal(flushes(), 2);
  } finally {
    close();
  }
});

Deno.test("a started server coalesces its frame writes (fails loudly if a grpc-js upgrade disables it)", async () => {
  // The 1.8x throughput fix depends on grpc-js internals (see coalesceWrites).
  const bound = await startGrpcServer({
    addr: { host: "127.0.0.1", port: 0 },
    services: { notification: {}, health: {} },
  });
  try {
    assert.equal(bound.coalescing, true, "HTTP/2 frame writes are coalesced");
  } finally {
    await stopGrpcServer(bound, 1_000, () => {});
  }
});

/**
 * What a raw client gets after one HEADERS frame: "response" once the server answers its stream,
 * "closed" when the server cuts the connection instead.
 */
async function answerTo(port: number, block: Uint8Array): Promise<"response" | "closed"> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await send(conn, PREFACE);
    await send(conn, settings({}));
    await send(conn, headers(1, block, true));
    let pending = new Uint8Array(0);
    const buffer = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) return "closed";
      pending = new Uint8Array([...pending, ...buffer.subarray(0, n)]);
      while (pending.length >= 9) {
        const length = (pending[0] << 16) | (pending[1] << 8) | pending[2];
        const type = pending[3];
        const stream = new DataView(pending.buffer, pending.byteOffset + 5, 4).getUint32(0) & 0x7fffffff;
        if (type === FRAME.HEADERS && stream === 1) return "response";
        if (pending.length < 9 + length) break;
        pending = pending.subarray(9 + length);
      }
    }
  } finally {
    try {
      conn.close();
    } catch { /* closed by the server */ }
  }
}

Deno.test("servers in one thread keep their own input limits (the later one does not replace the first's)", async () => {
  // About 8 KB of headers once decoded: over the first server's 4 KiB, under the second's 16 KiB.
  const block = referenceBomb("/grpc.health.v1.Health/Check", 3_950, 2);
  await using strict = await serveInProcess("  max-header-list-size: 4096\n");
  await using lenient = await serveInProcess();
  assert.equal(await answerTo(lenient.port, block), "response");
  assert.equal(await answerTo(strict.port, block), "closed", "cut by its own 4 KiB limit");
});
