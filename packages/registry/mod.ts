/**
 * Service registration and discovery on etcd, for gRPC services: register an instance under a
 * lease that is kept alive and restored by itself, list and watch a service's instances, and dial
 * `etcd:///<name>` with grpc-js and round-robin. Records are the JSON etcd's Go naming package
 * reads, so Go clients resolve the same instances. Underneath, {@link watchRanges} follows any set
 * of etcd key ranges as a consistent view (a full read, then every revision whole, resumed after a
 * dropped stream); the notification service keeps its recipient directory with it.
 *
 * @example Register an instance, then watch its service
 * ```ts
 * import { createEtcdClient, EtcdDiscovery, EtcdRegistrar } from "@notification-server/registry";
 *
 * const etcd = createEtcdClient({ endpoints: ["localhost:2379"], dialTimeoutMs: 5_000 });
 * const registrar = new EtcdRegistrar(etcd, { leaseTtlSeconds: 10 });
 * await registrar.register({ id: "a", name: "greeter", addr: "127.0.0.1:50051", metadata: {} });
 * for await (const instances of new EtcdDiscovery(etcd).watch("greeter")) {
 *   console.log(instances.map((i) => i.addr));
 *   break;
 * }
 * await registrar.deregister();
 * etcd.close();
 * ```
 *
 * @module
 */
export type {
  DeregisterOutcome,
  Discovery,
  Layout,
  Registrar,
  RegistrationState,
  ServiceInstance,
} from "./src/types.ts";
export { decodeRecord, DEFAULT_PREFIX, encodeInstance, instanceKey, serviceKey } from "./src/codec.ts";
export { formatHostPort, type HostPort, isWildcard, parseHostPort } from "./src/host_port.ts";
export {
  createEtcdClient,
  deadlineAfter,
  DEFAULT_MAX_RESPONSE_BYTES,
  describeEtcdError,
  type EtcdClient,
  type EtcdClientOptions,
  type EtcdTlsOptions,
  EtcdUnavailableError,
  waitForEtcd,
} from "./src/etcd_client.ts";
export {
  type DeregisterOptions,
  EtcdRegistrar,
  type EtcdRegistrarOptions,
  type RegisterOptions,
  type RegistrarEvent,
  RegistrationConflictError,
} from "./src/etcd_registrar.ts";
export { EtcdDiscovery, type EtcdDiscoveryOptions } from "./src/etcd_discovery.ts";
export {
  entriesOf,
  type KeyRange,
  rangeOps,
  type RangeOptions,
  type RangeUpdate,
  type ResyncReason,
  RevisionGate,
  watchRanges,
} from "./src/range_watch.ts";
export {
  type EtcdResolverOptions,
  registerEtcdResolver,
  ROUND_ROBIN_SERVICE_CONFIG,
} from "./src/grpc_resolver.ts";
export { type LogFields, type Logger, silentLogger } from "./src/logger.ts";
