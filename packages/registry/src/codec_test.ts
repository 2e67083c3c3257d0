import assert from "node:assert/strict";
import { decodeRecord, encodeInstance, instanceKey, MalformedRecordError } from "./codec.ts";

const instance = {
  id: "10.0.0.5:8080",
  name: "notification-server",
  addr: "10.0.0.5:8080",
  metadata: { version: "1" },
};

Deno.test("instance layout: <prefix>/<name>/<id> with etcd naming's JSON, round-tripped", () => {
  const key = instanceKey("/services", "instance", instance);
  assert.equal(key, "/services/notification-server/10.0.0.5:8080");
  const value = encodeInstance("instance", instance);
  // Metadata as a JSON string: grpc-go's round_robin panics on an object (see codec.ts).
  assert.equal(value, '{"Op":0,"Addr":"10.0.0.5:8080","Metadata":"{\\"version\\":\\"1\\"}"}');
  assert.deepEqual(decodeRecord("/services", "notification-server", key, value), instance);
});

Deno.test("service layout: the original <prefix>/<name> -> plain host:port", () => {
  const key = instanceKey("/services", "service", instance);
  assert.equal(key, "/services/notification-server");
  assert.equal(encodeInstance("service", instance), "10.0.0.5:8080");
  assert.deepEqual(decodeRecord("/services", "notification-server", key, "10.0.0.5:8080"), {
    id: "10.0.0.5:8080",
    name: "notification-server",
    addr: "10.0.0.5:8080",
    metadata: {},
  });
});

Deno.test("decodeRecord() ignores other services sharing the prefix and deeper keys", () => {
  assert.equal(
    decodeRecord("/services", "notification-server", "/services/notification-server-v2/a", "{}"),
    undefined,
  );
  assert.equal(
    decodeRecord("/services", "notification-server", "/services/notification-server/a/b", "{}"),
    undefined,
  );
  assert.equal(decodeRecord("/services", "n", "/services/n/x", '{"Op":1,"Addr":"1.2.3.4:5"}'), undefined);
});

Deno.test("decodeRecord() throws MalformedRecordError for values it cannot read", () => {
  for (const value of ["not json", '{"Addr":5}', "[]", '{"Op":0,"Addr":"nope"}']) {
    assert.throws(() => decodeRecord("/services", "n", "/services/n/x", value), MalformedRecordError, value);
  }
  assert.throws(() => decodeRecord("/services", "n", "/services/n", "0.0.0.0"), MalformedRecordError);
});

Deno.test("decodeRecord() reads every stored form: metadata as a string, an object, null or absent", () => {
  const key = "/services/n/x";
  const read = (value: string) => decodeRecord("/services", "n", key, value)?.metadata;
  assert.deepEqual(read('{"Op":0,"Addr":"1.2.3.4:5","Metadata":"{\\"v\\":\\"1\\"}"}'), { v: "1" });
  assert.deepEqual(read('{"Op":0,"Addr":"1.2.3.4:5","Metadata":{"v":"1"}}'), { v: "1" });
  assert.deepEqual(read('{"Op":0,"Addr":"1.2.3.4:5","Metadata":null}'), {});
  assert.deepEqual(read('{"Addr":"1.2.3.4:5"}'), {});
  assert.deepEqual(read('{"Op":0,"Addr":"1.2.3.4:5","Metadata":"opaque"}'), {});
  assert.equal(encodeInstance("instance", { ...instance, metadata: {} }), '{"Op":0,"Addr":"10.0.0.5:8080"}');
});

Deno.test("decodeRecord() warns about an Op that is not 0 or 1, and caps what it quotes", () => {
  assert.throws(
    () => decodeRecord("/services", "n", "/services/n/x", '{"Op":"0","Addr":"1.2.3.4:5"}'),
    /Op "0" is neither 0 \(add\) nor 1 \(delete\)/,
  );
  const huge = JSON.stringify({ Op: 0, Addr: "\u001b[31m" + "x".repeat(400_000) });
  try {
    decodeRecord("/services", "n", "/services/n/x", huge);
    assert.fail("expected MalformedRecordError");
  } catch (error) {
    assert.ok(error instanceof MalformedRecordError);
    assert.ok(error.message.length < 300, `${error.message.length} characters`);
    assert.ok(!error.message.includes("\u001b"), "no raw ESC");
  }
});
