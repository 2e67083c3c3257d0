/**
 * The `etcd:///<name>` resolver for grpc-js: a {@link EtcdDiscovery} watch feeding the channel's
 * address list. The only file that touches grpc-js's `experimental` API, which changed in 1.14
 * (grpc-js is pinned in deno.json).
 *
 * @example
 * ```ts
 * const close = registerEtcdResolver({ endpoints: ["localhost:2379"] });
 * const client = new NotificationClient("etcd:///notification-server", grpc.credentials.createInsecure(), {
 *   "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
 * });
 * ```
 */
import * as grpc from "@grpc/grpc-js";
import { type HostPort, parseHostPort } from "./host_port.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { createEtcdClient, type EtcdClient, type EtcdClientOptions } from "./etcd_client.ts";
import { EtcdDiscovery } from "./etcd_discovery.ts";
import type { ServiceInstance } from "./types.ts";

type Endpoint = grpc.experimental.Endpoint;
type GrpcUri = grpc.experimental.GrpcUri;

/** Options for {@link registerEtcdResolver}: the same etcd settings as the server's config. */
export interface EtcdResolverOptions extends Partial<EtcdClientOptions> {
  /** etcd endpoints, host:port or http(s)://host:port (unless `client` or `discovery` is given). */
  endpoints?: readonly string[];
  /** Key prefix of every service. @default "/services" */
  prefix?: string;
  /** Scheme to register. @default "etcd" */
  scheme?: string;
  /** Where resolution problems go. */
  logger?: Logger;
  /** Use this client instead of creating one (it is not closed by the returned function). */
  client?: EtcdClient;
  /**
   * Follow services through this discovery (its watches are shared with whatever else in the
   * process watches the same service through it) instead of one of the resolver's own.
   */
  discovery?: EtcdDiscovery;
  /** Called with the addresses each time a channel's list changes (for logs and metrics). */
  onUpdate?: (name: string, addrs: string[]) => void;
}

/**
 * Service config for `etcd:///` channels: round-robin over every address, and UNAVAILABLE retried
 * on another instance (a killed instance's calls fail over instead of failing). The retry policy
 * applies to every method (an empty name matches all).
 */
export const ROUND_ROBIN_SERVICE_CONFIG: string = JSON.stringify({
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [{
    name: [{}],
    retryPolicy: {
      maxAttempts: 4,
      initialBackoff: "0.05s",
      maxBackoff: "0.5s",
      backoffMultiplier: 2,
      retryableStatusCodes: ["UNAVAILABLE"],
    },
  }],
});

/** A grpc-js subchannel address for an instance (discovery only yields dialable addresses). */
function toEndpoint(instance: ServiceInstance): Endpoint {
  const { host, port } = parseHostPort(instance.addr) as HostPort;
  return { addresses: [{ host, port }] };
}

/** Schemes grpc-js has a resolver class of ours for (it cannot forget one). */
const registeredWithGrpc = new Set<string>();
/** What each registered scheme resolves through now. */
const bySchemes = new Map<string, { discovery: EtcdDiscovery; onUpdate?: EtcdResolverOptions["onUpdate"] }>();

/**
 * Registers the scheme with grpc-js; channels for `<scheme>:///<name>` then follow `<prefix>/<name>`.
 * A scheme is held by one registration at a time: registering it again before closing the first
 * throws (grpc-js schemes are process-wide, and a second registration would silently take the
 * first one's channels). Returns a function that gives the scheme back and stops the etcd client
 * it created (channels already open keep their last list).
 */
export function registerEtcdResolver(options: EtcdResolverOptions): () => void {
  const scheme = options.scheme ?? "etcd";
  if (bySchemes.has(scheme)) {
    throw new Error(
      `registerEtcdResolver: the scheme ${JSON.stringify(scheme)} is already registered and not closed; ` +
        `close the first registration, or pass a scheme of its own`,
    );
  }
  if (!options.discovery && !options.client && !options.endpoints?.length) {
    throw new Error("registerEtcdResolver needs endpoints, a client or a discovery");
  }
  // A client of our own only when given neither a discovery nor a client; closed with the scheme.
  const owned = options.discovery || options.client
    ? undefined
    : createEtcdClient({ dialTimeoutMs: 5_000, ...options, endpoints: options.endpoints ?? [] });
  const discovery = options.discovery ?? new EtcdDiscovery((options.client ?? owned)!, {
    prefix: options.prefix,
    logger: options.logger ?? silentLogger,
  });
  const binding = { discovery, onUpdate: options.onUpdate };
  bySchemes.set(scheme, binding);
  if (!registeredWithGrpc.has(scheme)) {
    grpc.experimental.registerResolver(scheme, resolverFor(scheme));
    registeredWithGrpc.add(scheme);
  }
  return () => {
    if (bySchemes.get(scheme) === binding) bySchemes.delete(scheme);
    owned?.close();
  };
}

/** The resolver class grpc-js gets for `scheme`: each channel's resolver follows the binding it finds. */
function resolverFor(scheme: string): Parameters<typeof grpc.experimental.registerResolver>[1] {
  class EtcdResolver implements grpc.experimental.Resolver {
    readonly #name: string;
    readonly #listener: grpc.experimental.ResolverListener;
    #abort?: AbortController;
    #last?: string;

    readonly #binding = bySchemes.get(scheme);

    constructor(target: GrpcUri, listener: grpc.experimental.ResolverListener) {
      this.#name = target.path.replace(/^\/+/, "");
      this.#listener = listener;
    }

    // grpc-js calls this again whenever a backend disconnects. The watch already pushes every real
    // change, so only the first call starts work; re-pushing here spun at 800k pushes a minute.
    updateResolution(): void {
      if (this.#abort) return;
      const abort = new AbortController();
      this.#abort = abort;
      void this.#follow(abort.signal);
    }

    destroy(): void {
      this.#abort?.abort();
      this.#abort = undefined;
      this.#last = undefined;
    }

    async #follow(signal: AbortSignal): Promise<void> {
      try {
        const binding = this.#binding;
        if (!binding) throw new Error(`the ${scheme}:/// resolver was closed before this channel started`);
        for await (const instances of binding.discovery.watch(this.#name, { signal })) {
          if (signal.aborted) return;
          const endpoints = instances.map(toEndpoint);
          const key = JSON.stringify(endpoints);
          if (key === this.#last) continue;
          this.#last = key;
          // An empty OK list really removes the last address; an error would keep the old ones.
          this.#listener(grpc.experimental.statusOrFromValue(endpoints), {}, null, "");
          binding.onUpdate?.(this.#name, instances.map((i) => i.addr));
        }
      } catch (error) {
        if (signal.aborted) return;
        this.#abort = undefined; // let the next updateResolution() retry
        this.#listener(
          grpc.experimental.statusOrFromError({
            code: grpc.status.UNAVAILABLE,
            details: `etcd resolution of ${JSON.stringify(this.#name)} failed: ${(error as Error).message}`,
            metadata: new grpc.Metadata(),
          }),
          {},
          null,
          "",
        );
      }
    }

    static getDefaultAuthority(target: GrpcUri): string {
      return target.path.replace(/^\/+/, "");
    }
  }

  return EtcdResolver;
}
