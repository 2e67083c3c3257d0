import assert from "node:assert/strict";
import { HeaderListMeter, HpackError } from "./hpack_size.ts";

const SEQUENCES = new URL("../../tests/interop/hpack_sequences.py", import.meta.url).pathname;

const hex = (text: string) => Uint8Array.from(text.replace(/\s/g, "").match(/../g)!, (b) => parseInt(b, 16));

/** Writes `block` in pieces of `piece` bytes, then ends it: its size, or "error". */
function measure(meter: HeaderListMeter, block: Uint8Array, piece = block.length): number | "error" {
  try {
    for (let at = 0; at < block.length; at += piece) meter.write(block.subarray(at, at + piece));
    return meter.end();
  } catch (error) {
    if (error instanceof HpackError) return "error";
    throw error;
  }
}

/**
 * RFC 7541 Appendix C: each example's blocks, the decoded size of each (name + value + 32 per
 * field, from the header lists the RFC prints) and the dynamic table's size after it.
 */
const APPENDIX_C: { name: string; table: number; blocks: [string, number, number][] }[] = [
  {
    name: "C.3 requests without Huffman",
    table: 4096,
    blocks: [
      ["8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", 180, 57],
      ["8286 84be 5808 6e6f 2d63 6163 6865", 233, 110],
      ["8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65", 245, 164],
    ],
  },
  {
    name: "C.4 requests with Huffman",
    table: 4096,
    blocks: [
      ["8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", 180, 57],
      ["8286 84be 5886 a8eb 1064 9cbf", 233, 110],
      ["8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf", 245, 164],
    ],
  },
  {
    name: "C.5 responses without Huffman, a 256-byte table (evictions)",
    table: 256,
    blocks: [
      [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 " +
        "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        222,
        222,
      ],
      ["4803 3330 37c1 c0bf", 222, 222],
      [
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 " +
        "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 " +
        "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
        372,
        215,
      ],
    ],
  },
  {
    name: "C.6 responses with Huffman, a 256-byte table (evictions)",
    table: 256,
    blocks: [
      [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad " +
        "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        222,
        222,
      ],
      ["4883 640e ffc1 c0bf", 222, 222],
      [
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 " +
        "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        372,
        215,
      ],
    ],
  },
];

for (const example of APPENDIX_C) {
  Deno.test(`RFC 7541 ${example.name}: the decoded sizes and table sizes the RFC gives`, () => {
    for (const piece of [1, 3, 1_000]) {
      const meter = new HeaderListMeter(example.table);
      for (const [i, [block, size, table]] of example.blocks.entries()) {
        assert.equal(measure(meter, hex(block), piece), size, `block ${i + 1}, pieces of ${piece}`);
        assert.equal(meter.tableSize, table, `table after block ${i + 1}`);
      }
    }
  });
}

/** Blocks made and decoded by Python's hpack (tests/interop/hpack_sequences.py). */
async function sequences(seed: number, count: number) {
  const out = await new Deno.Command("/usr/bin/python3", { args: [SEQUENCES, String(seed), String(count)] })
    .output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim().split("\n").map((line) =>
    JSON.parse(line) as { block: string; size: number | null; table: number; fresh?: boolean }
  );
}

Deno.test("the meter agrees with a real HPACK decoder on every block of long encoder sequences", async () => {
  let blocks = 0;
  let evicting = 0;
  for (const seed of [1, 2, 3]) {
    const meter = new HeaderListMeter();
    for (const [i, { block, size, table, fresh }] of (await sequences(seed, 3_000)).entries()) {
      const bytes = hex(block);
      const piece = [bytes.length, 1, 7][i % 3] || 1;
      const got = measure(fresh ? new HeaderListMeter() : meter, bytes, piece);
      assert.equal(got, size ?? "error", `seed ${seed}, block ${i}: ${block.slice(0, 80)}`);
      if (!fresh) assert.equal(meter.tableLength, table, `seed ${seed}, table after block ${i}`);
      if (!fresh && meter.tableSize > 3_000) evicting++;
      blocks++;
    }
  }
  assert.ok(blocks > 9_000, `${blocks} blocks`);
  assert.ok(evicting > 1_000, `the sequences must keep the table near full: ${evicting}`);
});

Deno.test("Huffman strings count their decoded symbols exactly, and bad padding or EOS is an error", () => {
  // 'a' is 00011 (5 bits): "aaa" is 15 bits + 1 bit of padding = 2 bytes; 3 symbols.
  const aaa = [0b00011000, 0b11000111];
  assert.equal(
    measure(new HeaderListMeter(), Uint8Array.from([0x00, 0x01, 0x78, 0x80 | 2, ...aaa])),
    1 + 3 + 32,
  );
  // One byte of 8 one-bits: padding longer than 7 bits.
  assert.equal(measure(new HeaderListMeter(), Uint8Array.from([0x00, 0x01, 0x78, 0x81, 0xff])), "error");
  // 30 one-bits are EOS.
  assert.equal(
    measure(new HeaderListMeter(), Uint8Array.from([0x00, 0x01, 0x78, 0x84, 0xff, 0xff, 0xff, 0xfc])),
    "error",
  );
});

Deno.test("a reused name costs the name only, and a field larger than the table empties it", () => {
  const meter = new HeaderListMeter();
  // Literal with indexing, new name "x-a" (3), value of 40 raw bytes: 75.
  const first = [0x40, 0x03, ...new TextEncoder().encode("x-a"), 40, ...new Array(40).fill(0x61)];
  assert.equal(measure(meter, Uint8Array.from(first)), 75);
  // Literal with indexing naming entry 62 ("x-a"), value of 2 bytes: 3 + 2 + 32, not 75 + 2.
  assert.equal(measure(meter, Uint8Array.from([0x40 | 62, 0x02, 0x62, 0x62])), 37);
  assert.equal(meter.tableLength, 2);
  // A 5 000-byte field: the table is emptied and the field is not added.
  const big = [0x40, 0x01, 0x7a, 0x7f, ...[5_000 - 127].flatMap(varint), ...new Array(5_000).fill(0x61)];
  assert.equal(measure(meter, Uint8Array.from(big)), 5_033);
  assert.equal(meter.tableLength, 0);
  assert.equal(measure(meter, Uint8Array.from([0xbe])), "error");
});

Deno.test("a table size update may shrink the table but not grow it past the advertised size", () => {
  const meter = new HeaderListMeter();
  assert.equal(measure(meter, Uint8Array.from([0x40, 0x01, 0x61, 0x01, 0x62])), 34);
  assert.equal(meter.tableLength, 1);
  assert.equal(measure(meter, Uint8Array.from([0x20])), 0); // size 0: evicts all
  assert.equal(meter.tableLength, 0);
  assert.equal(measure(new HeaderListMeter(), Uint8Array.from([0x3f, 0xe1, 0x1f])), 0); // 4096
  assert.equal(measure(new HeaderListMeter(), Uint8Array.from([0x3f, 0xe2, 0x1f])), "error"); // 4097
  assert.equal(measure(new HeaderListMeter(), Uint8Array.from([0x82, 0x20])), "error"); // after a field
});

Deno.test("atLeast never passes the block's final size while it is written", () => {
  const meter = new HeaderListMeter();
  const block = hex(APPENDIX_C[1].blocks[0][0]);
  for (const byte of block) {
    meter.write(Uint8Array.of(byte));
    assert.ok(meter.atLeast <= 180, `${meter.atLeast}`);
  }
  assert.equal(meter.end(), 180);
});

function varint(value: number): number[] {
  const out = [];
  while (value >= 128) {
    out.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  out.push(value);
  return out;
}
