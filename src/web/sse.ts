/**
 * `GET /v1/recipients/{recipient}/events`: one recipient's notifications as Server-Sent Events, for
 * a browser's EventSource. Each notification is one `message` event whose data is the Notification
 * as proto3 JSON; with a broker its `id` is `<epoch>:<position>`, so the browser's own reconnect
 * (`Last-Event-ID`) resumes right after it. The answer waits until the stream is routed, so a
 * refusal is an HTTP status (EventSource does not retry those) and a 200 means Sends reach it.
 */
import { fromBinary, toJsonString } from "@bufbuild/protobuf";
import { EPOCH_HEADER, RECOVERED_HEADER } from "@notification-server/client";
import type { Caller, Failure, NotificationCore, SubscribeInput } from "../notification/service.ts";
import { NotificationSchema } from "./gen/notification_pb.ts";
import { CONNECT_CODE, failureResponse, refusal } from "./errors.ts";
import { PulledOutput } from "./pulled_output.ts";

const encoder = new TextEncoder();
const KEEP_ALIVE = encoder.encode(": keep-alive\n\n");
const EVENT_STREAM_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-store",
  // Asks nginx not to buffer the stream.
  "x-accel-buffering": "no",
};

/** What every SSE stream of one HTTP port shares: its `retry:` and its keep-alive timer. */
export interface SseStreams {
  retryMs: number;
  keepAlive: KeepAlive;
}

/**
 * Where a `Last-Event-ID` resumes: after `<epoch>:<position>`; undefined for none, a string for an
 * id that is not ours.
 */
export function resumeFrom(lastEventId: string | null): SubscribeInput | string | undefined {
  if (lastEventId === null || lastEventId === "") return undefined;
  const colon = lastEventId.lastIndexOf(":");
  const digits = lastEventId.slice(colon + 1);
  const position = Number(digits);
  if (colon < 1 || !/^\d+$/.test(digits) || !Number.isSafeInteger(position)) {
    return `Last-Event-ID "${
      lastEventId.slice(0, 100)
    }" is not an event id of this service (<epoch>:<position>)`;
  }
  return { recipient: "", recover: true, position, epoch: lastEventId.slice(0, colon) };
}

/** Serves one SSE stream of `recipient` for `caller`, resuming after `Last-Event-ID` when given. */
export async function serveEvents(
  core: NotificationCore,
  caller: Caller,
  recipient: string,
  request: Request,
  gone: AbortSignal,
  sse: SseStreams,
  onOpen: (delta: 1 | -1) => void,
): Promise<Response> {
  const resume = resumeFrom(request.headers.get("last-event-id"));
  if (typeof resume === "string") return refusal(400, "invalid_argument", resume);
  const out = new PulledOutput();
  gone.addEventListener("abort", () => out.left(), { once: true });
  void core.subscribe(caller, { ...resume, recipient }, out);
  const started = await out.started;
  if ("code" in started) {
    out.left();
    return failureResponse(started as Failure);
  }
  onOpen(1);
  out.onEnd(() => onOpen(-1));
  const head = [`retry: ${sse.retryMs}\n\n`];
  const recovered = started[RECOVERED_HEADER];
  if (recovered !== undefined) {
    head.push(
      event("recovery", JSON.stringify({ recovered: recovered === "true", epoch: started[EPOCH_HEADER] })),
    );
  }
  sse.keepAlive.add(out);
  out.onEnd(() => sse.keepAlive.delete(out));
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode(head.join("")));
    },
    async pull(controller) {
      const next = await out.next();
      if ("idle" in next) controller.enqueue(KEEP_ALIVE);
      else if ("bytes" in next) controller.enqueue(notificationEvent(next.bytes));
      else {
        controller.enqueue(encoder.encode(endEvent(next.end)));
        controller.close();
      }
    },
    cancel() {
      out.left();
    },
  }, { highWaterMark: 0 });
  return new Response(body, { headers: EVENT_STREAM_HEADERS });
}

/** A stream that ends at once, telling EventSource to reconnect after `retry:` (a draining server). */
export function reconnectLater(retryMs: number): Response {
  const text = `retry: ${retryMs}\n\n${endEvent(undefined)}`;
  return new Response(text, { headers: { ...EVENT_STREAM_HEADERS, connection: "close" } });
}

function event(name: string, data: string): string {
  return `event: ${name}\ndata: ${data}\n\n`;
}

/** Each notification's event, made once for all the streams it fans out to (the core encodes it once). */
const eventOnce = new WeakMap<Uint8Array, Uint8Array>();

/** A notification as a `message` event; with a position, its id says where to resume. */
function notificationEvent(bytes: Uint8Array): Uint8Array {
  let event = eventOnce.get(bytes);
  if (event) return event;
  const notification = fromBinary(NotificationSchema, bytes);
  const id = notification.position > 0n ? `id: ${notification.epoch}:${notification.position}\n` : "";
  const data = toJsonString(NotificationSchema, notification, { alwaysEmitImplicit: true });
  event = encoder.encode(`${id}data: ${data}\n\n`);
  eventOnce.set(bytes, event);
  return event;
}

/**
 * The keep-alive comments of one HTTP port's SSE streams: one timer for all of them, which gives a
 * comment to each stream that is waiting for its next event (never to one whose client is not
 * reading: it would queue).
 */
export class KeepAlive {
  readonly #streams = new Set<PulledOutput>();
  readonly #periodMs: number;
  #timer?: ReturnType<typeof setInterval>;

  constructor(periodMs: number) {
    this.#periodMs = periodMs;
  }

  add(out: PulledOutput): void {
    this.#streams.add(out);
    this.#timer ??= setInterval(() => {
      for (const stream of this.#streams) if (stream.waiting) stream.idle();
    }, this.#periodMs);
  }

  delete(out: PulledOutput): void {
    this.#streams.delete(out);
    if (this.#streams.size > 0) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * The last event: why the stream ends. EventSource then reconnects by itself after `retry:` (to
 * another instance when this one drains; with a broker it loses nothing).
 */
function endEvent(failure: Failure | undefined): string {
  const data = failure
    ? { code: CONNECT_CODE[failure.code], message: failure.details }
    : { code: "ok", message: "the server is shutting down: reconnect" };
  return event("end", JSON.stringify(data));
}
