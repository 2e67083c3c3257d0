"""Debian's Python grpcio calling as services call each other: one channel (one connection) for every
pattern in turn; the patterns are those of tests/interop/node_matrix.cjs. Messages are encoded by hand.

usage: python_matrix.py HOST:PORT PATTERN...
Prints one JSON line per pattern: {"pattern":P,"ok":N,"failed":N,"firstError":"...","open":bool}.
"""
import json
import os
import sys
import threading
import time
import uuid

import grpc

from python_auth import field, titles_of


def send_request(recipient, title):
    return field(1, recipient) + field(2, title)


def fixed(size, fields):
    md = []
    left = size
    for i in range(fields):
        name = "x-fixed-%d" % i
        part = left if i == fields - 1 else size // fields
        md.append((name, "v" * (part - len(name) - 32)))
        left -= part
    return lambda: md


def request_id():
    return [("x-request-id", str(uuid.uuid4()))]


def plan(pattern):
    kind, *args = pattern.split(":")
    n = [int(a) for a in args]
    if kind == "deadline":
        return dict(calls=n[0], callers=1, metadata=lambda: [])
    if kind == "request-id":
        return dict(calls=n[0], callers=1, metadata=request_id)
    if kind == "binary":
        return dict(calls=n[0], callers=1, metadata=lambda: [("x-trace-bin", os.urandom(16))])
    if kind == "keys":
        keys = [("x-key-%d" % i, "value-%d" % i) for i in range(n[0])]
        return dict(calls=n[1], callers=1, metadata=lambda: keys)
    if kind == "fixed":
        return dict(calls=200, callers=1, metadata=fixed(n[0], n[1]))
    if kind == "concurrent":
        return dict(calls=n[0] * n[1], callers=n[0], metadata=request_id)
    if kind == "subscribe":
        return dict(calls=n[0], callers=1, metadata=request_id, subscribe=True)
    raise SystemExit("unknown pattern %s" % pattern)


def main():
    addr, patterns = sys.argv[1], sys.argv[2:]
    channel = grpc.insecure_channel(addr)
    ident = lambda x: x
    send = channel.unary_unary(
        "/notification.v1.NotificationService/Send", request_serializer=ident, response_deserializer=ident
    )
    subscribe = channel.unary_stream(
        "/notification.v1.NotificationService/Subscribe", request_serializer=ident, response_deserializer=ident
    )

    def call(md, recipient, title):
        try:
            send(send_request(recipient, title), timeout=5, metadata=md)
            return None
        except grpc.RpcError as error:
            return "%s %s" % (error.code().name, error.details())

    for pattern in patterns:
        p = plan(pattern)
        recipient = "py-" + str(uuid.uuid4())
        titles = []
        ended = []
        stream = None
        if p.get("subscribe"):
            stream = subscribe(field(1, recipient))

            def read():
                try:
                    for message in stream:
                        titles.append(titles_of(message))
                    ended.append("ended")
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.CANCELLED:
                        ended.append("%s %s" % (error.code().name, error.details()))

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            for _ in range(100):
                if titles:
                    break
                call([], recipient, "matrix-ready")
                time.sleep(0.05)
        counts = {"next": 0, "ok": 0, "failed": 0, "first": ""}
        lock = threading.Lock()

        def lane():
            while True:
                with lock:
                    if counts["next"] >= p["calls"]:
                        return
                    counts["next"] += 1
                error = call(p["metadata"](), "matrix-nobody", "matrix-call")
                with lock:
                    if error:
                        counts["failed"] += 1
                        counts["first"] = counts["first"] or error
                    else:
                        counts["ok"] += 1

        lanes = [threading.Thread(target=lane) for _ in range(p["callers"])]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
        result = {"pattern": pattern, "ok": counts["ok"], "failed": counts["failed"], "firstError": counts["first"]}
        if stream is not None:
            error = call(request_id(), recipient, "matrix-last")
            for _ in range(100):
                if "matrix-last" in titles:
                    break
                time.sleep(0.02)
            result["open"] = error is None and "matrix-last" in titles and not ended
            if not result["open"] and not result["firstError"]:
                result["firstError"] = "subscribe: %s" % (ended[0] if ended else "matrix-last not received")
            stream.cancel()
        print(json.dumps(result), flush=True)
    channel.close()


if __name__ == "__main__":
    main()
