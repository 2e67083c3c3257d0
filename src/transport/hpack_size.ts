/**
 * The exact decoded size of HPACK header blocks (RFC 7541), measured as their bytes arrive and
 * without building a single string: what SETTINGS_MAX_HEADER_LIST_SIZE counts (RFC 9113 §6.5.2,
 * name + value + 32 per field, RFC 7541 §4.1), with the dynamic table that the encoder and
 * nghttp2's decoder keep, entry for entry: §4.4 eviction, §6.2 name reuse (a literal naming an
 * entry costs that entry's name only), §6.3 table size updates, and Huffman strings counted by
 * walking the code (Appendix B). Whatever nghttp2 would reject as a COMPRESSION_ERROR (an index
 * outside the tables, a bad Huffman string or padding, a size update past the table we advertise
 * or after a field) is an {@link HpackError} here, never a guess: an estimate that drifts from the
 * decoder cuts honest clients, which is how the upper bounds this replaced failed.
 */

/** What nghttp2 would answer with COMPRESSION_ERROR. */
export class HpackError extends Error {}

/** RFC 7541 §4.1: each field costs its name, its value and 32 bytes. */
export const ENTRY_OVERHEAD = 32;
/** SETTINGS_HEADER_TABLE_SIZE until SETTINGS say otherwise (we never advertise another). */
export const DEFAULT_TABLE_SIZE = 4096;

/** RFC 7541 Appendix A: the static table's names and values. */
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/**
 * RFC 7541 Appendix B: the code length of each symbol (0-255, then EOS), one base-32 digit each.
 * The code is canonical (codes ordered by length, then symbol), so lengths alone define it.
 */
const HUFFMAN_LENGTHS = "DNSSSSSSSOUSSUSSSSSSSSUSSSSSSSSS6AACD68BAA8B8666555666666678F6CA" +
  "D67777777777777777777777878DJDE6F56565666577666567655677777FBEDS" +
  "KMKKMMMNMNNNNNONOOMNONNNNLMNMNNOMLKMMNNLNMMOLMNNLLMLNMNNKMMMNMMN" +
  "QQKJMNMPQQQRRQOPJLQRRQROLLQQSRRRKOKLMLLNMMPPOOQNQRQQRRRRRSRRRRRQ" +
  "U";
const EOS = 256;

/**
 * The Huffman decoder as a state machine over 4-bit nibbles: states are the code tree's inner
 * nodes (0 the root), and each (state, nibble) gives the next state and whether a symbol ended
 * (a code is at least 5 bits long, so at most one ends per nibble) or EOS was decoded.
 */
const HUFFMAN = (() => {
  const lengths = [...HUFFMAN_LENGTHS].map((digit) => parseInt(digit, 32));
  const order = lengths.map((_, symbol) => symbol).sort((a, b) => lengths[a] - lengths[b] || a - b);
  // Inner nodes: two children each, >= 0 an inner node, < 0 the leaf of symbol -child - 1.
  const children: number[] = [0, 0];
  const depth = [0];
  const ones = [true];
  let code = 0;
  order.forEach((symbol, i) => {
    if (i > 0) code = (code + 1) << (lengths[symbol] - lengths[order[i - 1]]);
    let node = 0;
    for (let bit = lengths[symbol] - 1; bit >= 0; bit--) {
      const slot = node * 2 + ((code >>> bit) & 1);
      if (bit === 0) {
        children[slot] = -symbol - 1;
      } else {
        if (children[slot] === 0) {
          children[slot] = depth.length;
          depth.push(depth[node] + 1);
          ones.push(ones[node] && ((code >>> bit) & 1) === 1);
          children.push(0, 0);
        }
        node = children[slot];
      }
    }
  });
  const states = depth.length;
  const next = new Uint16Array(states * 16);
  /** Bit 1: a symbol ended; bit 2: EOS was decoded (an error). */
  const flags = new Uint8Array(states * 16);
  for (let state = 0; state < states; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let flag = 0;
      for (let bit = 3; bit >= 0; bit--) {
        const child = children[node * 2 + ((nibble >>> bit) & 1)];
        if (child >= 0) {
          node = child;
          continue;
        }
        flag |= -child - 1 === EOS ? 2 : 1;
        node = 0;
      }
      next[state * 16 + nibble] = node;
      flags[state * 16 + nibble] = flag;
    }
  }
  // §5.2: a string may end inside a code only on a prefix of EOS (all ones) of at most 7 bits.
  const accepting = Uint8Array.from(depth, (d, state) => state === 0 || (ones[state] && d <= 7) ? 1 : 0);
  return { next, flags, accepting };
})();

const enum Step {
  /** The first byte of a field (or of a table size update). */
  Opcode,
  /** More bytes of an integer. */
  Integer,
  /** The first byte of a string: the Huffman flag and its length's prefix. */
  StringStart,
  /** A string's bytes. */
  StringBody,
}

const enum Kind {
  Indexed,
  /** Literal with incremental indexing: added to the dynamic table. */
  Indexing,
  /** Literal without indexing or never indexed. */
  Plain,
  SizeUpdate,
}

/** What the integer being read is. */
const enum Reading {
  Index,
  NameLength,
  ValueLength,
  TableSize,
}

/** Longest string nghttp2 decodes (NGHTTP2_HD_MAX_NV); longer is a COMPRESSION_ERROR there too. */
const MAX_STRING = 65_536;

/**
 * One connection's HPACK decoding context, sized without decoding: {@link write} the bytes of a
 * header block as they come, {@link end} it to get its size; the table outlives each block.
 */
export class HeaderListMeter {
  /** Dynamic table entries' name and value lengths, oldest first (newest at the end). */
  readonly #names: number[] = [];
  readonly #values: number[] = [];
  #used = 0;
  #capacity = DEFAULT_TABLE_SIZE;
  readonly #maxCapacity: number;

  /** Decoded size of the fields completed in this block. */
  #total = 0;
  #fields = 0;
  #step = Step.Opcode;
  #kind = Kind.Indexed;
  #reading = Reading.Index;
  #integer = 0;
  #shift = 0;
  #name = 0;
  #value = 0;
  #huffman = false;
  /** Bytes of the current string still to come. */
  #left = 0;
  /** Decoded length of the current string so far (a raw one's whole length from its start). */
  #length = 0;
  #state = 0;

  /** `maxTableSize`: the SETTINGS_HEADER_TABLE_SIZE this side advertises. */
  constructor(maxTableSize = DEFAULT_TABLE_SIZE) {
    this.#maxCapacity = maxTableSize;
    this.#capacity = maxTableSize;
  }

  /**
   * The decoded size of the block so far, at least: the fields completed, and of the one being
   * read, its overhead and the lengths known yet. Once past a limit, the block is past it.
   */
  get atLeast(): number {
    if (this.#step === Step.Opcode) return this.#total;
    const inString = this.#step === Step.StringBody ? this.#length : 0;
    const field = this.#reading === Reading.ValueLength ? this.#name + inString : inString;
    return this.#kind === Kind.SizeUpdate ? this.#total : this.#total + ENTRY_OVERHEAD + field;
  }

  /** Reads the next bytes of the current header block; throws {@link HpackError}. */
  write(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length) {
      switch (this.#step) {
        case Step.Opcode:
          this.#opcode(bytes[at++]);
          break;
        case Step.Integer:
          this.#continueInteger(bytes[at++]);
          break;
        case Step.StringStart: {
          const first = bytes[at++];
          this.#huffman = (first & 0x80) !== 0;
          this.#startInteger(first, 7);
          break;
        }
        case Step.StringBody: {
          const take = Math.min(this.#left, bytes.length - at);
          if (this.#huffman) this.#huffmanBytes(bytes, at, at + take);
          at += take;
          this.#left -= take;
          if (this.#left === 0) this.#endString();
          break;
        }
      }
    }
  }

  /** The block is complete: its decoded size. Throws {@link HpackError} if it ends inside a field. */
  end(): number {
    if (this.#step !== Step.Opcode) throw new HpackError("header block ends inside a field");
    const total = this.#total;
    this.#total = 0;
    this.#fields = 0;
    return total;
  }

  #opcode(first: number): void {
    if (first & 0x80) {
      this.#kind = Kind.Indexed;
      this.#reading = Reading.Index;
      this.#startInteger(first, 7);
    } else if (first & 0x40) {
      this.#kind = Kind.Indexing;
      this.#reading = Reading.Index;
      this.#startInteger(first, 6);
    } else if (first & 0x20) {
      // §4.2: a size update comes first in a block, before any field.
      if (this.#fields > 0) throw new HpackError("table size update after a header field");
      this.#kind = Kind.SizeUpdate;
      this.#reading = Reading.TableSize;
      this.#startInteger(first, 5);
    } else {
      this.#kind = Kind.Plain;
      this.#reading = Reading.Index;
      this.#startInteger(first, 4);
    }
  }

  #startInteger(first: number, prefix: number): void {
    const max = (1 << prefix) - 1;
    this.#integer = first & max;
    this.#shift = 0;
    if (this.#integer < max) this.#gotInteger(this.#integer);
    else this.#step = Step.Integer;
  }

  #continueInteger(byte: number): void {
    this.#integer += (byte & 0x7f) * 2 ** this.#shift;
    this.#shift += 7;
    if (this.#integer > 2 ** 31) throw new HpackError("integer too large");
    if ((byte & 0x80) === 0) this.#gotInteger(this.#integer);
  }

  #gotInteger(value: number): void {
    switch (this.#reading) {
      case Reading.TableSize:
        if (value > this.#maxCapacity) {
          throw new HpackError(`table size update to ${value}, over the ${this.#maxCapacity} advertised`);
        }
        this.#capacity = value;
        this.#evict(0);
        this.#step = Step.Opcode;
        return;
      case Reading.Index:
        if (this.#kind === Kind.Indexed) {
          if (value === 0) throw new HpackError("indexed field with index 0");
          const [name, size] = this.#entry(value);
          this.#field(name, size - name - ENTRY_OVERHEAD);
          this.#step = Step.Opcode;
          return;
        }
        if (value === 0) {
          this.#reading = Reading.NameLength;
        } else {
          this.#name = this.#entry(value)[0];
          this.#reading = Reading.ValueLength;
        }
        this.#step = Step.StringStart;
        return;
      case Reading.NameLength:
      case Reading.ValueLength:
        if (value > MAX_STRING) throw new HpackError(`string of ${value} bytes`);
        this.#left = value;
        // A raw string's length is known now: a block past its limit is seen before its bytes come.
        this.#length = this.#huffman ? 0 : value;
        this.#state = 0;
        this.#step = Step.StringBody;
        if (value === 0) this.#endString();
        return;
    }
  }

  #huffmanBytes(bytes: Uint8Array, from: number, to: number): void {
    const { next, flags } = HUFFMAN;
    let state = this.#state;
    let length = this.#length;
    for (let i = from; i < to; i++) {
      const byte = bytes[i];
      let slot = state * 16 + (byte >>> 4);
      let flag = flags[slot];
      state = next[slot];
      slot = state * 16 + (byte & 0xf);
      flag |= flags[slot] << 2;
      state = next[slot];
      if (flag & 0b1010) throw new HpackError("Huffman string decodes EOS");
      length += (flag & 1) + ((flag >>> 2) & 1);
    }
    this.#state = state;
    this.#length = length;
  }

  #endString(): void {
    if (this.#huffman && !HUFFMAN.accepting[this.#state]) {
      throw new HpackError("Huffman string ends in bad padding");
    }
    if (this.#reading === Reading.NameLength) {
      this.#name = this.#length;
      this.#reading = Reading.ValueLength;
      this.#step = Step.StringStart;
      return;
    }
    this.#field(this.#name, this.#length);
    this.#step = Step.Opcode;
  }

  /** A field decoded: counted, and added to the table when it is to be indexed. */
  #field(name: number, value: number): void {
    this.#total += name + value + ENTRY_OVERHEAD;
    this.#fields++;
    if (this.#kind !== Kind.Indexing) return;
    // §4.4: make room first; an entry larger than the table empties it and is not added.
    const size = name + value + ENTRY_OVERHEAD;
    this.#evict(size);
    if (size > this.#capacity) return;
    this.#names.push(name);
    this.#values.push(value);
    this.#used += size;
  }

  /** Evicts the oldest entries until `incoming` more bytes fit (all of them if it cannot). */
  #evict(incoming: number): void {
    let drop = 0;
    while (this.#used + incoming > this.#capacity && drop < this.#names.length) {
      this.#used -= this.#names[drop] + this.#values[drop] + ENTRY_OVERHEAD;
      drop++;
    }
    if (drop > 0) {
      this.#names.splice(0, drop);
      this.#values.splice(0, drop);
    }
  }

  /** Name length and size of the entry at `index` (static, then dynamic newest first). */
  #entry(index: number): [number, number] {
    if (index <= STATIC_TABLE.length) {
      const [name, value] = STATIC_TABLE[index - 1];
      return [name.length, name.length + value.length + ENTRY_OVERHEAD];
    }
    const at = this.#names.length - (index - STATIC_TABLE.length);
    if (at < 0) {
      throw new HpackError(
        `index ${index} outside the tables (${STATIC_TABLE.length} static, ${this.#names.length} dynamic)`,
      );
    }
    return [this.#names[at], this.#names[at] + this.#values[at] + ENTRY_OVERHEAD];
  }

  /** Dynamic table entries held now (tests compare it with a real decoder's). */
  get tableLength(): number {
    return this.#names.length;
  }

  /** Bytes of the dynamic table in use now (§4.1 sizes). */
  get tableSize(): number {
    return this.#used;
  }
}
