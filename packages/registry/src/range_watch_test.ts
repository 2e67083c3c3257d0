/** watchRanges' first read against a real etcd that does not answer yet (frozen with SIGSTOP). */
import assert from "node:assert/strict";
import { PRIVATE_ETCD_ONLY, startEtcd } from "../../../tests/helpers/etcd.ts";
import { createEtcdClient } from "./etcd_client.ts";
import { watchRanges } from "./range_watch.ts";

Deno.test(
  "the first read throws by default, and with retryFirstRead waits for etcd to answer",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    const client = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 300 });
    const abort = new AbortController();
    try {
      await client.put("/range-watch-test/a").value("1").exec();
      etcd.signal("SIGSTOP");
      await assert.rejects(watchRanges(client, [{ prefix: "/range-watch-test/" }]).next());
      const following = watchRanges(client, [{ prefix: "/range-watch-test/" }], {
        signal: abort.signal,
        retryFirstRead: true,
      }).next();
      let settled = false;
      void following.then(() => (settled = true), () => (settled = true));
      await new Promise((r) => setTimeout(r, 1_000)); // several failed reads meanwhile
      assert.equal(settled, false, "still waiting for etcd, not thrown");
      etcd.signal("SIGCONT");
      const first = await following;
      assert.equal(first.done, false);
      assert.equal(first.value?.kind, "reset");
      assert.deepEqual(first.value?.kind === "reset" && [...first.value.entries], [[
        "/range-watch-test/a",
        "1",
      ]]);
    } finally {
      etcd.signal("SIGCONT");
      abort.abort();
      client.close();
    }
  },
);
