/**
 * The recipient directory on a real etcd, without a service: what the publisher writes (under
 * which lease), what the view sees and tells, and the revision barrier the Subscribe path waits on.
 */
import assert from "node:assert/strict";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually } from "../../tests/helpers/grpc.ts";
import { scopedClient } from "../../tests/helpers/kv.ts";
import { DirectoryPublisher, directoryRoot, DirectoryView } from "./directory.ts";

/** A root of its own per test, so tests sharing an etcd (ETCD_ENDPOINTS) do not see each other. */
const freshRoot = () => directoryRoot("/test-directory", crypto.randomUUID().slice(0, 8));

Deno.test(
  "a published recipient is in etcd under the lease, and the view has it by the revision add() gave",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const root = freshRoot();
    const lease = kv.lease(30, { autoKeepAlive: false });
    const leaseId = await lease.grant();
    const publisher = new DirectoryPublisher(kv, { root, instanceId: "me" });
    const view = new DirectoryView(kv, { root });
    const told: string[] = [];
    view.onEntry = (recipient, instance, present) =>
      told.push(`${present ? "+" : "-"}${recipient}@${instance}`);
    try {
      await view.ready;
      publisher.setLease(leaseId);
      const { revision } = await publisher.add("alice/ünïcode");
      assert.equal(await view.reached(revision, 2_000), true);
      assert.deepEqual([...view.instancesFor("alice/ünïcode")], ["me"]);
      assert.deepEqual(told, ["+alice/ünïcode@me"]);
      const stored = await kv.getAll().prefix(root).exec();
      assert.equal(stored.kvs.length, 1);
      assert.equal(stored.kvs[0].lease, leaseId, "written under the registration's lease");
      assert.equal(stored.kvs[0].key.toString(), `${root}${encodeURIComponent("alice/ünïcode")}/me`);

      publisher.remove("alice/ünïcode");
      await eventually(() => view.instancesFor("alice/ünïcode").size === 0, 5_000, "the view to follow etcd");
      assert.deepEqual(told, ["+alice/ünïcode@me", "-alice/ünïcode@me"]);
    } finally {
      publisher.close();
      await view.close();
      await lease.revoke().catch(() => {});
    }
  },
);

Deno.test(
  "add() waits for a lease; a new lease writes every key again; the old lease's end removes nothing",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const root = freshRoot();
    const publisher = new DirectoryPublisher(kv, { root, instanceId: "me" });
    const view = new DirectoryView(kv, { root });
    const first = kv.lease(30, { autoKeepAlive: false });
    const second = kv.lease(30, { autoKeepAlive: false });
    try {
      await view.ready;
      let added = false;
      const adding = publisher.add("bob").then(({ revision }) => ((added = true), revision));
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(added, false, "nothing is written without a lease");
      publisher.setLease(await first.grant());
      await view.reached(await adding, 2_000);
      const secondId = await second.grant();
      publisher.setLease(secondId);
      await eventually(
        async () => (await kv.get(`${root}bob/me`).exec()).kvs[0]?.lease === secondId,
        5_000,
        "bob's key under the second lease",
      );
      await first.revoke();
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual([...view.instancesFor("bob")], ["me"], "still there under the new lease");
    } finally {
      publisher.close();
      await view.close();
      await second.revoke().catch(() => {});
    }
  },
);

Deno.test(
  "the view follows every instance's keys, and a lease's end removes its instance's entries (and says it holds none)",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const root = freshRoot();
    const leases = [kv.lease(30, { autoKeepAlive: false }), kv.lease(30, { autoKeepAlive: false })];
    const publishers = ["a", "b"].map((id) => new DirectoryPublisher(kv, { root, instanceId: id }));
    const gone: string[] = [];
    const view = new DirectoryView(kv, { root, onInstanceGone: (id) => gone.push(id) });
    try {
      await view.ready;
      for (const [i, p] of publishers.entries()) p.setLease(await leases[i].grant());
      await Promise.all([publishers[0].add("carol"), publishers[1].add("carol"), publishers[1].add("dave")]);
      await eventually(
        () => view.instancesFor("carol").size === 2 && view.instancesFor("dave").size === 1,
        5_000,
        "the view to follow etcd",
      );
      assert.deepEqual([...view.entries()].sort(), [["carol", "a"], ["carol", "b"], ["dave", "b"]]);
      assert.ok(view.holds("a") && view.holds("b"));
      publishers[1].remove("dave"); // one of b's two: b still holds carol
      await eventually(() => view.instancesFor("dave").size === 0, 5_000, "the view to follow etcd");
      assert.ok(view.holds("b"));
      assert.deepEqual(gone, []);
      await leases[1].revoke(); // instance b died, or drained and released its lease
      await eventually(() => view.instancesFor("carol").size === 1, 5_000, "the view to follow etcd");
      assert.deepEqual([...view.instancesFor("carol")], ["a"]);
      assert.equal(view.size.recipients, 1);
      assert.equal(view.holds("b"), false);
      assert.deepEqual(gone, ["b"], "told once, when its last entry went");
    } finally {
      for (const p of publishers) p.close();
      await view.close();
      await leases[0].revoke().catch(() => {});
    }
  },
);

Deno.test(
  "a late view starts from a full read; reached() answers false past its timeout",
  NETWORK_TEST,
  async () => {
    await using etcd = await useEtcd();
    using kv = scopedClient(etcd.endpoints);
    const root = freshRoot();
    const lease = kv.lease(30, { autoKeepAlive: false });
    const publisher = new DirectoryPublisher(kv, { root, instanceId: "me" });
    try {
      publisher.setLease(await lease.grant());
      const { revision } = await publisher.add("erin");
      const view = new DirectoryView(kv, { root });
      try {
        await view.ready;
        assert.deepEqual([...view.instancesFor("erin")], ["me"]);
        assert.equal(await view.reached(revision, 1_000), true);
        assert.equal(await view.reached(revision + 1_000_000n, 100), false);
      } finally {
        await view.close();
      }
    } finally {
      publisher.close();
      await lease.revoke().catch(() => {});
    }
  },
);
