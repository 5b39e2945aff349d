// faults/random: the reproducible randomness of the impairments. One seed (`--fault-seed`) gives every connection
// under a profile its own stream, derived from the seed, the worker and the connection's number, so what one
// connection draws (which impairments apply, which chunks are lost, each chunk's jitter) does not depend on how
// the connections around it interleave. The generator is xoshiro128** (Blackman and Vigna, 2018: 32-bit state
// words, period 2^128 - 1, passes BigCrush), seeded through SplitMix32-style mixing; the loss model is
// Gilbert-Elliott's two-state chain as `tc netem loss gemodel` defines it.

import type { LossModel } from "./profile.ts";

/**
 * Mixes 32 bits into 32 well-spread bits (the finaliser of MurmurHash3; a bijection, so different inputs never
 * collide).
 *
 * @param x the input, as an unsigned 32-bit integer
 * @returns the mixed value
 */
export function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * The seed of one connection's stream: the run's seed, the worker (0 without workers) and the connection's number
 * on that worker (1 for the first connection served under a profile).
 *
 * @param seed `--fault-seed`
 * @param worker the worker's number
 * @param serial the connection's number
 * @returns a 32-bit seed
 */
export function streamSeed(seed: number, worker: number, serial: number): number {
  return mix32(mix32(mix32(seed >>> 0) ^ Math.imul(worker + 1, 0x9e3779b9)) ^ Math.imul(serial, 0x632be5ab));
}

/** A seeded pseudo-random generator: xoshiro128**. Not for secrets. */
export class Random {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;
  /** The second value of the last Box-Muller pair, not yet used. */
  #spare: number | undefined;

  /**
   * A generator from a seed.
   *
   * @param seed any 32-bit number; the same seed gives the same sequence
   */
  constructor(seed: number) {
    // SplitMix32-style: four well-mixed words from one, never all zero (xoshiro's one forbidden state).
    let x = seed >>> 0;
    const next = () => mix32(x = (x + 0x9e3779b9) >>> 0);
    this.#s0 = next();
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;
  }

  /** The next 32 random bits, as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** A number in [0, 1), uniformly (32 bits of resolution). */
  float(): number {
    return this.nextUint32() / 4294967296;
  }

  /**
   * True with probability `p`; draws nothing when `p` is 0 or 1, so a certain impairment does not shift the stream.
   *
   * @param p the probability, 0 to 1
   */
  chance(p: number): boolean {
    if (p >= 1) return true;
    if (p <= 0) return false;
    return this.float() < p;
  }

  /** A whole number from `min` to `max`, both included. */
  integer(min: number, max: number): number {
    return max <= min ? min : min + Math.floor(this.float() * (max - min + 1));
  }

  /** A standard normal deviate (mean 0, standard deviation 1), by the Box-Muller transform. */
  normal(): number {
    if (this.#spare !== undefined) {
      const spare = this.#spare;
      this.#spare = undefined;
      return spare;
    }
    const u = 1 - this.float(); // (0, 1]: log(0) is never taken
    const v = this.float();
    const radius = Math.sqrt(-2 * Math.log(u));
    this.#spare = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * One connection's loss state: Gilbert-Elliott's chain (as `tc netem loss gemodel`). Each chunk is lost with the
 * current state's loss probability (`good` in Good, `bad` in Bad), then the state moves (Good to Bad with `p`, Bad
 * to Good with `r`). Plain `loss P` is the chain that never leaves Good, losing each chunk with P on its own.
 */
export class LossChain {
  #bad = false;

  /**
   * A chain in the Good state.
   *
   * @param model the model's four probabilities
   */
  constructor(readonly model: LossModel) {}

  /**
   * Decides the fate of the next chunk.
   *
   * @param random the connection's stream
   * @returns true when the chunk is to be dropped
   */
  drop(random: Random): boolean {
    const m = this.model;
    const lost = random.chance(this.#bad ? m.bad : m.good);
    this.#bad = this.#bad ? !random.chance(m.r) : random.chance(m.p);
    return lost;
  }
}

/** A seed for a run that was given none: random, and logged so the run can be repeated. */
export function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}
