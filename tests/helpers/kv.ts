/** Direct etcd reads for assertions (a second, independent client). */
import type { Etcd3 } from "etcd3";
import { createEtcdClient } from "../../packages/registry/src/etcd_client.ts";

/**
 * An etcd3 client on `endpoints` for test assertions. Built like the library's clients so grpc-js
 * shares one connection per etcd member: a Deno process holding two connections to an etcd that
 * shuts down gracefully can abort in nghttp2 (denoland/deno#36788), which the restart tests do.
 */
export function rawClient(endpoints: string[]): Etcd3 {
  return createEtcdClient({ endpoints, dialTimeoutMs: 2_000 });
}

/** The record at `key` with its lease and the lease's TTLs, or undefined. */
export async function readRecord(
  client: Etcd3,
  key: string,
): Promise<{ value: string; lease: string; ttl: number; grantedTtl: number } | undefined> {
  const res = await client.get(key).exec();
  const kv = res.kvs[0];
  if (!kv) return undefined;
  let ttl = -1;
  let grantedTtl = 0;
  if (kv.lease !== "0") {
    const lease = await client.leaseClient.leaseTimeToLive({ ID: kv.lease });
    ttl = Number(lease.TTL);
    grantedTtl = Number(lease.grantedTTL);
  }
  return { value: kv.value.toString(), lease: kv.lease, ttl, grantedTtl };
}

/** {@link rawClient} closed at the end of its scope: `using kv = scopedClient(endpoints)`. */
export function scopedClient(endpoints: string[]): Etcd3 & Disposable {
  const client = rawClient(endpoints);
  return Object.assign(client, { [Symbol.dispose]: () => client.close() });
}
