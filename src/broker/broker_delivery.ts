/**
 * Delivery through NATS JetStream (delivery.ts's broker implementation), one per serving thread.
 *
 * Send stores the notification in the stream under its recipient's subject; Sends to one recipient
 * go at once, from any thread or instance. The stream republishes each stored notification to the
 * recipient's live subject with its position and, set by the server as it stores, the recipient's
 * previous position (RePublish's Nats-Last-Sequence): so every live copy names its predecessor and
 * a feed can tell a lost copy from a quiet spell. A thread listens there for each recipient it has
 * streams of, while it has them. Each stream's {@link PositionedFeed} writes them in order, filling
 * gaps from the stream's history (history_reader.ts: direct gets, and batches through a short-lived
 * consumer for a long replay), and replays a recovering stream's missed notifications before live
 * ones, at the stream's pace (Sink.room). History drops the oldest first, so a recovery is exact
 * when the client's last position is still held.
 */
import { setImmediate } from "node:timers";
import type { MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { BATCH, type Batch, HistoryReader } from "./history_reader.ts";
import type { Delivery, FeedStart, Once, Sent, Sink, StartAt } from "../notification/delivery.ts";
import { connectBroker, ensureStream, type NatsConfig, streamManager } from "./connection.ts";
import { type Positioned, PositionedFeed } from "./positioned_feed.ts";
import { Publisher } from "./publisher.ts";
import { liveSubject, storedSubject } from "./subjects.ts";
import { decodeNotification, encodeNotification } from "../notification/codec.ts";

/**
 * The recipient's previous position, stated by earlier versions' Sends (checked by JetStream, one
 * Send per recipient at a time); still read from what they stored.
 */
const STATED_PREV_HEADER = "Nats-Expected-Last-Subject-Sequence";
/** Set by the stream on each republished copy: its position, and the recipient's previous one. */
const POSITION_HEADER = "Nats-Sequence";
const LIVE_PREV_HEADER = "Nats-Last-Sequence";
/** Live copies offered before yielding (offerAll). */
const SLICE = 64;
/** Failed Sends have the stream checked at most this often (a NATS cluster electing a leader fails many). */
const RECHECK_MS = 1_000;

/** What a thread's broker reports (metrics, health). */
export interface BrokerHooks {
  /** The connection went down (false) or came back (true). */
  onConnection?: (connected: boolean) => void;
  /** A notification was stored, `ms` after the Send asked. */
  onStored?: (ms: number) => void;
  /** A recovering stream started; `recovered` false when something before it was lost. */
  onReplay?: (recovered: boolean) => void;
  /**
   * A stream had to write past notifications the history no longer held (how many is not known:
   * positions are shared by every recipient).
   */
  onGap?: () => void;
  /** A notification was written to one stream (live or replayed). */
  onWritten?: () => void;
  /** Where the thread's log lines go. */
  warn?: (line: string) => void;
}

/** A recipient this thread has streams of: its live subscription and their feeds. */
interface Held {
  subscription: Subscription;
  /** Resolves once the server has the subscription: republished copies reach it from then on. */
  ready: Promise<void>;
  feeds: Set<PositionedFeed>;
  /** Feeds started: each gets every notification stored from then on. */
  started: number;
}

/** The streams other serving threads of the instance have of a recipient (instance_streams.ts). */
export interface OtherThreads {
  streams(recipient: string): number;
  /** This thread now has `count` started streams of `recipient`. */
  changed(recipient: string, count: number): void;
}

export class BrokerDelivery implements Delivery {
  readonly positions = true;
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #js: JetStreamClient;
  readonly #publisher: Publisher;
  readonly #nats: NatsConfig;
  readonly #hooks: BrokerHooks;
  #epoch: string;
  #connected = true;
  readonly #held = new Map<string, Held>();
  /** With workers: the other threads' streams, counted in `delivered`. */
  others?: OtherThreads;
  readonly #watching: Promise<void>;
  /** A check of the stream under way (one at a time). */
  #rechecking: Promise<void> | undefined;
  /** When a failed Send last had the stream checked. */
  #checkedAt = 0;

  private constructor(
    nc: NatsConnection,
    jsm: JetStreamManager,
    nats: NatsConfig,
    epoch: string,
    hooks: BrokerHooks,
  ) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#js = jetstream(nc, { timeout: nats.publishTimeoutMs });
    this.#publisher = new Publisher(nc, nats.publishTimeoutMs);
    this.#nats = nats;
    this.#hooks = hooks;
    this.#epoch = epoch;
    this.#watching = this.#watch();
  }

  /**
   * Connects (trying until `deadline`), makes the stream match the config, and delivers through it.
   * Throws {@link BrokerUnavailableError} when it cannot.
   */
  static async connect(
    nats: NatsConfig,
    options: { name: string; deadline?: number; signal?: AbortSignal; hooks?: BrokerHooks },
  ): Promise<BrokerDelivery> {
    const nc = await connectBroker(nats, options);
    try {
      const jsm = await streamManager(nc, nats.publishTimeoutMs);
      const epoch = await ensureStream(jsm, nats);
      return new BrokerDelivery(nc, jsm, nats, epoch, options.hooks ?? {});
    } catch (error) {
      await nc.close();
      throw error;
    }
  }

  /** The epoch positions belong to: when the stream was created. */
  get epoch(): string {
    return this.#epoch;
  }

  get connected(): boolean {
    return this.#connected;
  }

  async send(recipient: string, bytes: Uint8Array, once?: Once): Promise<Sent> {
    if (!this.#connected) return { unavailable: "the broker (NATS) is unreachable: nothing was stored" };
    const started = performance.now();
    try {
      // No headers but the key's: the stream is the only one that takes these subjects (JetStream
      // refuses overlapping streams), and its name in the answer is checked.
      const ack = await this.#publisher.publish(
        storedSubject(this.#nats.subjectPrefix, recipient),
        bytes,
        once?.key,
      );
      if (ack.stream !== this.#nats.stream) {
        return { unavailable: `the broker stored it in stream ${JSON.stringify(ack.stream)}, not ours` };
      }
      if (ack.duplicate) return await this.#first(ack.seq);
      this.#hooks.onStored?.(performance.now() - started);
      // Every started stream of the recipient gets it from the stream, in its turn (the live copy,
      // or the history when that copy is lost).
      const delivered = (this.#held.get(recipient)?.started ?? 0) + (this.others?.streams(recipient) ?? 0);
      return { delivered, position: ack.seq, epoch: this.#epoch, stored: true };
    } catch (error) {
      const { message } = error as Error;
      // No stream takes the subject (deleted meanwhile): made again for the next Send.
      if (
        /no responders|stream not found|jetstream is not enabled/i.test(message) &&
        Date.now() - this.#checkedAt > RECHECK_MS
      ) {
        this.#checkedAt = Date.now();
        void this.#recheckStream("after a Send found none");
      }
      return { unavailable: `the broker did not store it: ${message}` };
    }
  }

  open(recipient: string, sink: Sink, from?: StartAt): () => void {
    const feed = new PositionedFeed({
      readAfter: new HistoryReader({
        readAfter: (position) => this.#readAfter(recipient, position),
        readFrom: (position) => this.#readFrom(recipient, position),
      }).readAfter,
      write: (bytes) => {
        const written = sink.write(bytes);
        if (written) this.#hooks.onWritten?.();
        return written;
      },
      fail: sink.fail,
      room: () => sink.room(),
      onLost: () => this.#hooks.onGap?.(),
    });
    const held = this.#hold(recipient);
    held.feeds.add(feed);
    let counted = false;
    const ready = (start: FeedStart) => {
      counted = true;
      held.started++;
      this.others?.changed(recipient, held.started);
      sink.ready(start);
    };
    const start = async () => {
      await held.ready;
      if (!from) {
        // Live from now: after the recipient's last stored notification.
        const last = await this.#jsm.direct.getMessage(this.#nats.stream, {
          last_by_subj: storedSubject(this.#nats.subjectPrefix, recipient),
        });
        if (feed.closed) return;
        ready({ epoch: this.#epoch });
        feed.start(last?.seq ?? 0, false);
        return;
      }
      // Another epoch's positions mean nothing here: everything held, and not recovered. Nor does
      // one the stream has not reached (made up, or from a stream since recreated under the same
      // name): waiting for positions past it would hold back the ones that come.
      let sameEpoch = from.epoch === "" || from.epoch === this.#epoch;
      let after = sameEpoch ? from.position : 0;
      let first = await this.#readAfter(recipient, after);
      if (!first && after > 0 && after > await this.#lastPosition()) {
        sameEpoch = false;
        after = 0;
        first = await this.#readAfter(recipient, 0);
      }
      if (feed.closed) return;
      // A predecessor stated by an earlier version's Send tells it directly; otherwise history drops
      // the oldest first, so nothing after `after` was dropped while `after` is still held.
      const recovered = sameEpoch &&
        (first?.prev !== undefined ? first.prev <= after : await this.#nothingDroppedAfter(recipient, after));
      if (feed.closed) return;
      this.#hooks.onReplay?.(recovered);
      ready({ recovered, epoch: this.#epoch });
      // `first` is the first held after `after`: written next, whatever was dropped before it.
      if (first) feed.offer(first.prev === undefined ? { ...first, prev: after } : first);
      feed.start(Math.min(first?.prev ?? after, after), true);
    };
    start().catch((error: Error) => {
      if (feed.closed) return;
      feed.close();
      sink.fail(`the broker could not start this stream: ${error.message}`);
    });
    return () => {
      feed.close();
      if (counted) {
        counted = false;
        held.started--;
        this.others?.changed(recipient, held.started);
      }
      if (held.feeds.delete(feed) && held.feeds.size === 0 && this.#held.get(recipient) === held) {
        this.#held.delete(recipient);
        held.subscription.unsubscribe();
      }
    };
  }

  /** Stops listening and closes the connection. */
  async close(): Promise<void> {
    for (const held of this.#held.values()) for (const feed of held.feeds) feed.close();
    this.#held.clear();
    this.#publisher.abandon("the service is stopping");
    await this.#nc.close();
    await this.#watching;
  }

  #hold(recipient: string): Held {
    const existing = this.#held.get(recipient);
    if (existing) return existing;
    const feeds = new Set<PositionedFeed>();
    const subscription = this.#nc.subscribe(liveSubject(this.#nats.subjectPrefix, recipient), {
      callback: (error, msg) => {
        if (error || !msg.headers) return;
        const position = Number(msg.headers.get(POSITION_HEADER));
        if (!Number.isSafeInteger(position) || position <= 0) return;
        const positioned = {
          position,
          prev: Number(msg.headers.get(LIVE_PREV_HEADER) || 0),
          bytes: this.#withPosition(msg.data, position),
        };
        void offerAll(feeds, positioned);
      },
    });
    const held = { subscription, feeds, ready: this.#nc.flush(), started: 0 };
    this.#held.set(recipient, held);
    return held;
  }

  async #readAfter(recipient: string, position: number): Promise<Positioned | undefined> {
    const stored = await this.#jsm.direct.getMessage(this.#nats.stream, {
      seq: position + 1,
      next_by_subj: storedSubject(this.#nats.subjectPrefix, recipient),
    });
    if (!stored) return undefined;
    return {
      position: stored.seq,
      prev: prevOf(stored.header),
      bytes: this.#withPosition(stored.data, stored.seq),
    };
  }

  /** Up to a batch of the recipient's stored notifications from `position` on, in order (history_reader.ts). */
  async #readFrom(recipient: string, position: number): Promise<Batch> {
    const consumer = await this.#js.consumers.get(this.#nats.stream, {
      filter_subjects: storedSubject(this.#nats.subjectPrefix, recipient),
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: position,
    });
    const items: Positioned[] = [];
    let more = false;
    try {
      // Ends at the last pending message, so it never waits out `expires` (a batch starts at a
      // stored position: it has at least one).
      const messages = await consumer.fetch({ max_messages: BATCH, expires: this.#nats.publishTimeoutMs });
      for await (const message of messages) {
        items.push({
          position: message.seq,
          prev: prevOf(message.headers),
          bytes: this.#withPosition(message.data, message.seq),
        });
        more = message.info.pending > 0;
        if (!more || items.length === BATCH) break;
      }
    } finally {
      void consumer.delete().catch(() => {});
    }
    return { items, more };
  }

  /** The stream's last position now. */
  async #lastPosition(): Promise<number> {
    return (await this.#jsm.streams.info(this.#nats.stream)).state.last_seq;
  }

  /**
   * Whether nothing of the recipient's stored after `position` was dropped: `position` is the
   * recipient's and still held (history drops the oldest first), or the stream never dropped
   * anything. Otherwise it cannot be told, and the answer is no.
   */
  async #nothingDroppedAfter(recipient: string, position: number): Promise<boolean> {
    if (position > 0) {
      const stored = await this.#jsm.direct.getMessage(this.#nats.stream, { seq: position });
      if (stored?.subject === storedSubject(this.#nats.subjectPrefix, recipient)) return true;
    }
    const { state } = await this.#jsm.streams.info(this.#nats.stream);
    return state.first_seq <= 1 && (state.num_deleted ?? 0) === 0;
  }

  /** A repeated keyed Send: the stored first one (nothing was stored or delivered now). */
  async #first(position: number): Promise<Sent> {
    const stored = await this.#jsm.direct.getMessage(this.#nats.stream, { seq: position });
    const notification = stored ? decodeNotification(stored.data) : "it is no longer stored";
    if (typeof notification === "string") {
      return { unavailable: `the broker holds this key's first Send at ${position}, but ${notification}` };
    }
    const first = { id: notification.id, createdAtMs: Number(notification.createdAtMs) };
    return { delivered: 0, position, epoch: this.#epoch, stored: true, first };
  }

  /**
   * The stored Notification with its position and epoch: protobuf merges concatenated messages, so
   * a Notification of only those two fields is appended.
   */
  #withPosition(bytes: Uint8Array, position: number): Uint8Array {
    const suffix = encodeNotification({ position, epoch: this.#epoch });
    const out = new Uint8Array(bytes.length + suffix.length);
    out.set(bytes);
    out.set(suffix, bytes.length);
    return out;
  }

  /** Follows the connection: Sends are refused while it is down; feeds catch up when it is back. */
  async #watch(): Promise<void> {
    for await (const status of this.#nc.status()) {
      if (status.type === "disconnect") {
        this.#connected = false;
        this.#publisher.abandon("the connection to the broker was lost before it answered: it may be stored");
        this.#hooks.onConnection?.(false);
      } else if (status.type === "reconnect") {
        this.#connected = true;
        this.#hooks.onConnection?.(true);
        await this.#recheckStream("after a reconnect");
        // What was stored while the connection was down (through other servers) is read now.
        for (const held of this.#held.values()) for (const feed of held.feeds) feed.catchUp();
      }
    }
  }

  /**
   * Makes the stream match the config again (a reconnect; a Send that found no stream: someone
   * deleted it). When it was recreated, positions start again in a new epoch: every stream of this
   * thread ends (UNAVAILABLE), so that its client comes back with its position and is told it
   * could not be recovered, rather than wait on positions that will not come.
   */
  #recheckStream(when: string): Promise<void> {
    this.#rechecking ??= (async () => {
      try {
        const epoch = await ensureStream(this.#jsm, this.#nats);
        if (epoch === this.#epoch) return;
        this.#hooks.warn?.(
          `The JetStream stream ${this.#nats.stream} was recreated (epoch ${this.#epoch} -> ${epoch}): positions start again`,
        );
        this.#epoch = epoch;
        for (const held of [...this.#held.values()]) {
          for (const feed of [...held.feeds]) feed.end("the broker's stream was recreated: subscribe again");
        }
      } catch (error) {
        this.#hooks.warn?.(`The JetStream stream could not be checked ${when}: ${(error as Error).message}`);
      } finally {
        this.#rechecking = undefined;
      }
    })();
    return this.#rechecking;
  }
}

/**
 * Offers a live copy to every feed of its recipient, yielding to the event loop every
 * {@link SLICE} feeds, as the mesh's hub does: a Send to thousands of streams must not stall the
 * thread, and gRPC sends each slice before the next is made (10 000 writes made at once: 30 000
 * deliveries a second; in slices: 42 000). Copies never overtake each other: setImmediate runs in order, and a
 * later copy's first slice is one an earlier copy has passed.
 */
async function offerAll(feeds: Set<PositionedFeed>, positioned: Positioned): Promise<void> {
  if (feeds.size <= SLICE) {
    for (const feed of feeds) feed.offer(positioned);
    return;
  }
  const targets = [...feeds];
  for (let i = 0; i < targets.length; i++) {
    if (i > 0 && i % SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
    targets[i].offer(positioned);
  }
}

/** The predecessor an earlier version's Send stated, or undefined. */
function prevOf(header: MsgHdrs | undefined): number | undefined {
  const text = header?.get(STATED_PREV_HEADER);
  const prev = text ? Number(text) : NaN;
  return Number.isSafeInteger(prev) && prev >= 0 ? prev : undefined;
}
