import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { http2Guard, http2GuardDeferrals } from "./http2_guard.ts";

Deno.test("the HTTP/2 guard installs on the Deno we ship with", () => {
  assert.deepEqual(http2Guard(), { installed: true }, `Deno ${Deno.version.deno}`);
});

Deno.test(
  "a GOAWAY on an idle server session is handled outside nghttp2 (the destroy is deferred)",
  { sanitizeOps: false, sanitizeResources: false },
  async () => {
    const server = http2.createServer();
    const closed = new Promise<void>((resolve) => {
      server.on("session", (session) => {
        session.on("error", () => {});
        session.once("close", () => resolve());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    const before = http2GuardDeferrals();
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    let open = true;
    try {
      const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
      const settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
      // GOAWAY (type 7) on stream 0: last stream 0, NO_ERROR. What a Node client sends on close.
      const goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
      await conn.write(new Uint8Array([...preface, ...settings, ...goaway]));
      // The server answers with its SETTINGS, then ends the connection: read to its end, close ours.
      const buffer = new Uint8Array(1024);
      while (await conn.read(buffer) !== null);
      conn.close();
      open = false;
      await closed;
    } finally {
      if (open) conn.close();
      await new Promise((resolve) => server.close(resolve));
    }
    assert.equal(http2GuardDeferrals() - before, 1, "Deno destroyed the session inside nghttp2's callback");
  },
);
