/**
 * NotificationService over grpc-js: a thin adapter of the core (notification/service.ts). It reads
 * the caller off the call, hands the request over, and writes the answer; Subscribe streams are
 * written through a {@link GrpcSubscriberOutput}.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { checkedDecoder } from "../notification/codec.ts";
import { services } from "../transport/protos.ts";
import {
  type Caller,
  type Failure,
  type NotificationCore,
  type SendInput,
  type SendManyInput,
  sendManyResult,
  type SubscribeInput,
  type SubscriberOutput,
} from "../notification/service.ts";
import { onCallEnd, resetStream } from "../transport/streams.ts";

/** HTTP/2 ENHANCE_YOUR_CALM: clients report a stream reset with it as RESOURCE_EXHAUSTED. */
const ENHANCE_YOUR_CALM = 0xb;

/** The part of a grpc-js call that tells who calls. */
interface CallFrom {
  metadata: grpc.Metadata;
  getPeer(): string;
}

/** Who calls, read off the call only when the caller policy asks (most Sends run without one). */
class GrpcCaller implements Caller {
  readonly #call: CallFrom;

  constructor(call: CallFrom) {
    this.#call = call;
  }

  get authorization(): string | undefined {
    const value = this.#call.metadata.get("authorization")[0];
    return typeof value === "string" ? value : undefined;
  }

  get peer(): string {
    return this.#call.getPeer();
  }
}

/** The Notification service's handlers over `core`. */
export function notificationHandlers(core: NotificationCore): grpc.UntypedServiceImplementation {
  return {
    send: async (call: grpc.ServerUnaryCall<SendInput, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const answer = await core.send(new GrpcCaller(call), call.request);
      if ("code" in answer) callback(answer);
      else callback(null, answer);
    },
    sendMany: async (
      call: grpc.ServerUnaryCall<SendManyInput, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) => {
      const answer = await core.sendMany(new GrpcCaller(call), call.request);
      if ("code" in answer) callback(answer);
      else callback(null, { results: answer.map(sendManyResult) });
    },
    // Written with bytes that encodeNotification made; the server's serializer passes them through.
    subscribe: (call: grpc.ServerWritableStream<SubscribeInput, Uint8Array>) =>
      core.subscribe(new GrpcCaller(call), call.request, new GrpcSubscriberOutput(call)),
  };
}

/** A Subscribe call as the core writes to it (a class: one small object per stream). */
class GrpcSubscriberOutput implements SubscriberOutput {
  readonly #call: grpc.ServerWritableStream<SubscribeInput, Uint8Array>;

  constructor(call: grpc.ServerWritableStream<SubscribeInput, Uint8Array>) {
    this.#call = call;
  }

  get gone(): boolean {
    return this.#call.cancelled || this.#call.destroyed;
  }

  onEnd(listener: () => void): void {
    onCallEnd(this.#call, listener);
  }

  start(headers: Record<string, string>): void {
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
    this.#call.sendMetadata(metadata);
  }

  write(bytes: Uint8Array, taken: () => void): void {
    this.#call.write(bytes, taken);
  }

  fail(failure: Failure): void {
    this.#call.emit("error", failure);
  }

  end(): void {
    this.#call.end();
  }

  reset(): void {
    if (!this.#call.writableFinished && !this.#call.destroyed) resetStream(this.#call, ENHANCE_YOUR_CALM);
  }
}

/**
 * The NotificationService definition for servers: requests are checked for invalid UTF-8 (codec.ts's
 * invalidUtf8) and Subscribe writes accept bytes already encoded by encodeNotification.
 */
export function notificationServerDefinition(): grpc.ServiceDefinition {
  const service = services().Notification.service;
  const serialize = service.Subscribe.responseSerialize;
  return {
    ...service,
    Send: { ...service.Send, requestDeserialize: checkedDecoder("Send", service.Send.requestDeserialize) },
    SendMany: {
      ...service.SendMany,
      requestDeserialize: checkedDecoder("SendMany", service.SendMany.requestDeserialize),
    },
    Subscribe: {
      ...service.Subscribe,
      requestDeserialize: checkedDecoder("Subscribe", service.Subscribe.requestDeserialize),
      responseSerialize: (value: object) =>
        value instanceof Uint8Array ? Buffer.from(value) : serialize(value),
    },
  };
}
