import assert from "node:assert/strict";
import { WatchManager } from "etcd3/lib/watch.js";
import { createEtcdClient } from "./etcd_client.ts";
import { UNKNOWN_WATCH_RESPONSES_IGNORED } from "./watchers.ts";

Deno.test("etcd3's watch manager ignores a response for a watch it has dropped (it used to throw)", () => {
  assert.equal(UNKNOWN_WATCH_RESPONSES_IGNORED, true, "etcd3's internals changed: see watchers.ts");
  const handle = (WatchManager as unknown as { prototype: { handleResponse(res: unknown): void } }).prototype
    .handleResponse;
  // What etcd sends after a watch is gone: a cancel response naming its id.
  assert.doesNotThrow(() => handle.call({ watchers: [] }, { watch_id: "7", canceled: true }));
  // Every client gets it: the manager of a real client has the patched method.
  const client = createEtcdClient({ endpoints: ["127.0.0.1:1"], dialTimeoutMs: 500 });
  try {
    const manager = (client as unknown as { watchManager: { handleResponse: unknown } }).watchManager;
    assert.equal(manager.handleResponse, handle);
  } finally {
    client.close();
  }
});
