/**
 * Ending etcd3 watchers without crashing the process.
 *
 * When etcd cancels a watch itself (its start revision was compacted, typically on a resume after
 * a reconnect), etcd3 emits 'error' and drops the watcher from its stream, but the watcher keeps
 * its id. Calling `cancel()` on it then sends a cancel request that etcd answers, and etcd3 throws
 * "Failed to find watcher for IWatchResponse" inside its stream handler: an uncaught exception
 * that ended the process. So a watcher is either forgotten (etcd cancelled it)
 * or released (we cancel it), never both, and a release never waits for ever.
 */
import type { Watcher } from "etcd3";
import { WatchManager } from "etcd3/lib/watch.js";

/**
 * The same crash can come from a race no caller can see: etcd cancels one watcher (compaction)
 * while we cancel another of the same resync, and etcd's answer then names a watch etcd3 has
 * already dropped. etcd3 throws for a response with an unknown watch id; etcd's own Go client
 * ignores it (there is nothing to deliver it to), and so does this patch of etcd3's WatchManager,
 * which every client shares. etcd3 is pinned in deno.json; a test pins the patch in place.
 */
interface WatchManagerInternals {
  watchers: { id: string | null }[];
  handleResponse(res: { watch_id: string }): void;
}
const managerPrototype = (WatchManager as unknown as { prototype: WatchManagerInternals }).prototype;
const handleResponse = managerPrototype.handleResponse;
if (typeof handleResponse === "function") {
  managerPrototype.handleResponse = function (this: WatchManagerInternals, res: { watch_id: string }) {
    if (!this.watchers.some((w) => w.id === res.watch_id)) return;
    handleResponse.call(this, res);
  };
}

/** True when the patch above is in place (false if etcd3's internals changed). */
export const UNKNOWN_WATCH_RESPONSES_IGNORED = typeof handleResponse === "function";

const cancelledByEtcd = new WeakSet<Watcher>();

/** How long a release waits for etcd to confirm a cancel (it waits for nothing while disconnected). */
const RELEASE_TIMEOUT_MS = 1_000;

/** Stops listening to `watcher` and swallows its later errors; etcd3 emits 'error' with no listener as a throw. */
function silence(watcher: Watcher): void {
  watcher.removeAllListeners();
  watcher.on("error", () => {});
}

/** Call from a watcher's 'error' handler: etcd already cancelled it, so it is only let go. */
export function forgetCancelledWatcher(watcher: Watcher): void {
  cancelledByEtcd.add(watcher);
  silence(watcher);
}

/** Cancels a watcher we no longer want; bounded, never throws, and a no-op for one etcd cancelled. */
export async function releaseWatcher(watcher: Watcher): Promise<void> {
  silence(watcher);
  if (cancelledByEtcd.has(watcher)) return;
  cancelledByEtcd.add(watcher); // a second release must not send a second cancel either
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    watcher.cancel().catch(() => {}),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, RELEASE_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
}
