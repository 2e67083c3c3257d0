/**
 * The one seam below the notification core (service.ts): where a Send goes, and where a Subscribe
 * stream's notifications come from. Two implementations, one chosen per process (src/mode.ts): the
 * mesh (mesh/mesh_delivery.ts: this thread's hub, then the worker pool and the peers found through
 * the etcd directory) and the broker (broker/broker_delivery.ts: NATS JetStream stores each
 * notification with a position and hands it to the instances holding its recipient).
 */

import type { Once } from "./once.ts";

export type { Once };

/** What became of one Send. */
export type Sent =
  | {
    /**
     * Streams that took it: the whole cluster's (mesh); with a broker, this instance's streams of
     * the recipient, each of which gets it from the stream in its turn (other instances' too).
     */
    delivered: number;
    /** Where it is stored, and whether it is: 0, "" and false in the mesh. */
    position: number;
    epoch: string;
    stored: boolean;
    /**
     * Set when a Send with the same key went out within the window: nothing went out now, and
     * this is the first one's notification (its position is the one above).
     */
    first?: { id: string; createdAtMs: number };
  }
  | {
    /** Why it was not taken: the client may try again (UNAVAILABLE). */
    unavailable: string;
  };

/** Where a recovering stream resumes: after `position` of `epoch` (0: everything held). */
export interface StartAt {
  position: number;
  /** "" takes the current epoch's positions as they are. */
  epoch: string;
}

/** How a stream starts, told once it is routed (its response headers). */
export interface FeedStart {
  /** With a StartAt: whether nothing between it and the first notification was lost. */
  recovered?: boolean;
  /** The epoch the stream's positions belong to (broker). */
  epoch?: string;
}

/**
 * Where a feed puts one stream's notifications. `ready` comes once, before any `write` of a
 * recovering stream; `fail` ends the stream (UNAVAILABLE) when its feed cannot go on.
 */
export interface Sink {
  /** A Send to any instance reaches this stream from now on. */
  ready(start: FeedStart): void;
  /**
   * Writes one encoded Notification; false when the stream cannot take it (gone, or cut off as too
   * slow): the feed stops.
   */
  write(bytes: Uint8Array): boolean;
  fail(reason: string): void;
  /**
   * Resolves once the stream's client has taken enough of what it was written to take more without
   * being cut off as too slow: a feed replaying history waits for it, so a replay goes at the
   * client's pace (live notifications do not wait).
   */
  room(): Promise<void>;
}

export interface Delivery {
  /** Whether streams can start from a position (SubscribeRequest.recover). */
  readonly positions: boolean;
  /**
   * Delivers (and, with a broker, first stores) one notification made by `encodeNotification`;
   * with `once`, only if no Send with its key went out within the duplicate window.
   */
  send(recipient: string, bytes: Uint8Array, once?: Once): Promise<Sent>;
  /**
   * Feeds `recipient`'s notifications into `sink`, from `from` when given (positions only); returns
   * what stops it (idempotent).
   */
  open(recipient: string, sink: Sink, from?: StartAt): () => void;
}
