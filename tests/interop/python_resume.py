"""A Python grpcio client (Debian's packages) resuming Subscribes from a position, as a real client
keeps it: STREAMS concurrent streams on one channel (threads), each with a deadline and its own request
id. Messages are encoded and decoded by hand (raw protobuf).

usage:
  python_resume.py ADDR RECIPIENT POSITION EPOCH COUNT STREAMS
prints one JSON line per stream: {"stream", "recovered", "items": [{"title", "position", "epoch"}]}
"""
import json
import sys
import threading

import grpc


def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def read_varint(message, i):
    value = shift = 0
    while True:
        byte = message[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def fields(message):
    """Field number -> last value (int for varints, bytes for length-delimited)."""
    out = {}
    i = 0
    while i < len(message):
        key, i = read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], i = read_varint(message, i)
        elif wire == 2:
            length, i = read_varint(message, i)
            out[number] = message[i:i + length]
            i += length
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return out


def main():
    addr, recipient, position, epoch, count, streams = sys.argv[1:7]
    request = (length_delimited(1, recipient.encode()) + varint(2 << 3) + varint(1) + varint(3 << 3) +
               varint(int(position)) + length_delimited(4, epoch.encode()))
    ident = lambda b: b
    results = [None] * int(streams)
    with grpc.insecure_channel(addr) as channel:
        subscribe = channel.unary_stream(
            "/notification.v1.NotificationService/Subscribe", request_serializer=ident, response_deserializer=ident
        )

        def follow(index):
            stream = subscribe(request, timeout=10, metadata=(("x-request-id", "py-resume-%d" % index),))
            headers = dict(stream.initial_metadata())
            items = []
            for _ in range(int(count)):
                f = fields(next(stream))
                items.append({
                    "title": f.get(3, b"").decode(),
                    "position": f.get(7, 0),
                    "epoch": f.get(8, b"").decode(),
                })
            stream.cancel()
            results[index] = {"stream": index, "recovered": headers.get("notification-recovered"), "items": items}

        threads = [threading.Thread(target=follow, args=(i,)) for i in range(int(streams))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for result in results:
        if result is None:
            sys.exit("a stream failed")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
