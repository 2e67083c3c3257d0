/** watchRanges against a real etcd: a first read that waits, revisions of any size, and a resume after a restart. */
import assert from "node:assert/strict";
import { NETWORK_TEST, PRIVATE_ETCD_ONLY, startEtcd, useEtcd } from "@notification-server/registry/testing";
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

Deno.test(
  "a revision larger than gRPC's 4 MiB limit (60 000 keys of one lease revoked) arrives whole, and nothing is skipped",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const client = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 5_000 });
    const abort = new AbortController();
    const prefix = `/big-revision-${crypto.randomUUID()}/`;
    try {
      // Keys shaped like the directory's (~90 bytes each with their value): 60 000 deleted in one
      // revision make a 5 MiB watch response.
      const lease = client.lease(60, { autoKeepAlive: false });
      const leaseId = await lease.grant();
      const keys = Array.from({ length: 60_000 }, (_, i) => `${prefix}recipient-${i}/instance-a`);
      for (let i = 0; i < keys.length; i += 128) {
        const txn = client.if(`${prefix}none`, "Create", "==", 0).then(
          ...keys.slice(i, i + 128).map((key) => client.put(key).value("{}").lease(leaseId)),
        );
        await txn.commit();
      }
      await client.put(`${prefix}other`).value("stays").exec();
      const watch = watchRanges(client, [{ prefix }], { signal: abort.signal, retryFirstRead: true });
      const first = await watch.next();
      assert.equal(first.value?.kind === "reset" && first.value.entries.size, 60_001);
      await lease.revoke();
      await client.put(`${prefix}after`).value("1").exec();
      const deleted = new Set<string>();
      let revisions = 0;
      const deadline = Date.now() + 30_000;
      for (;;) {
        const next = await Promise.race([
          watch.next(),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error("the revision never came")), Math.max(0, deadline - Date.now()))
          ),
        ]);
        const { value } = next;
        assert.equal(value?.kind, "changes", "no resync: every revision received");
        if (value?.kind !== "changes") break;
        revisions++;
        for (const change of value.changes) if (change.value === undefined) deleted.add(change.key);
        if (value.changes.some((c: { key: string }) => c.key === `${prefix}after`)) break;
      }
      assert.equal(deleted.size, 60_000, "every key of the revoked lease");
      assert.equal(revisions, 2, "the revoke as one revision, then the put after it");
    } finally {
      abort.abort();
      client.close();
    }
  },
);

Deno.test(
  "a revision over the receive limit is not skipped: the watch re-reads etcd and says why",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    const client = createEtcdClient({
      endpoints: etcd.endpoints,
      dialTimeoutMs: 5_000,
      maxResponseBytes: 512 * 1024,
    });
    const abort = new AbortController();
    const prefix = `/over-limit-${crypto.randomUUID()}/`;
    const reasons: string[] = [];
    try {
      const lease = client.lease(60, { autoKeepAlive: false });
      const leaseId = await lease.grant();
      const keys = Array.from({ length: 20_000 }, (_, i) => `${prefix}recipient-${i}/instance-a`);
      for (let i = 0; i < keys.length; i += 128) {
        await client.if(`${prefix}none`, "Create", "==", 0).then(
          ...keys.slice(i, i + 128).map((key) => client.put(key).value("{}").lease(leaseId)),
        ).commit();
      }
      const watch = watchRanges(client, [{ prefix }], {
        signal: abort.signal,
        pageSize: 1_000, // pages under the limit; the revoke's ~1.7 MB revision is not
        onResync: (event) => event.attempts === undefined && reasons.push(event.reason),
      });
      assert.equal((await watch.next()).value?.kind, "reset");
      await lease.revoke();
      const next = await Promise.race([
        watch.next(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("nothing came")), 30_000)),
      ]);
      assert.equal(next.value?.kind, "reset", "a fresh read, not a skipped revision");
      assert.equal(next.value?.kind === "reset" && next.value.entries.size, 0);
      assert.deepEqual(reasons, ["too_large"]);
    } finally {
      abort.abort();
      client.close();
    }
  },
);

Deno.test(
  "an etcd restart (data kept) drops the stream but not the view: the watch resumes where it was, with no full re-read",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    const client = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 1_000 });
    const abort = new AbortController();
    const prefix = "/resume-test/";
    const reasons: string[] = [];
    try {
      for (let i = 0; i < 3; i++) await client.put(`${prefix}${i}`).value("before").exec();
      const watch = watchRanges(client, [{ prefix }], {
        signal: abort.signal,
        onResync: (event) => event.attempts === undefined && reasons.push(event.reason),
      });
      const first = await watch.next();
      assert.equal(first.value?.kind, "reset");
      // The watch stream is up once a change comes through it.
      await client.put(`${prefix}0`).value("live").exec();
      assert.equal((await watch.next()).value?.kind, "changes");
      await etcd.restart();
      // Written after the restart: the watch must bring it as a change of the view it has.
      await client.put(`${prefix}after`).value("1").exec();
      const next = await Promise.race([
        watch.next(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("nothing came")), 30_000)),
      ]);
      assert.equal(next.value?.kind, "changes", `resumed, not re-read (${JSON.stringify(next.value?.kind)})`);
      assert.deepEqual(next.value?.kind === "changes" && next.value.changes, [{
        key: `${prefix}after`,
        value: "1",
      }]);
      assert.ok(reasons.includes("disconnected"), `the dropped stream was seen: ${reasons.join(", ")}`);
    } finally {
      abort.abort();
      client.close();
    }
  },
);

Deno.test(
  "an etcd wiped while the watch was away, and written past the watch's revision before it is back, is read again whole",
  PRIVATE_ETCD_ONLY,
  async () => {
    await using etcd = await startEtcd();
    const client = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 1_000 });
    const writer = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 1_000 });
    const abort = new AbortController();
    const prefix = "/wiped-test/";
    try {
      for (let i = 0; i < 3; i++) await writer.put(`${prefix}${i}`).value("before").exec();
      const watch = watchRanges(client, [{ prefix }], { signal: abort.signal });
      assert.equal((await watch.next()).value?.kind, "reset");
      await writer.put(`${prefix}0`).value("live").exec();
      assert.equal((await watch.next()).value?.kind, "changes");
      await etcd.restart({ wipe: true, crash: true });
      // The wiped etcd moves past the watch's revision before the watch looks again (it looks on
      // its next read): revisions alone cannot tell it from the etcd it left.
      for (let i = 0; i < 10; i++) await writer.put(`${prefix}new-${i}`).value("after").exec();
      const next = await Promise.race([
        watch.next(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("nothing came")), 30_000)),
      ]);
      assert.equal(next.value?.kind, "reset", `read again, not resumed (${next.value?.kind})`);
      assert.deepEqual(
        next.value?.kind === "reset" && [...next.value.entries.keys()].sort(),
        Array.from({ length: 10 }, (_, i) => `${prefix}new-${i}`).sort(),
      );
    } finally {
      abort.abort();
      client.close();
      writer.close();
    }
  },
);
