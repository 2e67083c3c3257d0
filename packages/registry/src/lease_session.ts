/**
 * One etcd lease treated as a session (etcd's `concurrency.Session`): granted, kept alive in the
 * background, `lost` once etcd stops honouring it, and closed by revoking it within one TTL.
 * etcd3 never re-grants a lost lease; the registrar starts a new session instead.
 */
import type { Etcd3, Lease } from "etcd3";
import type { Logger } from "./logger.ts";
import { describeEtcdError } from "./etcd_client.ts";

/** A granted lease with its keep-alive running. */
export class LeaseSession {
  readonly id: string;
  readonly ttlSeconds: number;
  /** Resolves with the reason once the lease is lost (expired, revoked elsewhere, etcd wiped). */
  readonly lost: Promise<Error>;
  readonly #lease: Lease;
  #alive = true;

  private constructor(lease: Lease, id: string, ttlSeconds: number, logger: Logger, onFailure: () => void) {
    this.#lease = lease;
    this.id = id;
    this.ttlSeconds = ttlSeconds;
    // Log the first failure of a run only: etcd3 retries every 100 ms while etcd is away.
    let failing = false;
    lease.on("keepaliveFailed", (error) => {
      onFailure();
      if (!failing && this.#alive) {
        logger.warn(`Lease keep-alive failed: ${describeEtcdError(error)} (retrying)`);
      }
      failing = true;
    });
    lease.on("keepaliveSucceeded", () => {
      failing = false;
    });
    this.lost = new Promise((resolve) => {
      lease.on("lost", (error) => {
        this.#alive = false;
        resolve(error);
      });
    });
  }

  /**
   * Grants a lease of `ttlSeconds` through `client`; rejects with etcd's error when it cannot.
   * `onFailure` hears of every failed keep-alive attempt (etcd3 retries every 100 ms while etcd is away).
   */
  static async grant(client: Etcd3, options: {
    ttlSeconds: number;
    logger: Logger;
    onFailure?: () => void;
  }): Promise<LeaseSession> {
    const { ttlSeconds, logger, onFailure = () => {} } = options;
    const lease = client.lease(ttlSeconds);
    // A failed grant also emits `lost`; without a listener EventEmitter would throw it.
    lease.on("lost", () => {});
    try {
      const id = await lease.grant();
      return new LeaseSession(lease, id, ttlSeconds, logger, onFailure);
    } catch (error) {
      lease.release();
      throw error;
    }
  }

  /** False once etcd has reported the lease gone or it was closed. */
  get alive(): boolean {
    return this.#alive;
  }

  /** Marks the lease dead (etcd said it does not exist) and stops keeping it alive. */
  abandon(): void {
    this.#alive = false;
    this.#lease.release();
  }

  /**
   * Stops keep-alive and revokes the lease. Bounded by one TTL: past that the lease has expired
   * anyway. Never throws; returns the error when revoke did not go through.
   */
  async close(): Promise<Error | undefined> {
    if (!this.#alive) {
      this.#lease.release();
      return undefined;
    }
    this.#alive = false;
    try {
      await this.#lease.revoke({ deadline: Date.now() + this.ttlSeconds * 1000 });
      return undefined;
    } catch (error) {
      this.#lease.release();
      return error as Error;
    }
  }
}
