// stats_command: `echosrv stats`, a live one-line view of a running echosrv for a terminal, read from its --metrics
// endpoint (no Prometheus or Grafana needed). Each sample fetches /metrics, reads the few series it shows, and
// prints a line with totals and rates since the previous sample: throughput in bit/s with SI prefixes (kbit/s,
// Mbit/s, Gbit/s: powers of 1000, as network rates are written), new connections per second, open connections,
// refusals and errors. On a terminal the line is rewritten in place and always fits its width (Deno.consoleSize,
// read at every sample): the least important fields are dropped first, then the rest are abbreviated, so a line
// never wraps and a rewrite never leaves a fragment. Elsewhere (a pipe, a log) each sample is a whole line of its
// own. Ctrl+C ends it; `--count N` ends it after N samples.
//
// Exit codes: 0 when at least one sample was shown; 1 when the address never answered as an echosrv /metrics page
// (the first attempt fails: the error names the address and why, on standard error, in one line); 2 for a usage
// error (lib/options.ts).

import type { StatsConfig } from "./config.ts";
import { reasonOf } from "./request_failure.ts";

/** The series of one /metrics page: `name{labels}` (as written) -> value. */
export type MetricsPage = Map<string, number>;

/**
 * Reads the Prometheus text format, as far as the summary needs: one sample per line, comments skipped.
 *
 * @param text the body of /metrics
 * @returns the samples by series
 */
export function parseMetricsText(text: string): MetricsPage {
  const page: MetricsPage = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    const value = Number(line.slice(cut + 1));
    if (cut > 0 && !Number.isNaN(value)) page.set(line.slice(0, cut), value);
  }
  return page;
}

/** The sum of every series of a metric (all label values), 0 when absent. */
function total(page: MetricsPage, name: string): number {
  let sum = 0;
  for (const [series, value] of page) {
    if (series === name || series.startsWith(`${name}{`)) sum += value;
  }
  return sum;
}

/** What one line shows. */
export interface StatsSample {
  /** When it was read (ms since the Unix epoch). */
  atMs: number;
  /** The echosrv version the page names. */
  version: string;
  /** True once a stop has begun. */
  draining: boolean;
  /** Open connections. */
  active: number;
  /** Connections accepted, in total. */
  accepted: number;
  /** Connections refused, in total. */
  rejected: number;
  /** TCP/TLS bytes echoed. */
  bytes: number;
  /** UDP datagrams echoed, in total. */
  udpEchoed: number;
  /** UDP datagrams dropped, in total. */
  udpDropped: number;
  /** Errors, in total. */
  errors: number;
}

/**
 * Picks the summary's numbers out of a /metrics page.
 *
 * @param page the parsed page
 * @param atMs when it was read
 * @returns the sample
 * @throws {Error} when the page is not echosrv's (it has no echosrv_build_info)
 */
export function sampleOf(page: MetricsPage, atMs: number): StatsSample {
  let version: string | undefined;
  for (const series of page.keys()) {
    const match = /^echosrv_build_info\{.*version="([^"]*)"/.exec(series);
    if (match) version = match[1];
  }
  if (version === undefined) throw new Error("it answered, but not with echosrv's metrics (no echosrv_build_info)");
  return {
    atMs,
    version,
    draining: total(page, "echosrv_draining") > 0,
    active: total(page, "echosrv_connections_active"),
    accepted: total(page, "echosrv_connections_accepted_total"),
    rejected: total(page, "echosrv_connections_rejected_total"),
    bytes: total(page, "echosrv_echoed_bytes_total"),
    udpEchoed: total(page, "echosrv_udp_datagrams_echoed_total"),
    udpDropped: total(page, "echosrv_udp_datagrams_dropped_total"),
    errors: total(page, "echosrv_errors_total"),
  };
}

const SI = ["", "k", "M", "G", "T", "P"];

/** A value with SI prefixes (powers of 1000) and three significant digits: 1234567 -> ["1.23", "M"]. */
function siParts(value: number): [string, string] {
  let scaled = Math.max(0, value);
  let prefix = 0;
  while (scaled >= 999.5 && prefix < SI.length - 1) {
    scaled /= 1000;
    prefix++;
  }
  if (prefix === 0) return [String(Math.round(scaled)), ""];
  return [scaled.toFixed(scaled >= 99.95 ? 0 : scaled >= 9.995 ? 1 : 2), SI[prefix]];
}

/**
 * A byte count with SI prefixes, powers of 1000 like the rates: 1234567 -> "1.23 MB". (stress/swarm.ts's
 * formatBytesIEC writes powers of 1024 instead, as memory is read.)
 *
 * @param bytes the count
 * @returns the text
 */
export function formatBytesSI(bytes: number): string {
  const [number, prefix] = siParts(bytes);
  return `${number} ${prefix}B`;
}

/**
 * A rate in bits per second with SI prefixes, as network people read it: 45100000 -> "45.1 Mbit/s".
 *
 * @param bitsPerSecond the rate
 * @returns the text, from "0 bit/s" through kbit/s, Mbit/s, Gbit/s, Tbit/s
 */
export function formatBits(bitsPerSecond: number): string {
  const [number, prefix] = siParts(bitsPerSecond);
  return `${number} ${prefix}bit/s`;
}

/** One part of the line: its text, how readily it is left out (higher goes first), and its abbreviation if kept. */
interface Field {
  full: string;
  drop: number;
  short?: string;
}

/** Fields that are never left out (they may be abbreviated). */
const KEEP = 0;

/**
 * The fields of one line, in the order shown.
 *
 * @param now this sample
 * @param before the previous sample, for the rates (none: the rates show as "-")
 * @returns the fields
 */
function fieldsOf(now: StatsSample, before?: StatsSample): Field[] {
  const seconds = before ? (now.atMs - before.atMs) / 1000 : 0;
  const rate = (value: number, previous: number | undefined) =>
    before && seconds > 0 ? Math.max(0, (value - previous!) / seconds) : undefined;
  const accepts = rate(now.accepted, before?.accepted);
  const bits = rate(now.bytes * 8, before ? before.bytes * 8 : undefined);
  const time = new Date(now.atMs).toTimeString().slice(0, 8);
  const bitText = bits === undefined ? "- bit/s" : formatBits(bits);
  const acceptText = accepts === undefined ? "-" : accepts.toFixed(1);
  return [
    { full: time, drop: 6 },
    { full: now.draining ? "DRAINING" : "serving", short: now.draining ? "drain" : "up", drop: KEEP },
    { full: `${now.active} open`, short: `${now.active} open`, drop: KEEP },
    { full: bitText, short: bitText.replace(" ", "").replace("bit/s", "b/s"), drop: KEEP },
    { full: `${acceptText} conn/s`, drop: 2 },
    { full: `${now.rejected} rejected`, drop: 3 },
    { full: `${now.errors} errors`, drop: 1 },
    { full: `${now.accepted} accepted`, drop: 5 },
    { full: `${formatBytesSI(now.bytes)} echoed`, drop: 4 },
    {
      full: `udp ${now.udpEchoed} echoed, ${now.udpDropped} dropped`,
      // Kept early when UDP has done anything; otherwise among the first to go.
      drop: now.udpEchoed + now.udpDropped > 0 ? 3 : 7,
    },
    { full: `echosrv ${now.version}`, drop: 8 },
  ];
}

/**
 * The line for a sample, fitted to a width: all fields in full if they fit; else the most important that fit, in
 * order of importance (state, open connections and throughput always; then errors, connections per second,
 * refusals, UDP when it is used, the totals, the time, the version); when even the three kept ones do not fit in
 * full, they are abbreviated; a line still too long (a terminal narrower than about 20 columns) is cut.
 *
 * @param now this sample
 * @param before the previous sample, if any (for the rates)
 * @param width the most characters the line may have (Infinity: no limit)
 * @returns the line, without a line break
 */
export function formatSample(now: StatsSample, before?: StatsSample, width = Infinity): string {
  const fields = fieldsOf(now, before);
  const line = (chosen: Set<Field>) => fields.filter((f) => chosen.has(f)).map((f) => f.full).join(" | ");
  const chosen = new Set(fields.filter((f) => f.drop === KEEP));
  if (line(chosen).length > width) {
    const short = fields.filter((f) => chosen.has(f)).map((f) => f.short ?? f.full).join(" ");
    return short.slice(0, Math.max(0, width));
  }
  for (const field of fields.filter((f) => f.drop !== KEEP).sort((a, b) => a.drop - b.drop)) {
    chosen.add(field);
    if (line(chosen).length > width) chosen.delete(field);
  }
  return line(chosen);
}

/** Where the lines go; tests swap it. */
export interface StatsOutput {
  /** True when the output is a terminal: the line is then rewritten in place. */
  isTerminal: boolean;
  /** The terminal's width in columns now (it may change between samples), or undefined when unknown. */
  columns(): number | undefined;
  /** Writes a line, or a rewrite of the line in place. */
  write(text: string): void;
  /** Where the one-line error goes when nothing answers (standard error). */
  error(text: string): void;
}

const encoder = new TextEncoder();

const stdoutOutput: StatsOutput = {
  isTerminal: Deno.stdout.isTerminal(),
  columns: () => {
    try {
      return Deno.consoleSize().columns;
    } catch {
      return undefined; // not a terminal after all (or no size known)
    }
  },
  write: (text) => void Deno.stdout.writeSync(encoder.encode(text)),
  error: (text) => void Deno.stderr.writeSync(encoder.encode(text)),
};

/**
 * Runs `echosrv stats` until Ctrl+C or `count` samples.
 *
 * @param config the URL, the interval and the count
 * @param output where to write (standard output and error by default)
 * @returns the exit code: 0 when at least one sample was shown; 1 when the first request got no echosrv page (the
 * one-line error, naming the URL, is on standard error)
 */
export async function runStats(config: StatsConfig, output: StatsOutput = stdoutOutput): Promise<number> {
  const stop = Promise.withResolvers<void>();
  const onSignal = () => stop.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  let before: StatsSample | undefined;
  let successes = 0;
  let shownInPlace = false;
  const show = (line: string) => {
    if (!output.isTerminal) return output.write(`${line}\n`);
    // One column short of the width: writing into the last column makes some terminals wrap.
    const width = Math.max(1, (output.columns() ?? 80) - 1);
    output.write(`\r\x1b[2K${line.slice(0, width)}`);
    shownInPlace = true;
  };
  const timeoutMs = Math.max(config.intervalMs, 2000);
  try {
    for (let i = 0; config.count === 0 || i < config.count; i++) {
      if (i > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const stopped = await Promise.race([
          stop.promise.then(() => true),
          new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), config.intervalMs)),
        ]);
        clearTimeout(timer);
        if (stopped) break;
      }
      try {
        const response = await fetch(config.url, { signal: AbortSignal.timeout(timeoutMs) });
        const body = await response.text();
        if (!response.ok) throw new Error(`it answered HTTP ${response.status} ${response.statusText}`.trim());
        const now = sampleOf(parseMetricsText(body), Date.now());
        const width = output.isTerminal ? Math.max(1, (output.columns() ?? 80) - 1) : Infinity;
        show(formatSample(now, before, width));
        before = now;
        successes++;
      } catch (error) {
        const reason = reasonOf(error, timeoutMs);
        if (successes === 0) {
          // Nothing ever answered: most likely the wrong address, or echosrv without --metrics. Say so and stop.
          const { host } = new URL(config.url);
          output.error(
            `echosrv stats: cannot read ${config.url}: ${reason} (is echosrv running with --metrics ${host}?)\n`,
          );
          return 1;
        }
        show(`lost ${config.url}: ${reason}; retrying every ${config.intervalMs / 1000} s`);
        before = undefined;
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    if (shownInPlace) output.write("\n");
  }
  return 0;
}
