/**
 * Makes Deno's `node:http2` safe for gRPC servers and clients (grpc-js) in this version of Deno:
 * importing this module installs, once per thread, a guard against the use-after-free that a
 * peer's GOAWAY can trigger (denoland/deno#36788), and a close for HTTP/2 connections that never
 * sends a GOAWAY. A server can also have every connection's input checked before nghttp2 sees it
 * ({@link limitServerInput}). {@link http2Guard} says whether the guard is in force.
 *
 * @example Refuse to run unguarded
 * ```ts
 * import { http2Guard } from "@notification-server/http2-guard";
 *
 * const guard = http2Guard();
 * if (!guard.installed) console.warn(`HTTP/2 crash guard not installed: ${guard.reason}`);
 * ```
 *
 * @module
 */
export {
  type ConnectionInput,
  CUT_GRACE_MS,
  http2Guard,
  http2GuardDeferrals,
  type Http2GuardState,
  type InputCut,
  limitServerInput,
  type ServerInputPolicy,
} from "./src/http2_guard.ts";
export { endThenDestroy } from "./src/http2_close.ts";
