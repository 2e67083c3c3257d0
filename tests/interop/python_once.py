"""A Python grpcio client (Debian's packages) retrying with idempotency keys, as a real client does
after a lost answer: a Send to the first recipient and a SendMany to all of them, each made twice at
once with the key, with a deadline and a request id of its own per call. Messages are encoded and
decoded by hand (raw protobuf).

usage:
  python_once.py ADDR KEY RECIPIENT...
prints one JSON line: {"send": [[id, position] x2], "many": [[[id, position, code] per result] x2]}
"""
import json
import sys
import uuid

import grpc

from python_resume import fields, length_delimited, read_varint


def repeated(message, number):
    """Every length-delimited value of field `number`, in order."""
    out = []
    i = 0
    while i < len(message):
        key, i = read_varint(message, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = read_varint(message, i)
        elif wire == 2:
            length, i = read_varint(message, i)
            if field == number:
                out.append(message[i:i + length])
            i += length
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return out


def result(message):
    f = fields(message)
    return [f.get(1, b"").decode(), f.get(5, 0), f.get(8, 0)]


def main():
    addr, key, recipients = sys.argv[1], sys.argv[2], sys.argv[3:]
    send = (length_delimited(1, recipients[0].encode()) + length_delimited(2, b"once from python") +
            length_delimited(5, key.encode()))
    many = b"".join(length_delimited(1, r.encode()) for r in recipients)
    many += length_delimited(2, b"many from python") + length_delimited(5, key.encode())
    identity = lambda b: b
    with grpc.insecure_channel(addr) as channel:
        calls = {
            name: channel.unary_unary("/notification.v1.NotificationService/" + name,
                                      request_serializer=identity, response_deserializer=identity)
            for name in ("Send", "SendMany")
        }
        metadata = lambda: [("x-request-id", str(uuid.uuid4()))]
        # Both tries of each call at once (futures on the one channel): a retry that goes out while
        # the first try is still under way.
        sends = [calls["Send"].future(send, timeout=10, metadata=metadata()) for _ in range(2)]
        manys = [calls["SendMany"].future(many, timeout=10, metadata=metadata()) for _ in range(2)]
        out = {
            "send": [result(f.result())[:2] for f in sends],
            "many": [[result(r) for r in repeated(f.result(), 1)] for f in manys],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
