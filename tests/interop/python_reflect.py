"""A Python client we did not write the stack of: Debian's grpcio and protobuf (C++ backend).

Lists the services through server reflection (grpc.reflection.v1alpha, no generated stubs: the
few reflection fields are encoded by hand), loads every file descriptor it is given into a fresh
DescriptorPool (which rejects what protoc would not write), then calls NotificationService/Send
with a request built from those descriptors alone. Prints one JSON line.

usage: python_reflect.py HOST:PORT
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def fields(data):
    """(number, bytes) for each length-delimited field of a message; other wire types skipped."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, i = read_varint(data, i)
            yield number, data[i : i + size]
            i += size
        elif wire == 0:
            _, i = read_varint(data, i)
        else:
            raise ValueError(f"unexpected wire type {wire} in a reflection response")


def read_varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def main():
    addr = sys.argv[1]
    channel = grpc.insecure_channel(addr)
    reflect = channel.stream_stream(METHOD, request_serializer=None, response_deserializer=None)

    def ask(request):
        (response,) = list(reflect(iter([request]), timeout=10))
        parts = dict(fields(response))
        if 7 in parts:
            raise SystemExit(f"reflection error: {parts[7]!r}")
        return parts

    listed = ask(field(7, b"*"))[6]
    services = sorted(dict(fields(s))[1].decode() for _, s in fields(listed))
    files = {}
    for name in services:
        response = ask(field(4, name.encode()))[4]
        for number, blob in fields(response):
            if number == 1:
                proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
                files[proto.name] = proto
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)

    for name in sorted(files):
        add(name)
    send = pool.FindMethodByName("notification.v1.NotificationService.Send")
    request_type = message_factory.MessageFactory(pool).GetPrototype(send.input_type)
    response_type = message_factory.MessageFactory(pool).GetPrototype(send.output_type)
    request = request_type(recipient="python-reflect", title="from descriptors")
    call = channel.unary_unary(
        "/notification.v1.NotificationService/Send",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    response = call(request, timeout=10)
    print(
        json.dumps(
            {
                "services": services,
                "files": sorted(files),
                "send_fields": [f.name for f in send.output_type.fields],
                "delivered": response.delivered,
            }
        )
    )


if __name__ == "__main__":
    main()
