"""A raw HTTP/2 client (Debian's python3-h2) that pipelines GOOD whole Health/Check requests and then
one whose header list is BIG decoded bytes, all in one write, for tests/http2_abuse_test.ts.

usage: h2_pipelined_cut.py HOST:PORT GOOD BIG
Prints JSON: {"answered": {stream: grpc-status}, "goaway": the first GOAWAY, {"code": N, "last_stream": N} or null}.
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    good, big = int(sys.argv[2]), int(sys.argv[3])
    sock = socket.create_connection((host, int(port)), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    request = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", sys.argv[1]),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    empty_message = b"\x00\x00\x00\x00\x00"
    for _ in range(good):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, request)
        conn.send_data(stream, empty_message, end_stream=True)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, request + [("x-big", "v" * (big - 5 - 32))])
    conn.send_data(stream, empty_message, end_stream=True)
    sock.sendall(conn.data_to_send())

    answered = {}
    goaway = None
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not data:
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            print("protocol error", repr(error), file=sys.stderr)
            break
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                # The first one carries the reason; close() sends a NO_ERROR one after it.
                goaway = goaway or {"code": int(event.error_code), "last_stream": event.last_stream_id}
            elif isinstance(event, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                status = dict(event.headers).get("grpc-status")
                if status is not None:
                    answered[event.stream_id] = int(status)
        if len(answered) == good + 1:
            break  # nothing was cut
        pending = conn.data_to_send()
        if pending:
            try:
                sock.sendall(pending)
            except OSError:
                break
    print(json.dumps({"answered": answered, "goaway": goaway}))


if __name__ == "__main__":
    main()
