// units: reading the human-written values of the command line and the environment (durations, sizes, counts,
// ports, masks) into numbers, with an error message that says what was expected. Nothing here knows option names;
// lib/options.ts adds them.

/** Thrown when a value cannot be read; the message says what form was expected. */
export class UnitError extends Error {
  override name = "UnitError";
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Reads a duration such as `1500ms`, `30s`, `5m` or `1h` (decimals allowed: `1.5s`) into milliseconds.
 * A bare `0` means "never" to the options that allow it; other bare numbers are refused, because `30` could mean
 * seconds or milliseconds.
 *
 * @param text the value as written
 * @returns the duration in whole milliseconds
 * @throws {UnitError} when the value is not a duration
 * @example
 * ```ts
 * parseDuration("1500ms"); // 1500
 * parseDuration("5m"); // 300000
 * ```
 */
export function parseDuration(text: string): number {
  const value = text.trim().toLowerCase();
  if (value === "0") return 0;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value);
  if (!match) {
    throw new UnitError(`"${text}" is not a duration: write a number and a unit, as in 1500ms, 30s, 5m, 1h (or 0)`);
  }
  const ms = Math.round(Number(match[1]) * DURATION_UNITS[match[2]]);
  if (!Number.isSafeInteger(ms) || ms > 2_147_483_647) {
    throw new UnitError(`"${text}" is too long a duration: the limit is about 24 days (596h)`);
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
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
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
