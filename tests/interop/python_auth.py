"""A Python grpcio client (Debian's packages) calling with JWT bearer tokens, and HS256 tokens made
by hand (hmac + base64, no JWT library), for the auth tests. Messages are encoded by hand too.

usage:
  python_auth.py mint SECRET_FILE SUB SCOPE TTL_SECONDS [RECIPIENTS_JSON]
                                                            prints a token ("-" scope: none)
  python_auth.py send ADDR TOKEN RECIPIENT                  prints the status code name
  python_auth.py subscribe ADDR TOKEN RECIPIENT SECONDS      prints JSON: titles, final status
("-" token: none)
"""
import base64
import hashlib
import hmac
import json
import sys
import time

import grpc


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret_file, sub, scope, ttl, recipients=None):
    with open(secret_file, "rb") as f:
        secret = f.read().rstrip(b"\n")
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + int(ttl)}
    if scope != "-":
        claims["scope"] = scope
    if recipients is not None:
        claims["recipients"] = json.loads(recipients)
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(signature)


def field(number, text):
    data = text.encode()
    return bytes([number << 3 | 2, len(data)]) + data


def titles_of(message):
    """Notification.title (field 3) of an encoded Notification."""
    i = 0
    while i < len(message):
        key = message[i]
        i += 1
        wire = key & 7
        if wire == 0:
            while message[i] & 0x80:
                i += 1
            i += 1
            continue
        length = 0
        shift = 0
        while True:
            byte = message[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if key >> 3 == 3:
            return message[i : i + length].decode()
        i += length
    return ""


def metadata(token):
    return [] if token == "-" else [("authorization", "Bearer " + token)]


def main():
    mode = sys.argv[1]
    if mode == "mint":
        print(mint(*sys.argv[2:7]))
        return
    addr, token, recipient = sys.argv[2:5]
    channel = grpc.insecure_channel(addr)
    if mode == "send":
        call = channel.unary_unary("/notification.v1.NotificationService/Send")
        try:
            call(field(1, recipient) + field(2, "from python"), metadata=metadata(token), timeout=10)
            print("OK")
        except grpc.RpcError as error:
            print(error.code().name)
        return
    seconds = float(sys.argv[5])
    call = channel.unary_stream("/notification.v1.NotificationService/Subscribe")
    stream = call(field(1, recipient), metadata=metadata(token), timeout=seconds)
    titles = []
    status = "OK"
    try:
        for message in stream:
            titles.append(titles_of(message))
    except grpc.RpcError as error:
        status = error.code().name
    print(json.dumps({"titles": titles, "status": status}))


if __name__ == "__main__":
    main()
