import assert from "node:assert/strict";
import { advertisedAddress } from "./advertise.ts";

const ifaces = () => [
  { name: "lo", family: "IPv4" as const, address: "127.0.0.1" },
  { name: "eth0", family: "IPv4" as const, address: "10.1.2.3" },
];

Deno.test("advertisedAddress() prefers advertise-addr, then a concrete bind host", () => {
  assert.equal(
    advertisedAddress({ host: "0.0.0.0", port: 8080 }, 8080, { host: "svc.local", port: 9 }, ifaces).addr,
    "svc.local:9",
  );
  assert.equal(
    advertisedAddress({ host: "127.0.0.1", port: 0 }, 4321, undefined, ifaces).addr,
    "127.0.0.1:4321",
  );
  assert.equal(advertisedAddress({ host: "::1", port: 0 }, 4321, undefined, ifaces).addr, "[::1]:4321");
});

Deno.test("advertisedAddress() never advertises 0.0.0.0: it picks the first non-loopback interface", () => {
  const chosen = advertisedAddress({ host: "0.0.0.0", port: 8080 }, 8080, undefined, ifaces);
  assert.deepEqual(chosen, { addr: "10.1.2.3:8080", derivedFrom: "interface eth0" });
  const lonely = advertisedAddress({ host: "", port: 8080 }, 8080, undefined, () => [ifaces()[0]]);
  assert.equal(lonely.addr, "127.0.0.1:8080");
});
