/** EtcdRegistrar against a real etcd: ownership, owned-only deletes, and repair of outside changes. */
import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import type { Logger } from "../src/_util/logger.ts";
import { createEtcdClient } from "../packages/registry/src/etcd_client.ts";
import { EtcdRegistrar, RegistrationConflictError } from "../packages/registry/src/etcd_registrar.ts";
import type { RegistrationState, ServiceInstance } from "../packages/registry/src/types.ts";
import { NETWORK_TEST, useEtcd } from "@notification-server/registry/testing";
import { eventually } from "./helpers/grpc.ts";
import { readRecord, scopedClient } from "./helpers/kv.ts";

function instance(id = crypto.randomUUID()): ServiceInstance {
  return { id, name: "reg-test", addr: "127.0.0.1:7000", metadata: { zone: "a" } };
}

function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (m) => lines.push(m),
    warn: (m) => lines.push(`WARN ${m}`),
    error: (m) => lines.push(`ERROR ${m}`),
  };
}

async function withSetup(
  fn: (endpoints: string[], raw: Etcd3, clients: Etcd3[]) => Promise<void>,
): Promise<void> {
  await using etcd = await useEtcd();
  using raw = scopedClient(etcd.endpoints);
  const clients: Etcd3[] = [];
  try {
    await fn(etcd.endpoints, raw, clients);
  } finally {
    for (const c of clients) c.close();
  }
}

function client(endpoints: string[], clients: Etcd3[]): Etcd3 {
  const c = createEtcdClient({ endpoints, dialTimeoutMs: 2_000 });
  clients.push(c);
  return c;
}

Deno.test(
  "register() writes the record under a lease of the configured TTL and deregister() removes it",
  NETWORK_TEST,
  async () => {
    await withSetup(async (endpoints, raw, clients) => {
      const states: RegistrationState[] = [];
      const reg = new EtcdRegistrar(client(endpoints, clients), {
        leaseTtlSeconds: 4,
        onStateChange: (s) => states.push(s),
      });
      const inst = instance();
      await reg.register(inst);
      const record = await readRecord(raw, `/services/reg-test/${inst.id}`);
      assert.equal(record?.lease, reg.leaseId);
      assert.equal(record?.grantedTtl, 4);
      assert.deepEqual(JSON.parse(record!.value), {
        Op: 0,
        Addr: "127.0.0.1:7000",
        Metadata: `{"zone":"a"}`,
      });
      assert.equal(await reg.deregister(), "deleted");
      assert.equal(await readRecord(raw, `/services/reg-test/${inst.id}`), undefined);
      const lease = await raw.leaseClient.leaseTimeToLive({ ID: record!.lease });
      assert.equal(Number(lease.TTL), -1, "lease revoked");
      assert.deepEqual(states, ["registered", "unregistered"]);
    });
  },
);

Deno.test(
  "register() refuses a key held by another live instance and leaves its record alone",
  NETWORK_TEST,
  async () => {
    await withSetup(async (endpoints, raw, clients) => {
      const inst = instance();
      const first = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 2 });
      await first.register(inst);
      const log = memoryLogger();
      const second = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 2, logger: log });
      const t0 = Date.now();
      await assert.rejects(
        second.register({ ...inst, addr: "127.0.0.1:7001" }),
        (e: Error) =>
          e instanceof RegistrationConflictError && e.message.includes(`/services/reg-test/${inst.id}`) &&
          e.message.includes(`lease ${first.leaseId}`),
      );
      assert.ok(Date.now() - t0 >= 2_500, "waited for the owner's TTL before refusing");
      const record = await readRecord(raw, `/services/reg-test/${inst.id}`);
      assert.equal(record?.lease, first.leaseId);
      assert.equal(JSON.parse(record!.value).Addr, "127.0.0.1:7000");
      await first.deregister();
    });
  },
);

Deno.test("register() takes over a key once the crashed owner's lease expires", NETWORK_TEST, async () => {
  await withSetup(async (endpoints, raw, clients) => {
    const inst = instance();
    const key = `/services/reg-test/${inst.id}`;
    const stale = await raw.leaseClient.leaseGrant({ TTL: 2 }); // never kept alive: a crashed run
    await raw.put(key).value('{"Op":0,"Addr":"127.0.0.1:6999"}').lease(stale.ID).exec();
    const reg = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 5 });
    await reg.register(inst);
    const record = await readRecord(raw, key);
    assert.equal(record?.lease, reg.leaseId);
    assert.equal(JSON.parse(record!.value).Addr, "127.0.0.1:7000");
    await reg.deregister();
  });
});

Deno.test(
  "deregister({ keepLease }) deletes the record but keeps the lease alive past its TTL until releaseLease()",
  NETWORK_TEST,
  async () => {
    await withSetup(async (endpoints, raw, clients) => {
      const inst = instance();
      const reg = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 2 });
      await reg.register(inst);
      const lease = reg.leaseId!;
      // What else lives under the lease (the directory entries of a draining instance).
      const other = `/notification-directory/reg-test/${inst.id}-held`;
      await raw.put(other).value(inst.id).lease(lease).exec();
      assert.equal(await reg.deregister({ keepLease: true }), "deleted");
      assert.equal(await raw.get(reg.key).exists(), false, "the record is gone at once");
      // Still kept alive: past twice its TTL the entry under it is there.
      await new Promise((r) => setTimeout(r, 4_500));
      assert.equal(await raw.get(other).string(), inst.id, "kept alive past its TTL");
      await reg.releaseLease();
      assert.equal(await raw.get(other).exists(), false, "revoked with what was under it");
      const ttl = await raw.leaseClient.leaseTimeToLive({ ID: lease });
      assert.equal(Number(ttl.TTL), -1, "the lease no longer exists");
      await reg.releaseLease(); // a second call does nothing
    });
  },
);

Deno.test("deregister() never deletes a record that another lease now owns", NETWORK_TEST, async () => {
  await withSetup(async (endpoints, raw, clients) => {
    const inst = instance();
    const key = `/services/reg-test/${inst.id}`;
    const reg = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 5 });
    await reg.register(inst);
    const replacement = await raw.leaseClient.leaseGrant({ TTL: 30 });
    await raw.put(key).value('{"Op":0,"Addr":"127.0.0.1:7002"}').lease(replacement.ID).exec();
    assert.equal(await reg.deregister(), "absent");
    const record = await readRecord(raw, key);
    assert.equal(record?.lease, replacement.ID);
    await raw.leaseClient.leaseRevoke({ ID: replacement.ID });
  });
});

Deno.test("a record deleted from outside is written back within a second", NETWORK_TEST, async () => {
  await withSetup(async (endpoints, raw, clients) => {
    const inst = instance();
    const key = `/services/reg-test/${inst.id}`;
    const log = memoryLogger();
    const reg = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 10, logger: log });
    await reg.register(inst);
    const t0 = Date.now();
    await raw.delete().key(key).exec();
    await eventually(
      async () => (await readRecord(raw, key))?.lease === reg.leaseId,
      1_000,
      "record written back",
    );
    console.log(`external delete -> restored in ${Date.now() - t0} ms`);
    assert.ok(log.lines.some((l) => l.includes("was changed from outside")), log.lines.join("\n"));
    // Overwritten by hand without a lease: also put back.
    await raw.put(key).value("garbage").exec();
    await eventually(
      async () => (await readRecord(raw, key))?.value.startsWith('{"Op":0'),
      1_000,
      "overwrite repaired",
    );
    await reg.deregister();
  });
});

Deno.test(
  "a lease revoked from outside is replaced by a new lease and the record re-written",
  NETWORK_TEST,
  async () => {
    await withSetup(async (endpoints, raw, clients) => {
      const inst = instance();
      const key = `/services/reg-test/${inst.id}`;
      const log = memoryLogger();
      const states: RegistrationState[] = [];
      const reg = new EtcdRegistrar(client(endpoints, clients), {
        leaseTtlSeconds: 10,
        logger: log,
        onStateChange: (s) => states.push(s),
      });
      await reg.register(inst);
      const oldLease = reg.leaseId!;
      const t0 = Date.now();
      await raw.leaseClient.leaseRevoke({ ID: oldLease });
      const record = await eventually(
        async () => {
          const r = await readRecord(raw, key);
          return r && r.lease !== oldLease ? r : undefined;
        },
        3_000,
        "record under a new lease",
      );
      console.log(`lease revoked -> restored in ${Date.now() - t0} ms`);
      assert.equal(record.lease, reg.leaseId);
      assert.equal(record.grantedTtl, 10);
      assert.deepEqual(states, ["registered", "unregistered", "registered"]);
      assert.equal(log.lines.filter((l) => l.includes("Registration lost")).length, 1, log.lines.join("\n"));
      assert.ok(log.lines.some((l) => /Registration restored after \d/.test(l)), log.lines.join("\n"));
      await reg.deregister();
    });
  },
);

Deno.test(
  "register() and deregister() overlapping, in every order: nothing stays registered or kept alive",
  NETWORK_TEST,
  async () => {
    await withSetup(async (endpoints, raw, clients) => {
      // deregister() while register() is still running (same turn: the grant is in flight).
      const reg = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 3 });
      const inst = instance();
      const registering = reg.register(inst).then(() => undefined, (error: Error) => error);
      const outcome = await reg.deregister();
      assert.match(String(await registering), /deregister\(\) was called/);
      assert.ok(outcome === "deleted" || outcome === "absent", outcome);
      assert.equal(await reg.deregister(), outcome, "a second deregister() says the same");
      const key = `/services/reg-test/${inst.id}`;
      assert.equal(await readRecord(raw, key), undefined, "no record after deregister()");
      const leases = await raw.leaseClient.leaseLeases({});
      assert.equal(leases.leases.length, 0, `no lease kept alive: ${JSON.stringify(leases.leases)}`);
      assert.equal(reg.state, "unregistered");

      // deregister() a little later: the record was written meanwhile and is removed.
      const later = new EtcdRegistrar(client(endpoints, clients), { leaseTtlSeconds: 3 });
      const second = instance();
      const writing = later.register(second).catch(() => {}); // it may finish first, or be ended
      await new Promise((r) => setTimeout(r, 5));
      await later.deregister();
      await writing;
      assert.equal(await readRecord(raw, `/services/reg-test/${second.id}`), undefined);

      // register() after deregister() is refused, not half-done.
      await assert.rejects(reg.register(instance()), /after deregister\(\)/);
      assert.equal((await raw.leaseClient.leaseLeases({})).leases.length, 0);
    });
  },
);
