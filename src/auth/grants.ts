/**
 * What a token's `recipients` claim lets its bearer subscribe to besides its own `sub`: exact
 * recipient names, and prefixes written with a trailing `*` (`"team-*"`; a lone `"*"` is every
 * recipient). Grants widen Subscribe only: Send still needs the send scope.
 */

/** At most this many entries in one claim: a token travels in every call's metadata. */
export const MAX_GRANTS = 100;

export class RecipientGrants {
  readonly #exact: ReadonlySet<string>;
  readonly #prefixes: readonly string[];

  private constructor(exact: ReadonlySet<string>, prefixes: readonly string[]) {
    this.#exact = exact;
    this.#prefixes = prefixes;
  }

  /** No grants: the bearer reads its own `sub` only. */
  static readonly NONE = new RecipientGrants(new Set(), []);

  /**
   * The grants of a `recipients` claim (absent: none); throws, saying what is wrong, when it is not
   * an array of up to {@link MAX_GRANTS} non-empty strings with `*` only at the end.
   */
  static parse(claim: unknown): RecipientGrants {
    if (claim === undefined) return RecipientGrants.NONE;
    if (!Array.isArray(claim)) throw new Error("recipients must be an array of strings");
    if (claim.length > MAX_GRANTS) {
      throw new Error(`recipients has ${claim.length} entries; at most ${MAX_GRANTS}`);
    }
    const exact = new Set<string>();
    const prefixes: string[] = [];
    for (const entry of claim) {
      if (typeof entry !== "string" || entry === "") throw new Error("recipients must be non-empty strings");
      const star = entry.indexOf("*");
      if (star === -1) exact.add(entry);
      else if (star === entry.length - 1) prefixes.push(entry.slice(0, -1));
      else {throw new Error(
          `recipients entry ${JSON.stringify(entry)} has a * that is not its last character`,
        );}
    }
    return new RecipientGrants(exact, prefixes);
  }

  /** Whether the claim grants `recipient`. */
  allows(recipient: string): boolean {
    return this.#exact.has(recipient) || this.#prefixes.some((prefix) => recipient.startsWith(prefix));
  }
}
