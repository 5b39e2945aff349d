// units: reading the human-written values of the command line and the environment (durations, sizes, counts,
// ports, masks) into numbers, with an error message that says what was expected, and writing durations and sizes
// back the way the options are written. Nothing here knows option names; lib/options.ts adds them.

/** Thrown when a value cannot be read; the message says what form was expected. */
export class UnitError extends Error {
  /** The error's name, as stack traces show it. */
  override name = "UnitError";
}

/**
 * Duration units in milliseconds, by every name systemd.time(7) gives them (so a value copied from a unit file
 * reads the same), matched without regard to case except `M`, which systemd reads as months.
 */
const DURATION_UNITS: Record<string, number> = {
  ns: 0.000001,
  nsec: 0.000001,
  us: 0.001,
  usec: 0.001,
  "\u00b5s": 0.001, // micro sign
  "\u03bcs": 0.001, // Greek small letter mu, which systemd also takes
  ms: 1,
  msec: 1,
  s: 1000,
  sec: 1000,
  second: 1000,
  seconds: 1000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000,
  w: 604_800_000,
  week: 604_800_000,
  weeks: 604_800_000,
  month: 2_629_800_000,
  months: 2_629_800_000,
  y: 31_557_600_000,
  year: 31_557_600_000,
  years: 31_557_600_000,
};

/** The longest duration a timer can wait (setTimeout's limit, 2^31 - 1 ms: about 24.8 days). */
const MAX_DURATION_MS = 2_147_483_647;

/**
 * Reads a duration into milliseconds: a number and a unit (`1500ms`, `30s`, `5m`, `1h`, decimals allowed), or
 * several summed, in systemd's time span syntax (systemd.time(7): `5min`, `2h 30min`, `1min30s`, `90 seconds`,
 * `1d`), so a value copied from a unit file means the same here. A bare `0` means "never" to the options that allow
 * it; other bare numbers are refused, because `30` could mean seconds (as systemd reads it) or milliseconds.
 *
 * @param text the value as written
 * @returns the duration in whole milliseconds
 * @throws {UnitError} when the value is not a duration, is under 1 ms (it would read as 0, "never"), or is longer
 * than a timer can wait (about 24 days)
 * @example
 * ```ts
 * parseDuration("1500ms"); // 1500
 * parseDuration("5min"); // 300000
 * parseDuration("1h 30m"); // 5400000
 * ```
 */
export function parseDuration(text: string): number {
  const value = text.trim();
  if (value === "0") return 0;
  const expected = "write a number and a unit, as in 1500ms, 30s, 5m, 5min, 1h 30min (or 0)";
  if (value === "") throw new UnitError(`"${text}" is not a duration: ${expected}`);
  let total = 0;
  let months = false;
  let rest = value;
  while (rest !== "") {
    const match = /^(\d+(?:\.\d+)?)\s*([a-zA-Z\u00b5\u03bc]+)\s*/.exec(rest);
    if (!match) throw new UnitError(`"${text}" is not a duration: ${expected}`);
    months ||= match[2] === "M";
    const unit = match[2] === "M" ? "month" : match[2].toLowerCase();
    if (!(unit in DURATION_UNITS)) {
      throw new UnitError(`"${text}" is not a duration: "${match[2]}" is not a unit; ${expected}`);
    }
    total += Number(match[1]) * DURATION_UNITS[unit];
    rest = rest.slice(match[0].length);
  }
  const ms = Math.round(total);
  if (ms === 0 && total > 0) {
    throw new UnitError(`"${text}" is too short a duration: the shortest is 1ms (0 means never)`);
  }
  if (!Number.isSafeInteger(ms) || ms > MAX_DURATION_MS) {
    const hint = months ? "; M is months, as systemd reads it (for minutes write m or min)" : "";
    throw new UnitError(`"${text}" is too long a duration: the limit is about 24 days (596h)${hint}`);
  }
  return ms;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/**
 * Reads a byte size: a plain number of bytes, or a number with a unit (`64KiB`, `10MB`, `1GiB`, `512k`).
 * KB/MB/GB are powers of 1000, KiB/MiB/GiB and the one-letter forms powers of 1024.
 *
 * @param text the value as written
 * @returns the size in bytes
 * @throws {UnitError} when the value is not a size
 * @example
 * ```ts
 * parseSize("64KiB"); // 65536
 * parseSize("10MB"); // 10000000
 * ```
 */
export function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(text.trim().toLowerCase());
  if (!match || !(match[2] in SIZE_UNITS)) {
    throw new UnitError(`"${text}" is not a size: write bytes, or a number and a unit, as in 65536, 64KiB, 10MB, 1GiB`);
  }
  const bytes = Math.round(Number(match[1]) * SIZE_UNITS[match[2]]);
  if (!Number.isSafeInteger(bytes)) throw new UnitError(`"${text}" is too large a size`);
  return bytes;
}

/**
 * Reads a whole number within `[min, max]`, written in decimal.
 *
 * @param text the value as written
 * @param min the smallest value allowed
 * @param max the largest value allowed
 * @returns the number
 * @throws {UnitError} when the value is not a whole number in range
 */
export function parseInteger(text: string, min: number, max: number): number {
  const value = text.trim();
  // A minus sign is read, so that -1 is called out of range (what it is) rather than not a number.
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new UnitError(`"${text}" is not a whole number`);
  }
  const n = Number(value);
  if (n < min || n > max) throw new UnitError(`${n} is out of range: use ${min} to ${max}`);
  return n;
}

/**
 * Reads a bit mask written in hex (`0x3`) or decimal (`3`), as WPP's `tracelog -flags` takes it.
 *
 * @param text the value as written
 * @param allowed the bits that mean something; any other bit is refused
 * @returns the mask
 * @throws {UnitError} when the value is not a mask of the allowed bits
 */
export function parseMask(text: string, allowed: number): number {
  const value = text.trim().toLowerCase();
  const n = /^0x[0-9a-f]{1,8}$/.test(value)
    ? parseInt(value.slice(2), 16)
    : /^\d{1,10}$/.test(value)
    ? Number(value)
    : NaN;
  if (Number.isNaN(n)) throw new UnitError(`"${text}" is not a mask: write it in hex (0x3) or decimal (3)`);
  if ((n & ~allowed) !== 0 || n > 0xffffffff) {
    throw new UnitError(`"${text}" sets bits that mean nothing here: the known flags are 0x${allowed.toString(16)}`);
  }
  return n;
}

/**
 * Renders milliseconds the way the options are written (`1500ms`, `30s`, `5m`), for help texts and logs.
 *
 * @param ms the duration in milliseconds
 * @returns the shortest exact form
 */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0";
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/**
 * Renders a byte count the shortest exact way (`64KiB`, `1MiB`, `1500`), as sizes are written in options and
 * profiles, and as {@link parseSize} reads them back.
 *
 * @param bytes the size in bytes
 * @param options `decimal`: when no power of 1024 divides it, try powers of 1000 (`10MB` rather than `10000000`),
 *   for a size a person most likely wrote that way (an option's value); off by default (a profile's canonical text)
 * @returns the shortest exact form
 * @example
 * ```ts
 * formatSize(65536); // "64KiB"
 * formatSize(10_000_000); // "10000000"
 * formatSize(10_000_000, { decimal: true }); // "10MB"
 * ```
 */
export function formatSize(bytes: number, options: { decimal?: boolean } = {}): string {
  for (const [unit, factor] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  if (options.decimal) {
    for (const [unit, factor] of [["GB", 1000 ** 3], ["MB", 1000 ** 2], ["KB", 1000]] as const) {
      if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
    }
  }
  return String(bytes);
}
