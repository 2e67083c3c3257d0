/**
 * The registry's interfaces, for clients and for other backends; the etcd implementation lives in
 * `etcd_registrar.ts` and `etcd_discovery.ts`, the stored format in `codec.ts`. The service itself
 * uses the etcd classes directly: the mesh keeps its directory under the registration's lease.
 */

/**
 * Which key layout a registration uses in etcd: `instance` (`<prefix>/<name>/<id>`, etcd naming's
 * JSON value) or `service` (the original `<prefix>/<name>` with a plain host:port value).
 */
export type Layout = "instance" | "service";

/** One running instance of a service, as clients see it. */
export interface ServiceInstance {
  /** Unique within the service; with the `instance` layout, the last key segment. */
  readonly id: string;
  /** The service name, e.g. "notification-server". */
  readonly name: string;
  /** The host:port clients dial. */
  readonly addr: string;
  /** Free-form string data published with the instance (version, zone, ...). */
  readonly metadata: Readonly<Record<string, string>>;
}

/** Publishes this process's instance and withdraws it. */
export interface Registrar {
  /** Publishes `instance` and keeps it published (re-registering after faults) until `deregister`. */
  register(instance: ServiceInstance, options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Withdraws the instance (only the record this registrar wrote) and stops keeping it alive.
   * Never throws; says what happened. Safe while `register` is still running; `signal` bounds it.
   */
  deregister(options?: { signal?: AbortSignal }): Promise<DeregisterOutcome>;
}

/** Finds instances of a service. */
export interface Discovery {
  /** The instances registered right now. */
  list(name: string): Promise<ServiceInstance[]>;
  /**
   * Full, consistent snapshots of the instance list: the current one first, then one after each
   * change, until `signal` aborts or the iterator is returned.
   */
  watch(name: string, options?: { signal?: AbortSignal }): AsyncIterable<ServiceInstance[]>;
}

/**
 * What deregistration did: deleted our record; found none of ours (gone, or held by another
 * instance); or could not reach the registry (the record expires with its lease).
 */
export type DeregisterOutcome = "deleted" | "absent" | "unreachable";

/** Registration state as the supervisor sees it. */
export type RegistrationState = "registered" | "unregistered";
