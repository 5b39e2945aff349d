// metrics: the `--metrics HOST:PORT` endpoint. GET /metrics renders the server's counters in the Prometheus text
// exposition format (version 0.0.4); GET /healthz answers 200 while serving and 503 once a stop has begun, so a
// load balancer or Kubernetes stops sending new clients; GET /livez answers 200 as long as the process answers at
// all, draining included (a liveness probe on /healthz would restart an instance in the middle of its drain). The counters stay plain numbers on the hot path (the
// server's and the UDP echo's `counters`); this module reads them only when scraped, through source functions, so a
// process running several servers (workers) sums several sources.
//
// Why the text is written here rather than with prom-client (npm): prom-client wants to own the counting (its
// Counter only has inc()), so exposing counters that already exist means resetting and re-incrementing them on
// every scrape; it also brings a registry, default Node.js metrics and two dependencies. What we expose is a fixed
// set of counters and gauges, and the format for them is four kinds of line (HELP, TYPE, sample, blank), with
// label values escaped; tests/metrics_test.ts checks the output with Prometheus's own `promtool check metrics`
// where it is installed.

import { formatAddress } from "./address.ts";
import { ListenError } from "./listen.ts";
import { type ProcessSample, sampleProcess } from "./process_metrics.ts";
import { DURATION_BUCKETS_SECONDS, durationKey, SIZE_BUCKETS_BYTES, sizeKey } from "./session_histograms.ts";
import { serverLog } from "./log.ts";
import type { MetricsConfig } from "./config.ts";
import { emptyCounters, type ServerCounters } from "./counters.ts";
import type { EchoServer } from "./server.ts";
import { emptyUdpCounters, type UdpCounters, type UdpEcho } from "./udp.ts";
import { VERSION } from "./version.ts";

/** One reading of one server's counters. */
export interface MetricsSnapshot {
  /** Open TCP/TLS connections. */
  connectionsActive: number;
  /** Bytes echoed over TCP/TLS, open connections included. */
  bytesEchoed: number;
  /** True once a stop has begun. */
  draining: boolean;
  /** The server's counters (lib/counters.ts). */
  counters: ServerCounters;
  /** The UDP echo's counters, when `--udp` is on. */
  udp?: UdpCounters;
}

/** Reads one server's counters; may be asynchronous (a worker answering a message). */
export type MetricsSource = () => MetricsSnapshot | Promise<MetricsSnapshot>;

/**
 * The source of one server (and its UDP echo, if any): a few property reads, and one walk over the open
 * connections for their bytes.
 *
 * @param server the TCP/TLS echo server
 * @param udp its UDP echo, when `--udp` is on
 * @returns the source
 */
export function serverSource(server: EchoServer, udp?: UdpEcho): MetricsSource {
  return () => ({
    connectionsActive: server.activeConnections,
    bytesEchoed: server.bytesEchoedNow(),
    draining: server.draining,
    counters: server.counters,
    udp: udp?.counters,
  });
}

/**
 * The source of a UDP echo alone, beside servers that report their own TCP counters (the workers of
 * lib/workers.ts, whose UDP echo runs in the main thread).
 *
 * @param udp the UDP echo
 * @returns the source
 */
export function udpSource(udp: UdpEcho): MetricsSource {
  return () => ({
    connectionsActive: 0,
    bytesEchoed: 0,
    draining: false,
    counters: emptyCounters(),
    udp: udp.counters,
  });
}

/**
 * Adds up several servers' readings (workers of one process): counters and gauges sum, draining if any drains.
 *
 * @param snapshots one reading per server (at least one)
 * @returns the total
 */
export function sumSnapshots(snapshots: readonly MetricsSnapshot[]): MetricsSnapshot {
  const [first, ...others] = snapshots;
  const total: MetricsSnapshot = {
    ...first,
    counters: { ...first.counters },
    udp: first.udp ? { ...first.udp } : undefined,
  };
  for (const s of others) {
    total.connectionsActive += s.connectionsActive;
    total.bytesEchoed += s.bytesEchoed;
    total.draining ||= s.draining;
    for (const key of Object.keys(total.counters) as (keyof ServerCounters)[]) {
      total.counters[key] += s.counters[key] ?? 0;
    }
    if (s.udp) {
      total.udp ??= emptyUdpCounters();
      for (const key of Object.keys(total.udp) as (keyof UdpCounters)[]) total.udp[key] += s.udp[key];
    }
  }
  return total;
}

/** Counts by reason (or kind), keyed by the label value /metrics gives them. */
export type ReasonCounts = Record<string, number>;

/**
 * The labelled counters of a reading, keyed by their label values: refusals and server closes by `reason`, UDP
 * drops by `reason`, errors by `kind`. /metrics and the status page both read them here, so they name things alike.
 *
 * @param snapshot the counters
 * @returns the four tables, every label value present even at 0
 */
export function countsByReason(snapshot: MetricsSnapshot): {
  rejected: ReasonCounts;
  closed: ReasonCounts;
  udpDropped: ReasonCounts;
  errors: ReasonCounts;
} {
  const { counters } = snapshot;
  const udp = snapshot.udp ?? emptyUdpCounters();
  return {
    rejected: {
      cap: counters.refusedOverCap,
      per_client_cap: counters.refusedPerClient,
      access_rule: counters.refusedAccessRule,
      proxy_untrusted: counters.refusedProxyUntrusted,
      proxy_header: counters.refusedProxyHeader,
      proxy_timeout: counters.refusedProxyTimeout,
    },
    closed: {
      idle_timeout: counters.closedIdle,
      send_timeout: counters.closedSendTimeout,
      max_bytes: counters.closedMaxBytes,
      max_duration: counters.closedMaxDuration,
    },
    udpDropped: {
      source_port: udp.droppedSourcePort,
      own_port: udp.droppedOwnPort,
      access_rule: udp.droppedAccessRule,
      loop: udp.droppedLoop,
      rate_limit: udp.droppedRateLimit,
    },
    errors: {
      accept: counters.acceptErrors,
      peer_reset: counters.resets,
      tls_handshake: counters.tlsHandshakeErrors,
      unexpected: counters.unexpectedErrors,
      udp_send: udp.sendErrors,
      udp_receive: udp.receiveErrors,
    },
  };
}

/** Escapes a label value: backslash, double quote and line feed, as the text format requires. */
function labelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

type Samples = number | Array<[Record<string, string>, number]>;

/** A sample value as the text format writes it: Go's float syntax, with +Inf, -Inf and NaN spelt that way. */
function sampleValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return Number.isNaN(value) ? "NaN" : String(value);
}

/**
 * Writes one reading in the Prometheus text exposition format (0.0.4): HELP and TYPE for each family, every
 * labelled series even at 0 (so a rate over a reason that has not happened yet is 0, not missing).
 *
 * @param snapshot the counters
 * @param processSample the process's own health (see lib/process_metrics.ts); its absent fields are left out
 * @returns the text, ending with a line feed
 */
export function renderMetrics(snapshot: MetricsSnapshot, processSample: ProcessSample): string {
  const { counters } = snapshot;
  const udp = snapshot.udp ?? emptyUdpCounters();
  const lines: string[] = [];
  const family = (name: string, type: "counter" | "gauge", help: string, samples: Samples | undefined) => {
    if (samples === undefined) return;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    if (typeof samples === "number") {
      lines.push(`${name} ${sampleValue(samples)}`);
      return;
    }
    for (const [labels, value] of samples) {
      const text = Object.entries(labels).map(([k, v]) => `${k}="${labelValue(v)}"`).join(",");
      lines.push(`${name}{${text}} ${sampleValue(value)}`);
    }
  };
  /** A histogram: cumulative `_bucket`s by `le`, the `+Inf` bucket equal to `_count`, and `_sum`. */
  const histogram = (name: string, help: string, buckets: Array<[number, number]>, sum: number, count: number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    for (const [bound, value] of buckets) lines.push(`${name}_bucket{le="${sampleValue(bound)}"} ${value}`);
    lines.push(`${name}_bucket{le="+Inf"} ${count}`, `${name}_sum ${sampleValue(sum)}`, `${name}_count ${count}`);
  };
  family("echosrv_build_info", "gauge", "The running echosrv: version, Deno version and OS (always 1).", [
    [{ version: VERSION, deno: Deno.version.deno, os: Deno.build.os }, 1],
  ]);
  family(
    "echosrv_draining",
    "gauge",
    "1 once a graceful stop has begun (/healthz answers 503), else 0.",
    snapshot.draining ? 1 : 0,
  );
  family("echosrv_connections_active", "gauge", "Open TCP/TLS connections.", snapshot.connectionsActive);
  family(
    "echosrv_connections_accepted_total",
    "counter",
    "TCP/TLS connections admitted and served.",
    counters.accepted,
  );
  const labelled = (label: string, counts: ReasonCounts) =>
    Object.entries(counts).map(([value, count]): [Record<string, string>, number] => [{ [label]: value }, count]);
  const { rejected, closed, udpDropped, errors } = countsByReason(snapshot);
  family(
    "echosrv_connections_rejected_total",
    "counter",
    "TCP/TLS connections refused before any echo, by reason.",
    labelled("reason", rejected),
  );
  family(
    "echosrv_connections_closed_total",
    "counter",
    "Connections the server closed because of a limit.",
    labelled("reason", closed),
  );
  family("echosrv_echoed_bytes_total", "counter", "Bytes echoed over TCP/TLS.", snapshot.bytesEchoed);
  family("echosrv_udp_datagrams_echoed_total", "counter", "UDP datagrams echoed.", udp.datagramsEchoed);
  family("echosrv_udp_echoed_bytes_total", "counter", "Bytes echoed in UDP datagrams.", udp.bytesEchoed);
  family(
    "echosrv_udp_datagrams_dropped_total",
    "counter",
    "UDP datagrams not answered, by reason.",
    labelled("reason", udpDropped),
  );
  family("echosrv_errors_total", "counter", "Errors, by kind.", labelled("kind", errors));
  histogram(
    "echosrv_connection_duration_seconds",
    "How long served TCP/TLS connections lasted, accept to close, in seconds (counted when they end).",
    DURATION_BUCKETS_SECONDS.map((bound) => [bound, counters[durationKey(bound)]]),
    counters.sessionSecondsTotal,
    counters.sessionsEnded,
  );
  histogram(
    "echosrv_connection_echoed_bytes",
    "Bytes echoed per served TCP/TLS connection (counted when it ends).",
    SIZE_BUCKETS_BYTES.map((bound) => [bound, counters[sizeKey(bound)]]),
    counters.sessionBytesTotal,
    counters.sessionsEnded,
  );
  // The standard process metrics (https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics).
  const p = processSample;
  family(
    "process_cpu_seconds_total",
    "counter",
    "User and system CPU time the process has used, in seconds.",
    p.cpuSeconds,
  );
  family(
    "process_resident_memory_bytes",
    "gauge",
    "Resident set size of the process, in bytes.",
    p.residentMemoryBytes,
  );
  family(
    "process_virtual_memory_bytes",
    "gauge",
    "Virtual memory size of the process, in bytes.",
    p.virtualMemoryBytes,
  );
  family("process_open_fds", "gauge", "File descriptors the process has open.", p.openFds);
  family("process_max_fds", "gauge", "The limit on open file descriptors (soft RLIMIT_NOFILE).", p.maxFds);
  family(
    "process_start_time_seconds",
    "gauge",
    "When the process started, in seconds since the Unix epoch.",
    p.startTimeSeconds,
  );
  return lines.join("\n") + "\n";
}

/** The running endpoint. */
export interface MetricsServer {
  /** The port it listens on (the one the OS picked for port 0). */
  port: number;
  /** Stops answering and closes the port. */
  close(): Promise<void>;
}

/** More pages served beside /metrics (the status page of lib/status_page.ts), reading the same counters. */
export interface PageRoutes {
  /** The paths these pages answer (GET and HEAD). */
  readonly paths: readonly string[];
  /** Answers a request for one of {@link paths}. */
  respond(request: Request, path: string): Promise<Response>;
  /** Stops whatever the pages run in the background. */
  close(): void;
}

/** Builds the extra pages, given the function that reads the counters (summed over the sources). */
export type Pages = (read: () => Promise<MetricsSnapshot>) => PageRoutes;

/**
 * Serves /metrics, /healthz and /livez, and the extra pages if any. Sources are read at each request; the array may
 * grow later (a worker starting).
 *
 * @param address where to listen
 * @param sources one per server in this process
 * @param pages more pages to serve (the status page), built once the counters can be read
 * @returns the running endpoint
 * @throws {ListenError} when the address cannot be listened on
 * @example
 * ```ts
 * import { EchoServer } from "./server.ts";
 *
 * const server = new EchoServer({
 *   port: 0,
 *   hosts: ["127.0.0.1"],
 *   maxConnections: 100,
 *   idleTimeoutMs: 60_000,
 *   shutdownTimeoutMs: 1000,
 *   copy: "loop",
 * });
 * await server.start();
 * const metrics = serveMetrics({ hostname: "127.0.0.1", port: 0 }, [serverSource(server)]);
 * // curl http://127.0.0.1:PORT/metrics ; curl -i http://127.0.0.1:PORT/healthz (PORT: metrics.port)
 * await server.stop();
 * await metrics.close();
 * ```
 */
export function serveMetrics(address: MetricsConfig, sources: readonly MetricsSource[], pages?: Pages): MetricsServer {
  const read = async () => sumSnapshots(await Promise.all(sources.map((source) => source())));
  const extra = pages?.(read);
  const handler = async (request: Request): Promise<Response> => {
    const path = new URL(request.url).pathname;
    const known = path === "/metrics" || path === "/healthz" || path === "/livez" || extra?.paths.includes(path);
    if (!known) {
      const index = extra ? "/, " : "";
      return new Response(`not found: try ${index}/metrics, /healthz or /livez\n`, { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    if (extra?.paths.includes(path)) return await extra.respond(request, path);
    const text = { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" };
    if (path === "/livez") return new Response("alive\n", { headers: text });
    const snapshot = await read();
    if (path === "/healthz") {
      return new Response(snapshot.draining ? "draining\n" : "serving\n", {
        status: snapshot.draining ? 503 : 200,
        headers: text,
      });
    }
    return new Response(renderMetrics(snapshot, sampleProcess()), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" },
    });
  };
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: address.hostname,
      port: address.port,
      onListen: () => {},
      onError: (error) => {
        serverLog.error("metrics: {error}", { error: String(error) });
        return new Response("internal error\n", { status: 500 });
      },
    }, handler);
  } catch (error) {
    extra?.close();
    const where = `the metrics address ${formatAddress(address.hostname, address.port)}`;
    if (error instanceof Deno.errors.AddrInUse) {
      throw new ListenError(`${where} is already in use; choose another --metrics address`);
    }
    throw new ListenError(`cannot listen on ${where}: ${(error as Error).message}`);
  }
  const port = server.addr.port;
  const base = `http://${formatAddress(server.addr.hostname, port)}`;
  serverLog.info(`serving metrics on {url} and health on {health}${extra ? ", the status page on {page}" : ""}`, {
    url: `${base}/metrics`,
    health: `${base}/healthz`,
    ...(extra ? { page: `${base}/` } : {}),
    port,
  });
  return {
    port,
    close: () => {
      extra?.close();
      return server.shutdown();
    },
  };
}
