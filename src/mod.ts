/**
 * The library surface for other TypeScript programs: register an instance, discover instances,
 * and dial `etcd:///<name>` with round-robin.
 *
 * @example
 * ```ts
 * import { createEtcdClient, EtcdDiscovery } from "./src/mod.ts";
 * const discovery = new EtcdDiscovery(createEtcdClient({ endpoints: ["localhost:2379"], dialTimeoutMs: 5000 }));
 * for await (const instances of discovery.watch("notification-server")) console.log(instances);
 * ```
 */
export type {
  DeregisterOutcome,
  Discovery,
  Layout,
  Registrar,
  RegistrationState,
  ServiceInstance,
} from "./registry/types.ts";
export { decodeRecord, encodeInstance, instanceKey, serviceKey } from "./registry/codec.ts";
export {
  createEtcdClient,
  type EtcdClientOptions,
  type EtcdTlsOptions,
  EtcdUnavailableError,
  waitForEtcd,
} from "./registry/etcd_client.ts";
export {
  type DeregisterOptions,
  EtcdRegistrar,
  type EtcdRegistrarOptions,
  type RegisterOptions,
  type RegistrarEvent,
  RegistrationConflictError,
} from "./registry/etcd_registrar.ts";
export { EtcdDiscovery, type EtcdDiscoveryOptions, type ResyncReason } from "./registry/etcd_discovery.ts";
export {
  type EtcdResolverOptions,
  registerEtcdResolver,
  ROUND_ROBIN_SERVICE_CONFIG,
} from "./registry/grpc_resolver.ts";
export { type Config, ConfigError, loadConfig, parseConfig } from "./config.ts";
export { services } from "./protos.ts";
export { subscribe, type SubscribeOptions } from "./subscribe.ts";
export type { Notification } from "./notification/hub.ts";
