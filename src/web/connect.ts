/**
 * NotificationService over the Connect and gRPC-Web protocols (@connectrpc/connect's router), a
 * second adapter of the core beside the gRPC one: the caller and request go to the core, its
 * answers and failures come back as messages and Connect errors (same codes); a plain unary Send
 * is answered without the router ({@link plainSend}). Native gRPC stays on grpc-js: Deno.serve
 * cannot send trailers.
 */
import { create, fromBinary, fromJsonString, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createConnectRouter,
  createContextKey,
  type HandlerContext,
} from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { EPOCH_HEADER, RECOVERED_HEADER } from "@notification-server/client";
import {
  type Caller,
  type Failure,
  type NotificationCore,
  type Receipt,
  sendManyResult,
} from "../notification/service.ts";
import {
  type Notification,
  NotificationSchema,
  NotificationService,
  type SendRequest,
  SendRequestSchema,
  SendResponseSchema,
} from "./gen/notification_pb.ts";
import { failureResponse } from "./errors.ts";
import { PulledOutput } from "./pulled_output.ts";

/** The caller's address (`host:port`), handed to the handlers by the server. */
export const PEER = createContextKey<string>("", { description: "peer" });

/** Headers a browser page may read from a Subscribe response (CORS). */
export const STREAM_HEADERS = [RECOVERED_HEADER, EPOCH_HEADER];

function callerOf(context: HandlerContext): Caller {
  return {
    authorization: context.requestHeader.get("authorization") ?? undefined,
    peer: context.values.get(PEER),
  };
}

function connectError(failure: Failure): ConnectError {
  return new ConnectError(failure.details, failure.code as number as Code);
}

/** Each notification decoded once for all the streams it fans out to (the core encodes it once). */
const decodedOnce = new WeakMap<Uint8Array, Notification>();

function decoded(bytes: Uint8Array): Notification {
  let message = decodedOnce.get(bytes);
  if (!message) decodedOnce.set(bytes, message = fromBinary(NotificationSchema, bytes));
  return message;
}

/** A receipt with its 64-bit fields as the generated messages hold them. */
function withInt64s<T extends Receipt>(receipt: T): T & { createdAtMs: bigint; position: bigint } {
  return { ...receipt, createdAtMs: BigInt(receipt.createdAtMs), position: BigInt(receipt.position) };
}

/** The handlers of Send and Subscribe over `core`, at their standard paths. */
export function connectHandlers(
  core: NotificationCore,
  options: { maxBodyBytes: number },
): UniversalHandler[] {
  const router = createConnectRouter({
    grpc: false,
    readMaxBytes: options.maxBodyBytes,
    // A misspelt field is an error, not a silent default; zeros are written (`"delivered": 0`).
    jsonOptions: { ignoreUnknownFields: false, alwaysEmitImplicit: true },
  });
  router.service(NotificationService, {
    // The generated messages have the core's field names.
    async send(request, context) {
      const answer = await core.send(callerOf(context), request);
      if ("code" in answer) throw connectError(answer);
      return withInt64s(answer);
    },
    async sendMany(request, context) {
      const answer = await core.sendMany(callerOf(context), request);
      if ("code" in answer) throw connectError(answer);
      return { results: answer.map((result) => withInt64s(sendManyResult(result))) };
    },
    async *subscribe(request, context) {
      const out = new PulledOutput();
      context.signal.addEventListener("abort", () => out.left(), { once: true });
      void core.subscribe(callerOf(context), {
        recipient: request.recipient,
        recover: request.recover,
        position: Number(request.position),
        epoch: request.epoch,
      }, out);
      try {
        const started = await out.started;
        if ("code" in started) throw connectError(started as Failure);
        for (const [name, value] of Object.entries(started)) context.responseHeader.set(name, value);
        for (;;) {
          const next = await out.next();
          if ("bytes" in next) yield decoded(next.bytes);
          else if ("end" in next) {
            if (next.end) throw connectError(next.end);
            return;
          }
        }
      } finally {
        out.left();
      }
    },
  });
  return router.handlers;
}

/** The content types of a plain Connect unary call, JSON or binary. */
const UNARY_JSON = new Set([
  "application/json",
  "application/json; charset=utf-8",
  "application/json;charset=utf-8",
]);
const UNARY_PROTO = "application/proto";

/**
 * A plain Connect unary Send (the curl request: POST, JSON or binary, a Content-Length, no
 * compression, timeout or GET form) answered without the router, which made a Send cost 5.8 times
 * the CPU (bench/http.ts). Anything else, and every other call, goes to the router: undefined. The
 * answer is the router's: the same status, content type and fields (tests/web_test.ts compares them).
 */
export function plainSend(
  core: NotificationCore,
  request: Request,
  peer: string,
): Promise<Response> | undefined {
  const headers = request.headers;
  const type = headers.get("content-type") ?? "";
  const json = UNARY_JSON.has(type);
  if (!json && type !== UNARY_PROTO) return undefined;
  if (
    headers.has("content-encoding") || headers.has("connect-timeout-ms") || !headers.has("content-length")
  ) {
    return undefined;
  }
  const version = headers.get("connect-protocol-version");
  if (version !== null && version !== "1") return undefined;
  return answerSend(core, request, peer, json);
}

async function answerSend(
  core: NotificationCore,
  request: Request,
  peer: string,
  json: boolean,
): Promise<Response> {
  let input: SendRequest;
  try {
    input = json
      ? fromJsonString(SendRequestSchema, await request.text(), { ignoreUnknownFields: false })
      : fromBinary(SendRequestSchema, new Uint8Array(await request.arrayBuffer()));
  } catch (error) {
    const message = (error as Error).message.split("\n")[0];
    return Response.json({ code: "invalid_argument", message }, { status: 400 });
  }
  const answer = await core.send(
    { authorization: request.headers.get("authorization") ?? undefined, peer },
    input,
  );
  if ("code" in answer) return failureResponse(answer);
  if (!json) {
    const message = create(SendResponseSchema, withInt64s(answer));
    return new Response(toBinary(SendResponseSchema, message), { headers: { "content-type": UNARY_PROTO } });
  }
  // proto3 JSON of SendResponse with every field written (int64s as strings), in field order.
  return new Response(
    JSON.stringify({
      id: answer.id,
      createdAtMs: String(answer.createdAtMs),
      delivered: answer.delivered,
      instanceId: answer.instanceId,
      position: String(answer.position),
      epoch: answer.epoch,
      stored: answer.stored,
      code: 0,
      error: "",
    }),
    { headers: { "content-type": "application/json" } },
  );
}
