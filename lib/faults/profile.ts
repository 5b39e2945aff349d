// faults/profile: what an impairment profile is, and its two written forms. A profile is a name and a list of
// impairments (latency, bandwidth, slicer, stall, reset, close, refuse, loss), each with the units the field uses
// (durations, bit/s, bytes, percentages) and a probability per connection (Toxiproxy's "toxicity"). It owns the
// text syntax of `--fault-profile` and the API's `spec` field, `slow: latency 200ms jitter 50ms, bandwidth 1Mbit`,
// which reads like `tc netem`'s arguments, and the JSON objects the control API lists. Nothing here runs a
// connection (lib/faults/copy.ts does) or chooses one (lib/faults/table.ts).

import { formatDuration, formatSize, parseDuration, parseSize, UnitError } from "../units.ts";

/** Thrown when a profile or an impairment cannot be read; the message says what is wrong and what was expected. */
export class FaultSyntaxError extends Error {
  /** The class's name, as Error subclasses set it. */
  override name = "FaultSyntaxError";
}

/** When a one-shot impairment fires: after this many bytes echoed, or this long, counted from when it applies. */
export type Trigger = { bytes: number } | { ms: number };

/** The loss model: Gilbert-Elliott's two states (Good, Bad), each chunk's loss drawn in the state it meets. */
export interface LossModel {
  /** How it was written, so it is written back the same way. */
  form: "simple" | "burst" | "gemodel";
  /** P(Good -> Bad) per chunk (netem's p). */
  p: number;
  /** P(Bad -> Good) per chunk (netem's r). */
  r: number;
  /** Loss probability in the Bad state (netem's 1-h). */
  bad: number;
  /** Loss probability in the Good state (netem's 1-k). */
  good: number;
  /** For `simple` and `burst`: the mean loss rate as written, 0 to 1. */
  rate?: number;
  /** For `burst`: the mean burst length as written, in chunks (1 or more). */
  burst?: number;
}

/** The impairments by kind, with their parameters in base units (milliseconds, bytes, bits per second, 0-1). */
export type Impairment =
  | { kind: "latency"; delayMs: number; jitterMs: number; distribution: "uniform" | "normal"; probability: number }
  | { kind: "bandwidth"; bitsPerSecond: number; burstBytes: number; probability: number }
  | { kind: "slicer"; minBytes: number; maxBytes: number; delayMs: number; probability: number }
  | { kind: "stall"; after: Trigger; forMs: number; then: "resume" | "close" | "reset"; probability: number }
  | { kind: "reset"; after: Trigger; probability: number }
  | { kind: "close"; after: Trigger; probability: number }
  | { kind: "refuse"; mode: "fin" | "rst"; probability: number }
  | { kind: "loss"; model: LossModel; probability: number };

/** The kinds, in the order the documentation lists them. */
export const IMPAIRMENT_KINDS = [
  "latency",
  "bandwidth",
  "slicer",
  "stall",
  "reset",
  "close",
  "refuse",
  "loss",
] as const;

/** One kind of impairment. */
export type ImpairmentKind = typeof IMPAIRMENT_KINDS[number];

/** A named list of impairments (at most one of each kind). An empty list is a faithful echo that can be switched. */
export interface Profile {
  /** Its name (see {@link checkProfileName}). */
  readonly name: string;
  /** Its impairments, in the order written. */
  readonly impairments: readonly Impairment[];
}

/** The word that means "no impairment" in a spec, and "no profile" for a listener. */
export const NONE = "none";

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * Checks a profile name: letters, digits, `_`, `.`, `-`, starting with a letter or digit, at most 63 characters;
 * not `none` (which means "no profile") nor `main` (the main listener's name).
 *
 * @param name the name as written
 * @returns the name
 * @throws {FaultSyntaxError} when it is not a valid name
 */
export function checkProfileName(name: string): string {
  if (!NAME.test(name)) {
    throw new FaultSyntaxError(
      `"${name}" is not a profile name: use letters, digits, _ . - (starting with a letter or digit, at most 63)`,
    );
  }
  if (name === NONE || name === "main") throw new FaultSyntaxError(`"${name}" is reserved; choose another name`);
  return name;
}

/** `1` as written `100%`: a fraction of 0 to 1 written as a percentage, without float noise. */
export function formatPercent(fraction: number): string {
  return `${Number((fraction * 100).toFixed(6))}%`;
}

/**
 * Reads a probability: a percentage (`10%`, `0.5%`) or a fraction (`0.1`), from 0 to 100% (0 to 1).
 *
 * @param text the value as written
 * @returns the probability, 0 to 1
 * @throws {FaultSyntaxError} when it is not one, or out of range
 */
export function parseProbability(text: string): number {
  const value = text.trim();
  const percent = /^(\d+(?:\.\d+)?)%$/.exec(value);
  const fraction = /^(\d+(?:\.\d+)?|\.\d+)$/.exec(value);
  if (!percent && !fraction) {
    throw new FaultSyntaxError(`"${text}" is not a probability: write a percentage (10%) or a fraction (0.1)`);
  }
  const p = percent ? Number(percent[1]) / 100 : Number(value);
  if (p > 1) throw new FaultSyntaxError(`"${text}" is not a probability: it must be 0 to 100% (0 to 1)`);
  return p;
}

/** Bits per second by unit: SI prefixes, as network rates are written (netem, Toxiproxy, iperf). */
const BIT_UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12 };

/**
 * Reads a rate: bits per second (`64kbit`, `10Mbit`, `1Gbit`, SI prefixes, `/s` optional) or bytes per second
 * (`125kB/s`, `1MiB/s`, the sizes of lib/units.ts followed by `/s`). `Mbps` and the like are refused: tc reads them
 * as bytes per second, most people as bits.
 *
 * @param text the value as written
 * @returns bits per second (more than 0)
 * @throws {FaultSyntaxError} when it is not a rate
 */
export function parseRate(text: string): number {
  const value = text.trim();
  const expected = "write bits per second (64kbit, 10Mbit, 1Gbit) or bytes per second (125kB/s, 1MiB/s)";
  if (/^\d+(\.\d+)?\s*[kmgt]?bps$/i.test(value)) {
    throw new FaultSyntaxError(
      `"${text}" is ambiguous: tc reads bps as bytes per second, most people as bits; ${expected}`,
    );
  }
  const bits = /^(\d+(?:\.\d+)?)\s*([kmgt]?bit)(?:\/s)?$/i.exec(value);
  let rate: number;
  if (bits) {
    rate = Number(bits[1]) * BIT_UNITS[bits[2].toLowerCase()];
  } else if (value.endsWith("/s")) {
    try {
      rate = parseSize(value.slice(0, -2)) * 8;
    } catch (error) {
      if (error instanceof UnitError) throw new FaultSyntaxError(`"${text}" is not a rate: ${expected}`);
      throw error;
    }
  } else {
    throw new FaultSyntaxError(`"${text}" is not a rate: ${expected}`);
  }
  if (!(rate >= 1) || !Number.isFinite(rate)) {
    throw new FaultSyntaxError(`"${text}" is not a rate: it must be 1bit or more`);
  }
  return rate;
}

/** Writes a rate in bits per second the shortest exact way (`1Mbit`, `64kbit`, `1500bit`). */
export function formatRate(bitsPerSecond: number): string {
  for (const [unit, factor] of [["Gbit", 1e9], ["Mbit", 1e6], ["kbit", 1e3]] as const) {
    if (bitsPerSecond >= factor && bitsPerSecond % factor === 0) return `${bitsPerSecond / factor}${unit}`;
  }
  return `${bitsPerSecond}bit`;
}

function size(text: string, what: string): number {
  try {
    return parseSize(text);
  } catch (error) {
    if (error instanceof UnitError) throw new FaultSyntaxError(`${what}: ${error.message}`);
    throw error;
  }
}

function duration(text: string, what: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    if (error instanceof UnitError) throw new FaultSyntaxError(`${what}: ${error.message}`);
    throw error;
  }
}

/** Units that make an `after` value a size rather than a duration (lower case). */
const SIZE_UNIT = /^(b|k|kb|kib|mb|mib|g|gb|gib|t|tb|tib)$/;

/**
 * Reads the trigger of `after`: a byte count (`0`, `1500`, `64KiB`) or a duration (`500ms`, `5s`, `2min`).
 * `1m` is refused: it could be a minute or a MiB.
 *
 * @param text the value as written
 * @returns the trigger
 * @throws {FaultSyntaxError} when it is neither
 */
export function parseTrigger(text: string): Trigger {
  const value = text.trim();
  const unit = /^\d+(?:\.\d+)?\s*([A-Za-z\u00b5\u03bc]*)$/.exec(value)?.[1];
  if (unit === undefined) {
    throw new FaultSyntaxError(`"${text}" is not a byte count or a duration (examples: 64KiB, 1500, 5s, 250ms)`);
  }
  if (unit.toLowerCase() === "m") {
    throw new FaultSyntaxError(`"${text}" is ambiguous: write ${value.slice(0, -1)}min or ${value.slice(0, -1)}MiB`);
  }
  if (unit === "" || SIZE_UNIT.test(unit.toLowerCase())) return { bytes: size(value, "after") };
  return { ms: duration(value, "after") };
}

/** Writes a trigger as `after` reads it. */
export function formatTrigger(trigger: Trigger): string {
  if ("bytes" in trigger) return formatSize(trigger.bytes);
  if (trigger.ms === 0) return "0ms";
  // Not `2m`, which `after` refuses as ambiguous.
  return trigger.ms % 3_600_000 !== 0 && trigger.ms % 60_000 === 0
    ? `${trigger.ms / 60_000}min`
    : formatDuration(trigger.ms);
}

/** The default bandwidth burst: 10 ms at the rate, at least one Ethernet payload (1460 bytes). */
export function defaultBurst(bitsPerSecond: number): number {
  return Math.max(1460, Math.ceil(bitsPerSecond / 8 / 100));
}

/** The words of one impairment, consumed from the front. */
class Words {
  #at = 0;
  constructor(readonly kind: string, readonly words: string[]) {}

  get done(): boolean {
    return this.#at >= this.words.length;
  }

  peek(): string | undefined {
    return this.words[this.#at];
  }

  next(what: string): string {
    const word = this.words[this.#at++];
    if (word === undefined) throw new FaultSyntaxError(`${this.kind}: ${what} is missing`);
    return word;
  }
}

/** The keywords each kind takes after its first value, for the messages. */
const KEYWORDS: Record<ImpairmentKind, string> = {
  latency: "jitter DURATION, distribution uniform|normal, probability P",
  bandwidth: "burst SIZE, probability P",
  slicer: "delay DURATION, probability P",
  stall: "for DURATION|forever, then resume|close|reset, probability P",
  reset: "probability P",
  close: "probability P",
  refuse: "probability P",
  loss: "burst CHUNKS, probability P (or: loss gemodel p P r P [bad P] [good P])",
};

const USAGE: Record<ImpairmentKind, string> = {
  latency: "latency DELAY [jitter DURATION] [distribution uniform|normal]",
  bandwidth: "bandwidth RATE [burst SIZE]",
  slicer: "slicer SIZE[-SIZE] [delay DURATION]",
  stall: "stall after BYTES|DURATION [for DURATION|forever] [then resume|close|reset]",
  reset: "reset after BYTES|DURATION",
  close: "close after BYTES|DURATION",
  refuse: "refuse [fin|rst]",
  loss: "loss P [burst CHUNKS] | loss gemodel p P r P [bad P] [good P]",
};

/**
 * Reads one impairment from its words, e.g. `latency 200ms jitter 50ms` or `reset after 64KiB probability 10%`.
 *
 * @param text the impairment as written
 * @returns the impairment
 * @throws {FaultSyntaxError} naming the kind and what is wrong
 */
export function parseImpairment(text: string): Impairment {
  const [kindWord, ...rest] = text.trim().split(/\s+/);
  const kind = kindWord?.toLowerCase() as ImpairmentKind;
  if (!IMPAIRMENT_KINDS.includes(kind)) {
    throw new FaultSyntaxError(
      `"${kindWord ?? ""}" is not an impairment: the impairments are ${IMPAIRMENT_KINDS.join(", ")}`,
    );
  }
  const words = new Words(kind, rest);
  try {
    return readImpairment(kind, words);
  } catch (error) {
    if (error instanceof FaultSyntaxError && !error.message.includes("usage:")) {
      throw new FaultSyntaxError(`${error.message} (usage: ${USAGE[kind]})`);
    }
    throw error;
  }
}

function readImpairment(kind: ImpairmentKind, words: Words): Impairment {
  let probability = 1;
  const options = new Map<string, string>();
  /** Reads the `key value` words left, allowing the given keys (and `probability`) once each. */
  const readOptions = (allowed: string[], flags: string[] = []) => {
    while (!words.done) {
      const key = words.next("a keyword").toLowerCase();
      if (flags.includes(key)) {
        if (options.has(key)) throw new FaultSyntaxError(`${kind}: "${key}" is given twice`);
        options.set(key, "");
        continue;
      }
      if (key !== "probability" && !allowed.includes(key)) {
        throw new FaultSyntaxError(`${kind}: "${key}" is not one of its keywords (${KEYWORDS[kind]})`);
      }
      if (options.has(key)) throw new FaultSyntaxError(`${kind}: "${key}" is given twice`);
      options.set(key, words.next(`the value of ${key}`));
    }
    if (options.has("probability")) probability = parseProbability(options.get("probability")!);
  };
  const after = () => {
    const word = words.next('"after BYTES|DURATION"');
    if (word.toLowerCase() !== "after") {
      throw new FaultSyntaxError(`${kind}: expected "after BYTES|DURATION", found "${word}"`);
    }
    return parseTrigger(words.next("the value of after"));
  };
  switch (kind) {
    case "latency": {
      const delayMs = duration(words.next("the delay"), "latency");
      readOptions(["jitter", "distribution"]);
      const jitterMs = options.has("jitter") ? duration(options.get("jitter")!, "latency jitter") : 0;
      const distribution = (options.get("distribution") ?? "uniform").toLowerCase();
      if (distribution !== "uniform" && distribution !== "normal") {
        throw new FaultSyntaxError(`latency: distribution "${distribution}" is not uniform or normal`);
      }
      if (options.has("distribution") && jitterMs === 0) {
        throw new FaultSyntaxError("latency: a distribution needs a jitter (jitter 20ms)");
      }
      return { kind, delayMs, jitterMs, distribution, probability };
    }
    case "bandwidth": {
      const bitsPerSecond = parseRate(words.next("the rate"));
      readOptions(["burst"]);
      const burstBytes = options.has("burst")
        ? size(options.get("burst")!, "bandwidth burst")
        : defaultBurst(bitsPerSecond);
      if (burstBytes < 1) throw new FaultSyntaxError("bandwidth: the burst must be 1 byte or more");
      return { kind, bitsPerSecond, burstBytes, probability };
    }
    case "slicer": {
      const range = words.next("the segment size");
      const [low, high, extra] = range.split("-");
      if (extra !== undefined || low === "") {
        throw new FaultSyntaxError(`slicer: "${range}" is not a size or a range of sizes (1-16, 100, 1KiB-4KiB)`);
      }
      const minBytes = size(low, "slicer size");
      const maxBytes = high === undefined ? minBytes : size(high, "slicer size");
      if (minBytes < 1) throw new FaultSyntaxError("slicer: segments must be 1 byte or more");
      if (maxBytes < minBytes) throw new FaultSyntaxError(`slicer: "${range}" goes down; write the smaller size first`);
      readOptions(["delay"]);
      const delayMs = options.has("delay") ? duration(options.get("delay")!, "slicer delay") : 0;
      return { kind, minBytes, maxBytes, delayMs, probability };
    }
    case "stall": {
      const trigger = after();
      readOptions(["for", "then"], ["forever"]);
      if (options.has("for") && options.has("forever")) {
        throw new FaultSyntaxError('stall: give "for DURATION" or "forever", not both');
      }
      let forMs = Infinity;
      if (options.has("for")) {
        const text = options.get("for")!;
        forMs = text.toLowerCase() === "forever" ? Infinity : duration(text, "stall for");
        if (forMs === 0) throw new FaultSyntaxError('stall: "for 0" stalls for no time; give a duration or forever');
      }
      const then = (options.get("then") ?? "resume").toLowerCase();
      if (then !== "resume" && then !== "close" && then !== "reset") {
        throw new FaultSyntaxError(`stall: "then ${then}": write then resume, then close or then reset`);
      }
      if (then !== "resume" && forMs === Infinity) {
        throw new FaultSyntaxError(`stall: "then ${then}" needs "for DURATION" (a stall forever has no then)`);
      }
      return { kind, after: trigger, forMs, then, probability };
    }
    case "reset":
    case "close": {
      const trigger = after();
      readOptions([]);
      return { kind, after: trigger, probability };
    }
    case "refuse": {
      let mode: "fin" | "rst" = "fin";
      const first = words.peek()?.toLowerCase();
      if (first === "fin" || first === "rst") {
        mode = first;
        words.next("the mode");
      }
      readOptions([]);
      return { kind, mode, probability };
    }
    case "loss": {
      const first = words.next("the loss rate");
      if (first.toLowerCase() === "gemodel") {
        readOptions(["p", "r", "bad", "good"]);
        if (!options.has("p") || !options.has("r")) {
          throw new FaultSyntaxError("loss gemodel: p and r are needed (loss gemodel p 1% r 30%)");
        }
        const model: LossModel = {
          form: "gemodel",
          p: parseProbability(options.get("p")!),
          r: parseProbability(options.get("r")!),
          bad: options.has("bad") ? parseProbability(options.get("bad")!) : 1,
          good: options.has("good") ? parseProbability(options.get("good")!) : 0,
        };
        return { kind, model, probability };
      }
      const rate = parseProbability(first);
      readOptions(["burst"]);
      if (!options.has("burst")) {
        return { kind, model: { form: "simple", p: 0, r: 1, bad: 1, good: rate, rate }, probability };
      }
      const burst = Number(options.get("burst"));
      if (!/^\d+(\.\d+)?$/.test(options.get("burst")!) || burst < 1) {
        throw new FaultSyntaxError(
          `loss: burst "${options.get("burst")}" must be a mean burst length of 1 chunk or more`,
        );
      }
      if (rate >= 1) throw new FaultSyntaxError("loss: a burst needs a loss rate under 100%");
      // A Bad state that loses every chunk and a Good one that loses none: the mean loss is p/(p+r) and the mean
      // burst 1/r chunks, so r = 1/burst and p = rate * r / (1 - rate).
      const r = 1 / burst;
      const p = Math.min(1, rate * r / (1 - rate));
      return { kind, model: { form: "burst", p, r, bad: 1, good: 0, rate, burst }, probability };
    }
  }
}

/**
 * Writes one impairment as {@link parseImpairment} reads it: its canonical form, defaults left out.
 *
 * @param impairment the impairment
 * @returns the text, e.g. `latency 200ms jitter 50ms distribution normal`
 */
export function formatImpairment(impairment: Impairment): string {
  const words: string[] = [impairment.kind];
  switch (impairment.kind) {
    case "latency":
      words.push(formatDuration(impairment.delayMs));
      if (impairment.jitterMs > 0) words.push("jitter", formatDuration(impairment.jitterMs));
      if (impairment.distribution === "normal") words.push("distribution", "normal");
      break;
    case "bandwidth":
      words.push(formatRate(impairment.bitsPerSecond));
      if (impairment.burstBytes !== defaultBurst(impairment.bitsPerSecond)) {
        words.push("burst", formatSize(impairment.burstBytes));
      }
      break;
    case "slicer":
      words.push(
        impairment.minBytes === impairment.maxBytes
          ? formatSize(impairment.minBytes)
          : `${formatSize(impairment.minBytes)}-${formatSize(impairment.maxBytes)}`,
      );
      if (impairment.delayMs > 0) words.push("delay", formatDuration(impairment.delayMs));
      break;
    case "stall":
      words.push("after", formatTrigger(impairment.after));
      if (impairment.forMs === Infinity) words.push("forever");
      else words.push("for", formatDuration(impairment.forMs));
      if (impairment.then !== "resume") words.push("then", impairment.then);
      break;
    case "reset":
    case "close":
      words.push("after", formatTrigger(impairment.after));
      break;
    case "refuse":
      words.push(impairment.mode);
      break;
    case "loss": {
      const m = impairment.model;
      if (m.form === "gemodel") {
        words.push("gemodel", "p", formatPercent(m.p), "r", formatPercent(m.r));
        if (m.bad !== 1) words.push("bad", formatPercent(m.bad));
        if (m.good !== 0) words.push("good", formatPercent(m.good));
      } else {
        words.push(formatPercent(m.rate ?? 0));
        if (m.form === "burst") words.push("burst", String(m.burst));
      }
      break;
    }
  }
  if (impairment.probability !== 1) words.push("probability", formatPercent(impairment.probability));
  return words.join(" ");
}

/**
 * Reads a list of impairments, comma-separated (`latency 200ms, bandwidth 1Mbit`), or `none` for a profile that
 * impairs nothing (a faithful echo that the control API can switch later). Each kind may appear once.
 *
 * @param text the list as written
 * @returns the impairments, in the order written
 * @throws {FaultSyntaxError} naming the impairment and what is wrong
 */
export function parseImpairments(text: string): Impairment[] {
  const value = text.trim();
  if (value.toLowerCase() === NONE) return [];
  if (value === "") throw new FaultSyntaxError(`no impairment given: write one (latency 200ms) or "${NONE}"`);
  const impairments: Impairment[] = [];
  for (const part of value.split(",")) {
    if (part.trim() === "") throw new FaultSyntaxError(`"${text}" has an empty impairment between commas`);
    const impairment = parseImpairment(part);
    if (impairments.some((i) => i.kind === impairment.kind)) {
      throw new FaultSyntaxError(`${impairment.kind} is given twice: a profile has at most one of each impairment`);
    }
    impairments.push(impairment);
  }
  return impairments;
}

/**
 * Writes a list of impairments as {@link parseImpairments} reads it.
 *
 * @param impairments the list
 * @returns the text, or `none` for an empty list
 */
export function formatImpairments(impairments: readonly Impairment[]): string {
  return impairments.length === 0 ? NONE : impairments.map(formatImpairment).join(", ");
}

/**
 * Reads one profile as `--fault-profile` takes it: `NAME: IMPAIRMENT, IMPAIRMENT` (or `NAME: none`).
 *
 * @param text the profile as written
 * @returns the profile
 * @throws {FaultSyntaxError} naming the profile and what is wrong
 * @example
 * ```ts
 * parseProfile("slow: latency 200ms jitter 50ms, bandwidth 1Mbit").impairments.length; // 2
 * ```
 */
export function parseProfile(text: string): Profile {
  const colon = text.indexOf(":");
  if (colon < 0) {
    throw new FaultSyntaxError(
      `"${text.trim()}" is not a profile: write NAME: IMPAIRMENTS, as in "slow: latency 200ms, bandwidth 1Mbit"`,
    );
  }
  const name = checkProfileName(text.slice(0, colon).trim());
  try {
    return { name, impairments: parseImpairments(text.slice(colon + 1)) };
  } catch (error) {
    if (error instanceof FaultSyntaxError) throw new FaultSyntaxError(`profile ${name}: ${error.message}`);
    throw error;
  }
}

/**
 * Reads several profiles separated by semicolons, as one `--fault-profile` value or `ECHOSRV_FAULT_PROFILE` holds
 * them: `slow: latency 200ms; flaky: reset after 64KiB probability 10%`.
 *
 * @param text the profiles as written
 * @returns the profiles, in order
 * @throws {FaultSyntaxError} for the first that cannot be read
 */
export function parseProfiles(text: string): Profile[] {
  return text.split(";").filter((part) => part.trim() !== "").map(parseProfile);
}

/** One impairment as the control API shows it and takes it: its kind and its parameters, as the text writes them. */
export type ImpairmentJson = { type: ImpairmentKind } & Record<string, string | number>;

/** The JSON field holding each kind's first value (the one written right after the kind). */
const FIRST_FIELD: Record<ImpairmentKind, string | undefined> = {
  latency: "delay",
  bandwidth: "rate",
  slicer: "size",
  stall: undefined,
  reset: undefined,
  close: undefined,
  refuse: "mode",
  loss: "rate",
};

/**
 * An impairment as a JSON object: `type`, then its parameters as the text writes them (`"delay": "200ms"`), and
 * `probability` as a number from 0 to 1.
 *
 * @param impairment the impairment
 * @returns the object
 */
export function impairmentToJson(impairment: Impairment): ImpairmentJson {
  const [kind, ...words] = formatImpairment({ ...impairment, probability: 1 }).split(" ");
  const out: ImpairmentJson = { type: kind as ImpairmentKind };
  let i = 0;
  const first = FIRST_FIELD[impairment.kind];
  if (first && impairment.kind === "loss" && impairment.model.form === "gemodel") {
    out.model = "gemodel";
    i = 1;
  } else if (first) {
    out[first] = words[i++];
  }
  while (i < words.length) {
    const key = words[i++];
    if (key === "forever") out.for = "forever";
    else out[key] = words[i++];
  }
  out.probability = impairment.probability;
  return out;
}

/**
 * Reads an impairment from its JSON object (the form {@link impairmentToJson} writes): `type` and the fields of its
 * text form; values are strings as the text writes them, or numbers (bytes for sizes, fractions for probabilities).
 *
 * @param value the object
 * @returns the impairment
 * @throws {FaultSyntaxError} naming the field that is wrong
 */
export function impairmentFromJson(value: unknown): Impairment {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FaultSyntaxError('an impairment must be an object such as {"type": "latency", "delay": "200ms"}');
  }
  const fields = { ...(value as Record<string, unknown>) };
  const type = fields.type;
  if (typeof type !== "string" || !IMPAIRMENT_KINDS.includes(type as ImpairmentKind)) {
    throw new FaultSyntaxError(`"type" must be one of ${IMPAIRMENT_KINDS.join(", ")}`);
  }
  delete fields.type;
  const kind = type as ImpairmentKind;
  const words: string[] = [kind];
  const text = (key: string) => {
    const v = fields[key];
    delete fields[key];
    if (typeof v === "number" && Number.isFinite(v)) return String(v);
    if (typeof v === "string" && v.trim() !== "" && !/\s/.test(v.trim())) return v.trim();
    throw new FaultSyntaxError(`${kind}: "${key}" must be a number or a word such as "200ms"`);
  };
  if (kind === "loss" && fields.model !== undefined) {
    if (fields.model !== "gemodel") throw new FaultSyntaxError('loss: "model" can only be "gemodel"');
    delete fields.model;
    words.push("gemodel");
  } else {
    const first = FIRST_FIELD[kind];
    if (first && fields[first] !== undefined) words.push(text(first));
  }
  if (fields.after !== undefined) words.push("after", text("after"));
  for (const key of Object.keys(fields)) {
    if (key === "for" && fields.for === "forever") {
      delete fields.for;
      words.push("forever");
      continue;
    }
    words.push(key, text(key));
  }
  return parseImpairment(words.join(" "));
}
