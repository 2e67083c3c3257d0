/** EtcdDiscovery on a real etcd: list, watch snapshots, continuity through an etcd restart. */
import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import type { Logger } from "../src/_util/logger.ts";
import { createEtcdClient } from "../packages/registry/src/etcd_client.ts";
import { EtcdDiscovery } from "../packages/registry/src/etcd_discovery.ts";
import type { ServiceInstance } from "../packages/registry/src/types.ts";
import {
  type EtcdHandle,
  NETWORK_TEST,
  PRIVATE_ETCD_ONLY,
  startEtcd,
  useEtcd,
} from "@notification-server/registry/testing";
import { eventually } from "./helpers/grpc.ts";
import { scopedClient } from "./helpers/kv.ts";

function uniqueName(): string {
  return `disc-${crypto.randomUUID().slice(0, 8)}`;
}

function value(addr: string, metadata: Record<string, string> = {}): string {
  return JSON.stringify({ Op: 0, Addr: addr, Metadata: metadata });
}

/** An etcd (from `start`), a raw client for writes, a discovery client, and a fresh service name. */
async function withEtcd(
  start: () => Promise<EtcdHandle>,
  fn: (ctx: { etcd: EtcdHandle; raw: Etcd3; client: Etcd3; name: string }) => Promise<void>,
): Promise<void> {
  await using etcd = await start();
  using raw = scopedClient(etcd.endpoints);
  const client = createEtcdClient({ endpoints: etcd.endpoints, dialTimeoutMs: 2_000 });
  try {
    await fn({ etcd, raw, client, name: uniqueName() });
  } finally {
    client.close();
  }
}

/** Pulls snapshots from a watch into an array in the background. */
function follow(discovery: EtcdDiscovery, name: string) {
  const abort = new AbortController();
  const snapshots: { at: number; instances: ServiceInstance[] }[] = [];
  const done = (async () => {
    for await (const instances of discovery.watch(name, { signal: abort.signal })) {
      snapshots.push({ at: performance.now(), instances });
    }
  })();
  return {
    snapshots,
    latest: () => snapshots.at(-1)?.instances ?? [],
    stop: async () => {
      abort.abort();
      await done;
    },
  };
}

Deno.test(
  "list() reads both layouts, skips malformed records with a warning, and ignores other services",
  NETWORK_TEST,
  async () => {
    const warnings: string[] = [];
    const logger: Logger = { info() {}, warn: (m) => warnings.push(m), error() {} };
    await withEtcd(useEtcd, async ({ raw, client, name }) => {
      await raw.put(`/services/${name}/a`).value(value("10.0.0.1:1", { v: "1" })).exec();
      await raw.put(`/services/${name}/b`).value("10.0.0.2:2").exec(); // hand-written plain value
      await raw.put(`/services/${name}`).value("10.0.0.3:3").exec(); // the original service layout
      await raw.put(`/services/${name}/bad`).value("{not json").exec();
      await raw.put(`/services/${name}-other/x`).value(value("10.9.9.9:9")).exec();
      const list = await new EtcdDiscovery(client, { logger }).list(name);
      assert.deepEqual(list.map((i) => [i.id, i.addr]), [["10.0.0.3:3", "10.0.0.3:3"], ["a", "10.0.0.1:1"], [
        "b",
        "10.0.0.2:2",
      ]]);
      assert.deepEqual(list.find((i) => i.id === "a")?.metadata, { v: "1" });
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], new RegExp(`Skipping malformed record at "/services/${name}/bad"`));
    });
  },
);

Deno.test(
  "concurrent watch() of one name share one etcd watch; a late watcher starts from the latest list",
  NETWORK_TEST,
  async () => {
    await withEtcd(useEtcd, async ({ raw, client, name }) => {
      // Counts the watches the discovery opens on the (real) client.
      let opened = 0;
      const watch = client.watch.bind(client);
      client.watch = () => (opened++, watch());
      const discovery = new EtcdDiscovery(client);
      await raw.put(`/services/${name}/a`).value(value("10.0.0.1:1")).exec();
      const first = follow(discovery, name);
      await eventually(() => first.snapshots.length === 1, 3_000, "first watcher's list");
      const perWatch = opened; // one etcd watcher per key range (the service key, and under it)
      const second = follow(discovery, name);
      await eventually(() => second.snapshots.length === 1, 3_000, "second watcher's list");
      assert.deepEqual(second.latest().map((i) => i.id), ["a"], "starts from the latest list");
      await raw.put(`/services/${name}/b`).value(value("10.0.0.2:2")).exec();
      await eventually(
        () => first.latest().length === 2 && second.latest().length === 2,
        3_000,
        "both see b",
      );
      assert.equal(opened, perWatch, "the second watcher opened no watch of its own");
      await first.stop();
      await second.stop();
      // With its last watcher gone the watch ends; a new watcher opens a new one.
      const third = follow(discovery, name);
      await eventually(() => third.snapshots.length === 1, 3_000, "third watcher's list");
      assert.equal(opened, 2 * perWatch);
      await third.stop();
    });
  },
);

Deno.test(
  "watch() yields the current list, then a full snapshot after each change",
  NETWORK_TEST,
  async () => {
    await withEtcd(useEtcd, async ({ raw, client, name }) => {
      await raw.put(`/services/${name}/a`).value(value("10.0.0.1:1")).exec();
      const w = follow(new EtcdDiscovery(client), name);
      await eventually(() => w.snapshots.length === 1, 3_000, "initial snapshot");
      assert.deepEqual(w.latest().map((i) => i.id), ["a"]);
      await raw.put(`/services/${name}/b`).value(value("10.0.0.2:2")).exec();
      await eventually(() => w.latest().length === 2, 3_000, "b added");
      await raw.put(`/services/${name}/a`).value(value("10.0.0.1:1", { v: "2" })).exec();
      await eventually(() => w.latest()[0].metadata.v === "2", 3_000, "a updated");
      await raw.delete().key(`/services/${name}/b`).exec();
      await eventually(() => w.latest().length === 1, 3_000, "b removed");
      // A write to another service sharing the prefix is not a change of ours.
      const count = w.snapshots.length;
      await raw.put(`/services/${name}-x/z`).value(value("10.0.0.9:9")).exec();
      await raw.put(`/services/${name}/a`).value(value("10.0.0.1:1", { v: "2" })).exec(); // same value
      await raw.put(`/services/${name}/c`).value(value("10.0.0.3:3")).exec();
      await eventually(() => w.latest().length === 2, 3_000, "c added");
      assert.equal(w.snapshots.length, count + 1, "no snapshot for unrelated or unchanged writes");
      await w.stop();
    });
  },
);

Deno.test(
  "watch() applies every event of a revision: a transaction of two, a prefix delete of three",
  NETWORK_TEST,
  async () => {
    await withEtcd(useEtcd, async ({ raw, client, name }) => {
      const w = follow(new EtcdDiscovery(client), name);
      await eventually(() => w.snapshots.length === 1, 3_000, "initial snapshot");
      // One transaction, one revision, two instances (what a Go registrant's txn or a batch writes).
      await raw.if(`/services/${name}/a`, "Create", "==", 0)
        .then(
          raw.put(`/services/${name}/a`).value(value("10.0.0.1:1")),
          raw.put(`/services/${name}/b`).value(value("10.0.0.2:2")),
        ).commit();
      await eventually(
        () => w.latest().length === 2,
        3_000,
        `both of the txn: ${JSON.stringify(w.latest())}`,
      );
      assert.deepEqual(w.snapshots.map((s) => s.instances.length), [0, 2], "one snapshot for one revision");
      await raw.put(`/services/${name}/c`).value(value("10.0.0.3:3")).exec();
      await eventually(() => w.latest().length === 3, 3_000, "c added");
      // `etcdctl del --prefix`: three deletions in one revision.
      await raw.delete().prefix(`/services/${name}/`).exec();
      await eventually(
        () => w.latest().length === 0,
        3_000,
        `all three removed: ${JSON.stringify(w.latest())}`,
      );
      assert.deepEqual(w.snapshots.map((s) => s.instances.length), [0, 2, 3, 0]);
      await w.stop();
    });
  },
);

Deno.test(
  "list() reads exactly its own keys, in pages: no neighbour's, and values too large for one message",
  NETWORK_TEST,
  async () => {
    await withEtcd(useEtcd, async ({ raw, client, name }) => {
      const big = "x".repeat(1_000_000);
      // Neighbours sort inside a plain prefix read of `/services/<name>`; five 1 MB values there
      // broke discover and send with RESOURCE_EXHAUSTED.
      for (let i = 0; i < 5; i++) {
        await raw.put(`/services/${name}2/n${i}`).value(big).exec();
        await raw.put(`/services/${name}-x/n${i}`).value(big).exec();
      }
      for (let i = 0; i < 12; i++) {
        await raw.put(`/services/${name}/i${String(i).padStart(2, "0")}`).value(value(`10.0.0.1:${i + 1}`))
          .exec();
      }
      const paged = new EtcdDiscovery(client, { pageSize: 5 });
      assert.deepEqual(
        (await paged.list(name)).map((i) => i.id),
        Array.from({ length: 12 }, (_, i) => `i${String(i).padStart(2, "0")}`),
      );
      // Our own records with large metadata: more than 4 MiB in all, so pages must shrink.
      const metadata = { blob: "y".repeat(900_000) };
      for (let i = 0; i < 6; i++) {
        await raw.put(`/services/${name}/big${i}`).value(value(`10.0.1.1:${i + 1}`, metadata)).exec();
      }
      const all = await new EtcdDiscovery(client).list(name);
      assert.equal(all.length, 18);
      assert.equal(all.find((i) => i.id === "big5")?.metadata.blob.length, 900_000);
    });
  },
);

Deno.test(
  "watch() sees every change made around an etcd restart (data kept) once, in order",
  PRIVATE_ETCD_ONLY,
  async () => {
    await withEtcd(startEtcd, async ({ etcd, raw, client, name }) => {
      const w = follow(new EtcdDiscovery(client), name);
      await eventually(() => w.snapshots.length === 1, 3_000, "initial snapshot");
      const put = (i: number) =>
        raw.put(`/services/${name}/n${String(i).padStart(2, "0")}`).value(value(`10.0.0.1:${i + 1}`)).exec();
      for (let i = 0; i < 5; i++) await put(i);
      await etcd.restart({ crash: true }); // this process keeps its watch open: no GOAWAY (see helper)
      for (let i = 5; i < 10; i++) await eventually(() => put(i).then(() => true), 5_000, `put ${i}`);
      await raw.delete().key(`/services/${name}/n00`).exec();
      await eventually(
        () => w.latest().length === 9 && w.latest()[0].id === "n01",
        10_000,
        "all changes seen",
      );
      // Snapshots only ever grow by the next instance, then lose n00: each change once, in order.
      const ids = w.snapshots.map((s) => s.instances.map((i) => i.id).join(","));
      for (let k = 1; k < ids.length; k++) assert.notEqual(ids[k], ids[k - 1], "no repeated snapshot");
      const sizes = w.snapshots.map((s) => s.instances.length);
      const peak = sizes.indexOf(10);
      assert.ok(peak > 0, `reached all ten: ${sizes}`);
      for (let k = 1; k <= peak; k++) assert.ok(sizes[k] > sizes[k - 1], `grows monotonically: ${sizes}`);
      assert.deepEqual(sizes.slice(peak + 1), [9]);
      await w.stop();
    });
  },
);

Deno.test(
  "watch() reconciles when etcd comes back empty (deletions a watch cannot deliver)",
  PRIVATE_ETCD_ONLY,
  async () => {
    await withEtcd(startEtcd, async ({ etcd, raw, client, name }) => {
      for (let i = 0; i < 20; i++) {
        await raw.put(`/services/${name}/pad`).value(value(`10.0.0.1:${i + 1}`))
          .exec();
      }
      await raw.put(`/services/${name}/a`).value(value("10.0.0.1:1")).exec();
      const w = follow(new EtcdDiscovery(client), name);
      await eventually(() => w.latest().length === 2, 3_000, "initial snapshot");
      await etcd.restart({ wipe: true, crash: true });
      await eventually(() => w.latest().length === 0, 10_000, "wiped store reflected");
      // The revision went backwards; new writes must still arrive.
      await eventually(
        () => raw.put(`/services/${name}/b`).value(value("10.0.0.2:2")).exec().then(() => true),
        5_000,
        "put b",
      );
      await eventually(() => w.latest().map((i) => i.id).join() === "b", 5_000, "write after wipe seen");
      await w.stop();
    });
  },
);
