// rng: the seeded randomness of the stress run (stress/) and the fuzz test. Everything a stress session does (its
// kind, sizes, write sizes, pauses, the bytes it sends) derives from the run's seed and the session's number through
// these functions, so `--seed S --replay N` reruns session N exactly. Nothing here touches the network or the clock.

/**
 * Mixes 32-bit values into one well-spread 32-bit seed (MurmurHash3's finalizer over a running hash), so that
 * neighbouring session numbers get unrelated streams.
 *
 * @param parts the values to mix, e.g. the run's seed and a session number
 * @returns an unsigned 32-bit seed
 * @example
 * ```ts
 * const sessionSeed = deriveSeed(12345, 17);
 * ```
 */
export function deriveSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    h = Math.imul(h ^ (part >>> 0), 0x01000193) >>> 0;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b) >>> 0;
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35) >>> 0;
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/** A small, fast, seeded pseudo-random generator (sfc32). Not for cryptography; for reproducible test plans. */
export class Random {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** @param seed any 32-bit value; the same seed always gives the same sequence */
  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 12; i++) this.next32();
  }

  /** @returns the next unsigned 32-bit value */
  next32(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /** @returns a float in [0, 1) */
  float(): number {
    return this.next32() / 4294967296;
  }

  /**
   * @param lo the smallest value
   * @param hi the largest value (inclusive)
   * @returns a whole number in [lo, hi], uniformly
   */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  /**
   * Sizes spread over orders of magnitude: as many values between 1 and 10 as between 1 MiB and 10 MiB.
   *
   * @param lo the smallest value, at least 1
   * @param hi the largest value (inclusive)
   * @returns a whole number in [lo, hi], uniform in its logarithm
   */
  logInt(lo: number, hi: number): number {
    if (hi <= lo) return lo;
    const value = Math.floor(Math.exp(Math.log(lo) + this.float() * (Math.log(hi + 1) - Math.log(lo))));
    return Math.min(hi, Math.max(lo, value));
  }

  /**
   * @param probability the chance of true, 0 to 1
   * @returns true with that probability
   */
  chance(probability: number): boolean {
    return this.float() < probability;
  }

  /**
   * Picks a name by weight; names with weight 0 are never picked and do not change the picks of the others, so
   * adding a kind with weight 0 keeps every existing seed's plan.
   *
   * @param weights non-negative weights by name, in a fixed order
   * @returns the picked name
   */
  pick(weights: ReadonlyArray<readonly [string, number]>): string {
    const total = weights.reduce((sum, [, w]) => sum + w, 0);
    let x = this.float() * total;
    for (const [name, weight] of weights) {
      if (x < weight) return name;
      x -= weight;
    }
    return weights.findLast(([, w]) => w > 0)![0];
  }
}

/** Bytes generated per refill of a {@link ByteStream}. */
const BLOCK = 64 * 1024;

/**
 * An endless, deterministic byte sequence: the same seed gives the same bytes however they are taken (one byte at
 * a time or megabytes at once). The writer of a session and its verifier each hold one, so a 64 MiB session needs
 * no 64 MiB buffer.
 */
export class ByteStream {
  readonly #block = new Uint8Array(BLOCK);
  readonly #words = new Uint32Array(this.#block.buffer);
  #offset = BLOCK;
  #x: number;
  #y = 362436069;
  #z = 521288629;
  #w = 88675123;

  /** @param seed the sequence's seed */
  constructor(seed: number) {
    this.#x = (seed >>> 0) || 123456789;
  }

  #refill(): void {
    // xorshift128: four words of state, one 32-bit word per step.
    let x = this.#x, y = this.#y, z = this.#z, w = this.#w;
    const words = this.#words;
    for (let i = 0; i < words.length; i++) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = (w ^ (w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
      words[i] = w;
    }
    this.#x = x;
    this.#y = y;
    this.#z = z;
    this.#w = w;
    this.#offset = 0;
  }

  /**
   * Fills `out` with the next `out.length` bytes of the sequence.
   *
   * @param out where the bytes go
   */
  fill(out: Uint8Array): void {
    for (let done = 0; done < out.length;) {
      if (this.#offset === BLOCK) this.#refill();
      const n = Math.min(out.length - done, BLOCK - this.#offset);
      out.set(this.#block.subarray(this.#offset, this.#offset + n), done);
      this.#offset += n;
      done += n;
    }
  }
}

/** Checks received bytes against the sequence a {@link ByteStream} with the same seed produced for the writer. */
export class Verifier {
  readonly #stream: ByteStream;
  #expected = new Uint8Array(0);
  /** Bytes checked so far, all equal to the sequence. */
  verified = 0;

  /** @param seed the writer's seed */
  constructor(seed: number) {
    this.#stream = new ByteStream(seed);
  }

  /**
   * Checks the next chunk of received bytes.
   *
   * @param chunk the bytes, in the order received
   * @returns -1 when they match, else the offset in the whole session of the first wrong byte
   */
  check(chunk: Uint8Array): number {
    if (this.#expected.length < chunk.length) this.#expected = new Uint8Array(Math.max(chunk.length, BLOCK));
    const expected = this.#expected.subarray(0, chunk.length);
    this.#stream.fill(expected);
    for (let i = 0; i < chunk.length; i++) {
      if (chunk[i] !== expected[i]) return this.verified + i;
    }
    this.verified += chunk.length;
    return -1;
  }
}
