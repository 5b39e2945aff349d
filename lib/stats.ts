// stats: `echosrv stats`, a live one-line view of a running echosrv for a terminal, read from its --metrics
// endpoint (no Prometheus or Grafana needed). Each sample fetches /metrics, reads the few series it shows, and
// prints a line with totals and rates since the previous sample; on a terminal the line is rewritten in place,
// elsewhere (a pipe, a log) each sample is a line of its own. Ctrl+C ends it; `--count N` ends it after N samples.

import type { StatsConfig } from "./options.ts";

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
  atMs: number;
  version: string;
  draining: boolean;
  active: number;
  accepted: number;
  rejected: number;
  bytes: number;
  udpEchoed: number;
  udpDropped: number;
  errors: number;
}

/**
 * Picks the summary's numbers out of a /metrics page.
 *
 * @param page the parsed page
 * @param atMs when it was read
 * @returns the sample
 */
export function sampleOf(page: MetricsPage, atMs: number): StatsSample {
  let version = "?";
  for (const series of page.keys()) {
    const match = /^echosrv_build_info\{.*version="([^"]*)"/.exec(series);
    if (match) version = match[1];
  }
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

const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];

/** 1234567 -> "1.2 MB" (powers of 1000, as network rates are written). */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/**
 * The one-line summary: state, connections, bytes, UDP, errors; with rates when a previous sample is given.
 *
 * @param now this sample
 * @param before the previous sample, if any
 * @returns the line, without a line break
 */
export function formatSample(now: StatsSample, before?: StatsSample): string {
  const seconds = before ? (now.atMs - before.atMs) / 1000 : 0;
  const rate = (value: number, previous: number | undefined) =>
    before && seconds > 0 ? Math.max(0, (value - previous!) / seconds) : undefined;
  const accepts = rate(now.accepted, before?.accepted);
  const throughput = rate(now.bytes, before?.bytes);
  const time = new Date(now.atMs).toTimeString().slice(0, 8);
  return [
    `${time} echosrv ${now.version} ${now.draining ? "DRAINING" : "serving"}`,
    `conns ${now.active} open, ${now.accepted} accepted` +
    (accepts === undefined ? "" : ` (${accepts.toFixed(1)}/s)`) + `, ${now.rejected} rejected`,
    `echoed ${formatBytes(now.bytes)}` + (throughput === undefined ? "" : ` (${formatBytes(throughput)}/s)`),
    `udp ${now.udpEchoed} echoed, ${now.udpDropped} dropped`,
    `errors ${now.errors}`,
  ].join(" | ");
}

/** Where the lines go; tests swap it. */
export interface StatsOutput {
  /** True when the output is a terminal: the line is then rewritten in place. */
  isTerminal: boolean;
  write(text: string): void;
}

const stdoutOutput: StatsOutput = {
  isTerminal: Deno.stdout.isTerminal(),
  write: (text) => void Deno.stdout.writeSync(new TextEncoder().encode(text)),
};

/**
 * Runs `echosrv stats` until Ctrl+C or `count` samples.
 *
 * @param config the URL, the interval and the count
 * @param output where to write (standard output by default)
 * @returns the exit code: 0 when at least one sample was read, 1 when the endpoint could never be read
 */
export async function runStats(config: StatsConfig, output: StatsOutput = stdoutOutput): Promise<number> {
  const stop = Promise.withResolvers<void>();
  const onSignal = () => stop.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  let before: StatsSample | undefined;
  let successes = 0;
  const show = (line: string) => output.write(output.isTerminal ? `\r\x1b[2K${line}` : `${line}\n`);
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
        const response = await fetch(config.url, { signal: AbortSignal.timeout(Math.max(config.intervalMs, 2000)) });
        const body = await response.text();
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const now = sampleOf(parseMetricsText(body), Date.now());
        show(formatSample(now, before));
        before = now;
        successes++;
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        show(`cannot read ${config.url}: ${reason}${config.count === 1 ? "" : " (retrying)"}`);
        before = undefined;
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    if (output.isTerminal) output.write("\n");
  }
  return successes > 0 ? 0 : 1;
}
