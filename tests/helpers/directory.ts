/** Filling the cluster's recipient directory the way DirectoryPublisher writes it, for tests and benches. */
import type { Etcd3 } from "etcd3";
import { Buffer } from "node:buffer";
import { directoryKey } from "../../src/mesh/directory.ts";

/**
 * Writes `count` recipients `<prefix>-<i>` of instance `instance` under `lease` (a lease id as etcd
 * gives it), 128 per transaction as the publisher writes them, `lanes` transactions in flight.
 */
export async function fillDirectory(
  kv: Etcd3,
  root: string,
  options: { instance: string; prefix: string; count: number; lease: string; lanes?: number },
): Promise<void> {
  const lease = BigInt(options.lease).toString();
  let next = 0;
  const lane = async () => {
    while (next < options.count) {
      const from = next;
      next += 128;
      const success = Array.from({ length: Math.min(128, options.count - from) }, (_, j) => ({
        request_put: {
          key: Buffer.from(directoryKey(root, `${options.prefix}-${from + j}`, options.instance)),
          value: Buffer.from(options.instance),
          lease,
        },
      }));
      await kv.kv.txn({ success });
    }
  };
  await Promise.all(Array.from({ length: options.lanes ?? 1 }, lane));
}
