// status_page: the live status page at GET / of the --metrics listener, for a person with a browser (a phone
// included) rather than a Prometheus: what is open now, throughput in bit/s and new connections per second with a
// five-minute chart, refusals and closes by reason, errors, workers, uptime, version and the limits in force. It
// owns three things: the page's files (lib/status_page/: HTML, CSS and a small script, imported as text so they
// travel inside a compiled executable, and served by echosrv itself: the page loads nothing from elsewhere, and
// its Content-Security-Policy forbids it to), the history of the last five minutes (one sample a second), and
// GET /status.json, which the page polls every second. Its counts are /metrics' counts: the same readings
// (lib/metrics.ts) under the same reason names.

import indexHtml from "./status_page/index.html" with { type: "text" };
import statusCss from "./status_page/status.css" with { type: "text" };
import statusJs from "./status_page/status.js" with { type: "text" };
import { countsByReason, type MetricsSnapshot, type Pages, type ReasonCounts } from "./metrics.ts";
import { type ProcessSample, sampleProcess } from "./process_metrics.ts";
import type { RunConfig } from "./config.ts";
import { limitsOf } from "./limits.ts";
import { formatDuration } from "./units.ts";
import { VERSION } from "./version.ts";

/** What the page shows that does not change while the server runs: where it listens, workers, the limits. */
export interface StatusInfo {
  /** The TCP (and UDP) port echoed on. */
  port: number;
  /** The addresses listened on. */
  hosts: string[];
  /** Worker threads serving the port (1 without `--workers`, or where workers are not available). */
  workers: number;
  /** Echo over TLS, UDP echo, PROXY protocol: on or off. */
  features: { tls: boolean; udp: boolean; proxyProtocol: boolean };
  /**
   * The limits and settings in force, as [the option's words, the value as the option is written] (`["max bytes
   * per connection", "64KiB"]`; `unlimited`, `never`, `everyone` or `no one` when off), in the page's order.
   */
  limits: Array<[string, string]>;
  /**
   * The same limits as numbers, for scripts (lib/limits.ts's keys, the unit in the name: `maxConnections`,
   * `maxConnectionsPerIp`, `idleTimeoutMs`, `sendTimeoutMs`, `maxBytesPerConnection` (bytes),
   * `maxConnectionDurationMs`, `shutdownTimeoutMs`, and with their feature `tlsHandshakeTimeoutMs`,
   * `proxyTimeoutMs`, `udpRate` (datagrams per second per source)); 0 is off.
   */
  limitValues: Record<string, number>;
}

/**
 * The page's view of a configuration: what is in force, written as the options are (lib/limits.ts, as the startup
 * line writes it), then the settings beside the limits (the shutdown timeout, the access rules, the copy, the PROXY
 * peers, the certificate).
 *
 * @param config the running configuration
 * @param port the port listened on (the one the OS picked for `--port 0`)
 * @param workers how many workers really serve (1 when `--workers` fell back to one server)
 * @returns the information
 */
export function statusInfoOf(config: RunConfig, port: number, workers: number): StatusInfo {
  const s = config.server;
  const inForce = limitsOf(s);
  const limits: Array<[string, string]> = inForce.map((limit) => [limit.name, limit.text]);
  limits.push(["shutdown timeout", formatDuration(s.shutdownTimeoutMs)]);
  limits.push(["allow", s.access && s.access.allow.length > 0 ? s.access.allow.join(", ") : "everyone"]);
  limits.push(["deny", s.access && s.access.deny.length > 0 ? s.access.deny.join(", ") : "no one"]);
  limits.push(["copy", s.copy]);
  if (s.proxyProtocol) limits.push(["PROXY header from", s.proxyProtocol.from.join(", ")]);
  if (s.tls) limits.push(["TLS certificate", `${s.tls.subject}, valid to ${s.tls.validTo}`]);
  return {
    port,
    hosts: [...s.hosts],
    workers,
    features: { tls: s.tls !== undefined, udp: s.udp !== undefined, proxyProtocol: s.proxyProtocol !== undefined },
    limits,
    limitValues: {
      ...Object.fromEntries(inForce.map((limit) => [limit.key, limit.value])),
      shutdownTimeoutMs: s.shutdownTimeoutMs,
    },
  };
}

/** One point of the chart: the state at `t` and the rates over the second before it. */
export interface HistoryPoint {
  /** When, in milliseconds since the Unix epoch. */
  t: number;
  /** Open TCP/TLS connections. */
  connections: number;
  /** TCP/TLS echo throughput, bits per second (what the server sent back; it received the same). */
  bitsPerSecond: number;
  /** Connections accepted per second. */
  connectionsPerSecond: number;
  /** UDP echo throughput, bits per second. */
  udpBitsPerSecond: number;
}

/** Keeps the last `size` readings, one per call to {@link record}, and the rates between them. */
export class History {
  readonly #points: HistoryPoint[] = [];
  #previous: { t: number; bytes: number; accepted: number; udpBytes: number } | undefined;

  /**
   * An empty history.
   *
   * @param size how many points to keep (300 = five minutes at one a second)
   */
  constructor(readonly size = 300) {}

  /**
   * Adds a reading; the first one only sets the baseline for the rates.
   *
   * @param snapshot the counters now
   * @param t when they were read, in milliseconds since the Unix epoch
   */
  record(snapshot: MetricsSnapshot, t: number): void {
    const now = {
      t,
      bytes: snapshot.bytesEchoed,
      accepted: snapshot.counters.accepted,
      udpBytes: snapshot.udp?.bytesEchoed ?? 0,
    };
    const before = this.#previous;
    this.#previous = now;
    if (!before || t <= before.t) return;
    const seconds = (t - before.t) / 1000;
    // Counters never go down while the process lives; a drop (a worker that died) reads as 0, not negative.
    const rate = (a: number, b: number) => Math.max(0, a - b) / seconds;
    this.#points.push({
      t,
      connections: snapshot.connectionsActive,
      bitsPerSecond: rate(now.bytes, before.bytes) * 8,
      connectionsPerSecond: rate(now.accepted, before.accepted),
      udpBitsPerSecond: rate(now.udpBytes, before.udpBytes) * 8,
    });
    if (this.#points.length > this.size) this.#points.splice(0, this.#points.length - this.size);
  }

  /**
   * The points after `since`.
   *
   * @param since a time in milliseconds since the Unix epoch (0: all of them)
   * @returns the points, oldest first
   */
  since(since = 0): HistoryPoint[] {
    return this.#points.filter((p) => p.t > since);
  }

  /** The newest point, if any. */
  get latest(): HistoryPoint | undefined {
    return this.#points.at(-1);
  }
}

/** The body of GET /status.json. */
export interface StatusDocument {
  /** echosrv's version. */
  version: string;
  /** Deno's version. */
  deno: string;
  /** The operating system (Deno.build.os). */
  os: string;
  /** "serving", or "draining" once a stop has begun. */
  state: "serving" | "draining";
  /** Now, and the process start, in milliseconds since the Unix epoch. */
  now: number;
  /** When the process started (ms since the Unix epoch). */
  startedAt: number;
  /** Seconds since then. */
  uptimeSeconds: number;
  /** What does not change while the server runs. */
  info: StatusInfo;
  /** Open connections and the totals since start (bytes, connections, UDP datagrams). */
  current: {
    connections: number;
    accepted: number;
    echoedBytes: number;
    connectionsEnded: number;
    udpDatagrams: number;
    udpEchoedBytes: number;
  };
  /** The rates over the last second (0 before the second reading). */
  rates: { bitsPerSecond: number; connectionsPerSecond: number; udpBitsPerSecond: number };
  /** Connections refused before any echo, by reason. */
  rejected: ReasonCounts;
  /** Connections the server closed because of a limit, by reason. */
  closed: ReasonCounts;
  /** UDP datagrams not answered, by reason. */
  udpDropped: ReasonCounts;
  /** Errors, by kind. */
  errors: ReasonCounts;
  /** The process's health; absent fields could not be read (see lib/process_metrics.ts). */
  process: Omit<ProcessSample, "source">;
  /** The last five minutes, one point a second, oldest first. */
  history: HistoryPoint[];
}

/**
 * Builds the body of GET /status.json.
 *
 * @param snapshot the counters now (summed over workers)
 * @param process the process's health now
 * @param info what does not change
 * @param history the recent readings
 * @param since send only the history after this time (ms since the Unix epoch; 0 for all of it)
 * @returns the document
 */
export function statusDocument(
  snapshot: MetricsSnapshot,
  process: ProcessSample,
  info: StatusInfo,
  history: History,
  since = 0,
): StatusDocument {
  const now = Date.now();
  const { source: _, ...health } = process;
  const latest = history.latest;
  return {
    version: VERSION,
    deno: Deno.version.deno,
    os: Deno.build.os,
    state: snapshot.draining ? "draining" : "serving",
    now,
    startedAt: Math.round(process.startTimeSeconds * 1000),
    uptimeSeconds: Math.max(0, now / 1000 - process.startTimeSeconds),
    info,
    current: {
      connections: snapshot.connectionsActive,
      accepted: snapshot.counters.accepted,
      echoedBytes: snapshot.bytesEchoed,
      connectionsEnded: snapshot.counters.sessionsEnded,
      udpDatagrams: snapshot.udp?.datagramsEchoed ?? 0,
      udpEchoedBytes: snapshot.udp?.bytesEchoed ?? 0,
    },
    rates: {
      bitsPerSecond: latest?.bitsPerSecond ?? 0,
      connectionsPerSecond: latest?.connectionsPerSecond ?? 0,
      udpBitsPerSecond: latest?.udpBitsPerSecond ?? 0,
    },
    ...countsByReason(snapshot),
    process: health,
    history: history.since(since),
  };
}

/**
 * The Content-Security-Policy of the page: everything from echosrv itself, nothing from anywhere else, no inline
 * script or style (https://www.w3.org/TR/CSP3/).
 */
const PAGE_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const ASSETS: Record<string, { body: string; type: string }> = {
  "/": { body: indexHtml, type: "text/html; charset=utf-8" },
  "/status.css": { body: statusCss, type: "text/css; charset=utf-8" },
  "/status.js": { body: statusJs, type: "text/javascript; charset=utf-8" },
};

/**
 * The page's own files, by path.
 *
 * @param path the request's path
 * @returns the response, or undefined for a path that is not one of the page's files
 */
export function statusAsset(path: string): Response | undefined {
  const asset = ASSETS[path === "/index.html" ? "/" : path];
  if (!asset) return undefined;
  return new Response(asset.body, {
    headers: {
      "content-type": asset.type,
      "content-security-policy": PAGE_POLICY,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      "cache-control": "no-cache",
    },
  });
}

/** How often the history takes a reading, in milliseconds: the resolution of the chart and of the rates. */
const SAMPLE_MS = 1000;

/**
 * The status page, to hand to serveMetrics (lib/metrics.ts): GET / and its files, and GET /status.json. It takes a
 * reading of the counters every second for the history (a few property reads; with --workers, one message to each
 * worker), on a timer that does not keep the process alive, stopped when the endpoint closes.
 *
 * @param info what the page shows that does not change
 * @returns the pages
 * @example
 * ```ts
 * import type { RunConfig } from "./config.ts";
import { limitsOf } from "./limits.ts";
 * import { type MetricsSource, serveMetrics } from "./metrics.ts";
 *
 * function serveWithPage(config: RunConfig, port: number, sources: MetricsSource[]) {
 *   const info = statusInfoOf(config, port, 1);
 *   return serveMetrics(config.metrics!, sources, statusPage(info)); // then open http://HOST:PORT/ in a browser
 * }
 * ```
 */
export function statusPage(info: StatusInfo): Pages {
  return (read) => {
    const history = new History();
    let reading = false;
    const sample = async () => {
      if (reading) return; // a worker slow to answer: skip a tick rather than pile readings up
      reading = true;
      try {
        history.record(await read(), Date.now());
      } finally {
        reading = false;
      }
    };
    void sample();
    const timer = setInterval(sample, SAMPLE_MS);
    Deno.unrefTimer(timer);
    return {
      paths: ["/", "/index.html", ...Object.keys(ASSETS).filter((p) => p !== "/"), "/status.json"],
      respond: async (request, path) => {
        if (path !== "/status.json") return statusAsset(path)!;
        const since = Number(new URL(request.url).searchParams.get("since"));
        const document = statusDocument(await read(), sampleProcess(), info, history, since > 0 ? since : 0);
        return new Response(JSON.stringify(document), {
          headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
        });
      },
      close: () => clearInterval(timer),
    };
  };
}
