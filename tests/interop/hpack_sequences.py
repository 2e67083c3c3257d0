"""Header blocks from a real HPACK encoder, with what a real decoder makes of them (Debian's
python3-hpack), for src/transport/hpack_size_test.ts: the meter must agree on every block.

usage: hpack_sequences.py SEED BLOCKS
Prints one JSON line per block: {"block": HEX, "size": N | null (the decoder refused it),
"table": entries in the decoder's dynamic table after it}. Sequences change values every block,
evict, switch Huffman on and off, mark fields never-indexed, shrink and regrow the table with
size updates, and include blocks no decoder may accept (indexes outside the table, a size
update past the limit, truncated fields, EOS in a Huffman string).
"""
import json
import random
import sys

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError, OversizedHeaderListError

NAMES = [":path", ":authority", "content-type", "user-agent", "grpc-timeout", "te", "x-request-id",
         "authorization", "cookie", "x-trace-bin", "grpc-accept-encoding", "accept-encoding", "x-fixed"]


def value(rng):
    kind = rng.random()
    size = int(rng.expovariate(1 / 60)) if kind < 0.9 else rng.randrange(500, 3000)
    if kind < 0.6:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_./"
        return "".join(rng.choice(alphabet) for _ in range(size)).encode()
    # Any byte: Huffman codes of up to 30 bits.
    return bytes(rng.randrange(256) for _ in range(size))


def headers(rng):
    fields = []
    for _ in range(rng.randrange(1, 16)):
        name = rng.choice(NAMES) if rng.random() < 0.8 else ("x-new-%d" % rng.randrange(1000))
        tuple_type = NeverIndexedHeaderTuple if rng.random() < 0.1 else HeaderTuple
        fields.append(tuple_type(name.encode(), value(rng) if rng.random() < 0.7 else b"fixed-value"))
    return fields


def decoded_size(decoder, block):
    try:
        fields = decoder.decode(block, raw=True)
    except (HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError, OversizedHeaderListError):
        return None
    return sum(len(n) + len(v) + 32 for n, v in fields)


def main():
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    encoder, decoder = Encoder(), Decoder(max_header_list_size=1 << 30)
    decoder.max_allowed_table_size = 4096
    for i in range(count):
        if rng.random() < 0.03:
            # The encoder emits a size update at the start of its next block.
            encoder.header_table_size = rng.choice([0, 64, 256, 1024, 4096])
        block = encoder.encode(headers(rng), huffman=rng.random() < 0.7)
        size = decoded_size(decoder, block)
        print(json.dumps({"block": block.hex(), "size": size, "table": len(decoder.header_table.dynamic_entries)}))
    # Blocks no decoder accepts, each on a fresh pair (the connection would be closed).
    bad = [
        bytes([0x80]),  # index 0
        bytes([0xBE]),  # index 62, an empty dynamic table
        bytes([0x3F, 0xE2, 0x1F]),  # size update to 4096 + 1
        bytes([0x82, 0x3F, 0xE1, 0x1F]),  # size update after a field
        bytes([0x00, 0x81, 0xFF]),  # Huffman name: 8 one bits, past the 7 bits of padding
        bytes([0x00, 0x84, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]),  # Huffman name holding EOS
        bytes([0x40, 0x05, 0x61]),  # truncated name
    ]
    for block in bad:
        size = decoded_size(Decoder(), block)
        print(json.dumps({"block": block.hex(), "size": size, "table": 0, "fresh": True}))


if __name__ == "__main__":
    main()
