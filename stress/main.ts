// stress/main: the `deno task stress` command. Reads its options, runs the swarm (stress/swarm.ts) against a fresh
// echosrv, prints the summary, and exits 0 when every invariant held, 1 on any violation, 2 on a usage error.
//
//   deno task stress                                  60 s, a random seed (printed)
//   deno task stress --duration 600 --seed 7          the long run
//   deno task stress --seed 7 --replay 1234           rerun session 1234 of seed 7, alone, described in full
//   deno task stress --duration 30 --stop-after 10    SIGTERM the server 10 s in, while the swarm runs
//   deno task stress -- --workers 2                   anything after -- goes to echosrv (or --server-args "...")
//   deno task stress --tls / --proxy                  echosrv over TLS / behind PROXY headers, the clients to match
//   deno task stress --stop-after 10 --stop-with service   the Windows service's STOP, through the fake SCM

import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { parseCommandLine } from "../lib/options.ts";
import { formatDuration, parseDuration, parseInteger, parseSize, UnitError } from "../lib/units.ts";
import { makeTestCertificate } from "../support/certificate.ts";
import { defaultWeights, KINDS, parseWeights, type PlanLimits } from "./kinds.ts";
import { havePython } from "./rcvbuf_peer.ts";
import type { Transport } from "./session.ts";
import {
  formatBytesIEC,
  formatKiB,
  runSwarm,
  type SideServerReport,
  SIGTERM_STOPPER,
  type Stopper,
  type SwarmOptions,
  type SwarmReport,
} from "./swarm.ts";

/** Kinds whose client is stress/rcvbuf_peer.py. */
const KINDS_NEEDING_PYTHON = ["byte-limit-rcvbuf"];

/** What the command line asks for. */
interface StressOptions {
  duration: number;
  seed?: number;
  clients: number;
  concurrency: number;
  weights: Record<string, number>;
  maxSize: number;
  idleTimeout: number;
  sendTimeout: number;
  byteLimit: number;
  ageLimit: number;
  serverIdleTimeout: number;
  shutdownTimeout: number;
  sessionDeadline: number;
  stopAfter?: number;
  stopWith: "sigterm" | "service";
  serverArg: string[];
  serverArgs?: string;
  tls?: boolean;
  proxy?: boolean;
  rssLimit?: number;
  warmup?: number;
  replay?: number;
  connect?: { hostname: string; port: number };
  json?: string;
}

const DEFAULTS = {
  duration: 60_000,
  clients: 4,
  concurrency: 32,
  maxSize: 64 * 1024 * 1024,
  idleTimeout: 10_000,
  sendTimeout: 3_000,
  byteLimit: 256 * 1024,
  ageLimit: 10_000,
  serverIdleTimeout: 60_000,
  shutdownTimeout: 10_000,
  sessionDeadline: 60_000,
};

/** A duration: bare seconds (`600`) or with a unit (`10m`, `1500ms`). */
function seconds(text: string): number {
  if (/^\s*\d+(\.\d+)?\s*$/.test(text)) return Math.round(Number(text) * 1000);
  return parseDuration(text);
}

/** `127.0.0.1:40007` or `[::1]:40007`. */
function hostPort(text: string): { hostname: string; port: number } {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not host:port (for example 127.0.0.1:40007)`);
  return { hostname: match[1], port: parseInteger(match[2], 1, 65535) };
}

function reader<T>(read: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return read(text);
    } catch (error) {
      if (error instanceof UnitError || error instanceof Error) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

function program(): Command {
  const count = (max: number) => reader((t) => parseInteger(t, 1, max));
  return new Command("stress")
    .description(
      "A seeded, reproducible client swarm against a fresh echosrv on loopback, checking that every completed " +
        "session is byte-exact, nothing hangs, the server never exits, its memory holds a bound, its descriptors " +
        "come back, and its log has no warning or error. Session kinds: " +
        Object.entries(KINDS).map(([name, k]) => `${name} (${k.defaultWeight}): ${k.description}`).join("; ") + ".",
    )
    .addOption(
      new Option("--duration <seconds>", "how long sessions keep starting (seconds, or 10m, 1500ms)")
        .default(DEFAULTS.duration, "60").argParser(reader(seconds)),
    )
    .addOption(new Option("--seed <n>", "the run's seed (default: random, printed)").argParser(count(2 ** 32 - 1)))
    .addOption(new Option("--clients <n>", "client processes").default(DEFAULTS.clients).argParser(count(64)))
    .addOption(
      new Option("--concurrency <n>", "sessions at once in each client process").default(DEFAULTS.concurrency)
        .argParser(count(10_000)),
    )
    .addOption(
      new Option("--weights <list>", "kind=weight,... on top of the defaults (e.g. churn=0,exact=50)")
        .default(defaultWeights(), "see above").argParser(reader(parseWeights)),
    )
    .addOption(
      new Option("--max-size <size>", "largest byte-exact session").default(DEFAULTS.maxSize, "64MiB")
        .argParser(reader(parseSize)),
    )
    .addOption(
      new Option(
        "--idle-timeout <duration>",
        "idle timeout of the server the idle kinds use (they stay under or outlast it)",
      )
        .default(DEFAULTS.idleTimeout, "10s").argParser(reader(parseDuration)),
    )
    .addOption(
      new Option(
        "--send-timeout <duration>",
        "send timeout of the idle kinds' server, which the send-timeout kind waits out",
      ).default(DEFAULTS.sendTimeout, "3s").argParser(reader(parseDuration)),
    )
    .addOption(
      new Option(
        "--byte-limit <size>",
        "the byte-limit server's --max-bytes-per-connection: what each byte-limit session must get back, exactly",
      ).default(DEFAULTS.byteLimit, "256KiB").argParser(reader(parseSize)),
    )
    .addOption(
      new Option(
        "--age-limit <duration>",
        "the age-limit server's --max-connection-duration, which the age-limit kind outlasts",
      ).default(DEFAULTS.ageLimit, "10s").argParser(reader(parseDuration)),
    )
    .addOption(
      new Option(
        "--server-idle-timeout <duration>",
        "idle timeout of the swarmed server: long, as in production, so a slow reader on a busy machine is not cut",
      ).default(DEFAULTS.serverIdleTimeout, "60s").argParser(reader(parseDuration)),
    )
    .addOption(
      new Option("--shutdown-timeout <duration>", "the server's grace period on stop")
        .default(DEFAULTS.shutdownTimeout, "10s").argParser(reader(parseDuration)),
    )
    .addOption(
      new Option("--session-deadline <duration>", "time any session may take beyond what its plan needs")
        .default(DEFAULTS.sessionDeadline, "60s").argParser(reader(parseDuration)),
    )
    .addOption(
      new Option("--stop-after <seconds>", "send the server SIGTERM this far into the run (stop under load)")
        .argParser(reader(seconds)),
    )
    .addOption(
      new Option(
        "--stop-with <how>",
        "how the server is stopped (at --stop-after, or at the end): SIGTERM, or the Windows service's STOP " +
          "through the fake SCM of support/fake_scm.ts (Linux, needs cc)",
      ).choices(["sigterm", "service"])
        .default("sigterm"),
    )
    .addOption(
      new Option("--server-arg <arg>", "pass an argument to echosrv (repeatable), e.g. --server-arg=--copy=pipe")
        .default([], "none").argParser((t: string, prev: string[]) => [...prev, t]),
    )
    .addOption(
      new Option(
        "--server-args <args>",
        'echosrv arguments, split at spaces (e.g. "--workers 2"); or put them after --',
      ),
    )
    .addOption(
      new Option("--tls", "run echosrv over TLS with a throwaway certificate (needs openssl); clients use TLS"),
    )
    .addOption(
      new Option("--proxy", "run echosrv with --proxy-protocol; every client sends a PROXY header (v1, v2) first"),
    )
    .addOption(
      new Option("--rss-limit <size>", "server RSS allowed after warm-up (default: warm-up peak x 1.5 + 32 MiB)")
        .argParser(reader(parseSize)),
    )
    .addOption(new Option("--warmup <seconds>", "memory warm-up (default: 20% of the run, 5-60 s)").argParser(
      reader(seconds),
    ))
    .addOption(new Option("--replay <n>", "rerun only session n of --seed, and describe it").argParser(
      reader((t) => parseInteger(t, 0, Number.MAX_SAFE_INTEGER)),
    ))
    .addOption(
      new Option("--connect <host:port>", "swarm a server already running there (no server-side checks)")
        .argParser(reader(hostPort)),
    )
    .addOption(new Option("--json <path>", "also write the report as JSON to this file"))
    .helpOption("-h, --help", "show this help and exit")
    .usage("[options] [-- echosrv options]")
    .allowExcessArguments(false)
    .exitOverride();
}

/**
 * How the clients must connect to echosrv run with `serverArgs`, read with echosrv's own option parser (so
 * `--tls-cert=x`, `ECHOSRV_TLS_CERT` and the rest count as echosrv counts them): TLS trusting the server's own
 * certificate (it must name 127.0.0.1, as --tls's does), a PROXY header first, or plain TCP.
 *
 * @returns the transport, or echosrv's message when the arguments are not valid
 */
function clientTransport(serverArgs: string[]): Transport | string {
  let message = "";
  const parsed = parseCommandLine(["--port", "0", ...serverArgs], {
    out: (text) => message += text,
    err: (text) => message += text,
  });
  if (parsed.kind !== "run") return message.trim() || `echosrv ${serverArgs.join(" ")} would not run the server`;
  const { tls, proxyProtocol } = parsed.config.server;
  return { tlsCaCert: tls?.cert, proxyHeader: proxyProtocol !== undefined };
}

/** The command line that replays session `n`: the seed and every option that changes plans. */
function replayCommand(options: StressOptions, limits: PlanLimits, seed: number, n: number): string {
  const parts = ["deno task stress", `--seed ${seed}`, `--replay ${n}`];
  const defaults = defaultWeights();
  const changed = Object.entries(options.weights).filter(([k, w]) => defaults[k] !== w);
  if (changed.length > 0) parts.push(`--weights ${changed.map(([k, w]) => `${k}=${w}`).join(",")}`);
  if (options.maxSize !== DEFAULTS.maxSize) parts.push(`--max-size ${options.maxSize}`);
  if (limits.idleTimeoutMs !== DEFAULTS.idleTimeout) parts.push(`--idle-timeout ${limits.idleTimeoutMs}ms`);
  if (limits.sendTimeoutMs !== DEFAULTS.sendTimeout) parts.push(`--send-timeout ${limits.sendTimeoutMs}ms`);
  if (limits.byteLimit !== DEFAULTS.byteLimit) parts.push(`--byte-limit ${limits.byteLimit}`);
  if (limits.ageLimitMs !== DEFAULTS.ageLimit) parts.push(`--age-limit ${limits.ageLimitMs}ms`);
  if (options.serverIdleTimeout !== DEFAULTS.serverIdleTimeout) {
    parts.push(`--server-idle-timeout ${options.serverIdleTimeout}ms`);
  }
  if (options.sessionDeadline !== DEFAULTS.sessionDeadline) {
    parts.push(`--session-deadline ${options.sessionDeadline}ms`);
  }
  if (options.tls) parts.push("--tls");
  if (options.proxy) parts.push("--proxy");
  for (const arg of options.serverArg) parts.push(`--server-arg=${arg}`);
  if (options.connect) parts.push(`--connect ${options.connect.hostname}:${options.connect.port}`);
  return parts.join(" ");
}

function pad(text: string | number, width: number): string {
  return String(text).padStart(width);
}

/** The human summary. */
export function summarize(report: SwarmReport, options: StressOptions): string {
  const lines: string[] = [];
  const verdict = report.passed ? "PASSED" : "FAILED";
  if (report.replay) {
    const r = report.replay;
    lines.push(`echosrv stress replay: ${verdict} (seed ${report.seed}, session ${r.plan.n}, ${r.durationMs} ms)`);
    lines.push(`plan: ${JSON.stringify(r.plan)}`);
    lines.push(`ending: ${r.ending}${r.detail ? ` (${r.detail})` : ""}`);
    lines.push(`sent ${formatBytesIEC(r.stats.bytesSent)}, verified ${formatBytesIEC(r.stats.bytesVerified)}`);
    for (const note of report.closeNotes ?? []) lines.push(`close checked: ${note}`);
  } else {
    lines.push(
      `echosrv stress: ${verdict} (seed ${report.seed}, ${(report.elapsedMs / 1000).toFixed(1)} s, ` +
        `${report.clients} client processes x ${report.concurrency} sessions at once` +
        `${options.tls ? ", over TLS" : ""}${options.proxy ? ", after PROXY headers" : ""}` +
        `${options.serverArg.length ? `, echosrv ${options.serverArg.join(" ")}` : ""})`,
    );
    lines.push("sessions by kind:");
    lines.push(
      `  ${"kind".padEnd(18)}${pad("sessions", 9)}${pad("ok", 9)}${pad("cut", 6)}${pad("refused", 8)}` +
        `${pad("failed", 7)}${pad("connections", 12)}${pad("verified", 12)}`,
    );
    const row = (name: string, s: typeof report.total) =>
      `  ${name.padEnd(18)}${pad(s.sessions, 9)}${pad(s.ok, 9)}${pad(s.cut, 6)}${pad(s.refused, 8)}` +
      `${pad(s.failed, 7)}${pad(s.connections, 12)}${pad(formatBytesIEC(s.bytesVerified), 12)}`;
    for (const [name, s] of Object.entries(report.kinds)) {
      if (s.sessions > 0 || (options.weights[name] ?? 0) > 0) lines.push(row(name, s));
    }
    lines.push(row("total", report.total));
    if (report.closes && Object.keys(report.closes).length > 0) {
      lines.push(
        "closes checked against the servers' closing log lines (the client read exactly what the server counted " +
          "as echoed, verified, then the end of stream, for the reason planned):",
      );
      lines.push(
        `  ${"kind".padEnd(18)}${pad("checked", 8)}${pad("exact", 8)}${pad("bytes", 12)}  reasons; other outcomes`,
      );
      const order = [...Object.keys(KINDS), "stop cuts"];
      const closes = Object.entries(report.closes).sort(([a], [b]) => order.indexOf(a) - order.indexOf(b));
      for (const [name, c] of closes) {
        const reasons = Object.entries(c.reasons).map(([r, n]) => `${r} ${n}`).join(", ");
        const others = Object.entries(c.verdicts).filter(([v]) => v !== "exact").map(([v, n]) => `${v} ${n}`);
        lines.push(
          `  ${name.padEnd(18)}${pad(c.checked, 8)}${pad(c.verdicts.exact ?? 0, 8)}${
            pad(formatBytesIEC(c.bytes), 12)
          }` +
            `  ${reasons || "-"}${others.length ? `; ${others.join(", ")}` : ""}`,
        );
      }
    }
    const server = report.server;
    lines.push(
      `bytes verified: ${formatBytesIEC(report.total.bytesVerified)} (sent ${formatBytesIEC(report.total.bytesSent)})` +
        (server?.accepted === undefined ? "" : `; server: ${server.accepted} connections served, ` +
          `${formatBytesIEC(server.bytesEchoed ?? 0)} echoed, ${server.closedIdle ?? 0} closed by its idle timeout`),
    );
    const idle = report.idleServer;
    if (idle) {
      lines.push(
        `idle kinds' server (idle timeout ${formatDuration(options.idleTimeout)}, send timeout ` +
          `${formatDuration(options.sendTimeout)}): ${idle.accepted ?? "?"} connections, ${idle.closedIdle ?? "?"} ` +
          `closed by its idle timeout, ${idle.closedSendTimeout ?? "?"} by its send timeout, exit code ` +
          `${idle.exitCode}, ${idle.unexpected.length} unexpected log lines`,
      );
    }
    const side = (name: string, server: SideServerReport | undefined, closed: string) => {
      if (server) {
        lines.push(
          `${name}: ${server.accepted ?? "?"} connections, ${closed}, exit code ${server.exitCode}, ` +
            `${server.unexpected.length} unexpected log lines`,
        );
      }
    };
    side(
      `byte-limit server (${formatBytesIEC(options.byteLimit)})`,
      report.bytesServer,
      `${report.bytesServer?.closedMaxBytes ?? "?"} closed at the byte limit`,
    );
    side(
      `age-limit server (${formatDuration(options.ageLimit)})`,
      report.ageServer,
      `${report.ageServer?.closedMaxDuration ?? "?"} closed at the age limit`,
    );
    lines.push(
      report.peakConnections >= 0
        ? `peak concurrent connections (server side, sampled): ${report.peakConnections}`
        : `peak concurrent connections (clients' own count): ${report.clientPeakConnections}`,
    );
    const m = report.memory;
    if (m) {
      lines.push(
        `memory: RSS at start ${formatKiB(m.startKiB)}, warm-up (${(m.warmupMs / 1000).toFixed(0)} s) peak ` +
          `${formatKiB(m.warmupPeakKiB)}; after warm-up peak ${formatKiB(m.peakKiB)}, bound ${
            formatKiB(m.boundKiB)
          }: ` +
          `${m.boundHeld ? "held" : "EXCEEDED"}`,
      );
      lines.push(
        `memory windows (median/max): ${
          m.windows.map((w) => `${w.fromS}-${w.toS}s ${formatKiB(w.medianKiB)}/${formatKiB(w.maxKiB)}`).join(", ")
        }; steady growth ${formatKiB(m.growthKiB)} (allowed ${formatKiB(m.growthAllowedKiB)}): ` +
          `${m.growthHeld ? "held" : "GREW"}; first to last window ${formatKiB(m.growthFirstToLastKiB)}`,
      );
    }
    const d = report.descriptors;
    if (d) {
      lines.push(
        `descriptors: baseline ${d.baseline}, peak ${d.peak}, after the swarm ${d.after}: ` +
          `${d.backToBaseline ? "back to baseline" : "NOT back to baseline"}`,
      );
    }
    if (report.lateWrites) {
      lines.push(
        `late writes (${report.lateWrites.length}): sessions reset because they wrote to a socket the server had ` +
          "closed as planned, after being quiet longer than its lingering close waits (counted as cut):",
      );
      for (const line of report.lateWrites.slice(0, 10)) lines.push(`  - ${line}`);
    }
    if (report.stop) {
      const s = report.stop;
      lines.push(
        `stop under load: ${s.how} at ${(options.stopAfter! / 1000).toFixed(1)} s, exit code ${s.exitCode} ` +
          `${s.exitedAfterMs} ms later (grace ${s.graceMs} ms); ${s.okAfterSignal} sessions completed exactly ` +
          `after the signal, ${s.closedAtGraceEnd} closed by the server at the end of the grace period, ` +
          `${s.cut} cut (clean close seen by the client), ${s.refused} refused afterwards`,
      );
    }
    if (report.stopCheck) lines.push(report.stopCheck);
  }
  if (report.log) {
    lines.push(
      `server log: ${report.log.lines} lines, ${report.log.unexpected.length} unexpected (warnings, errors, non-JSON)`,
    );
  } else {
    lines.push("server-side checks (memory, descriptors, log, exit): skipped, the server is not ours (--connect)");
  }
  if (report.violations.length === 0) {
    lines.push("violations: none");
  } else {
    lines.push(`violations (${report.violations.length}):`);
    for (const v of report.violations.slice(0, 50)) lines.push(`  - ${v}`);
    if (report.violations.length > 50) lines.push(`  ... and ${report.violations.length - 50} more (see --json)`);
  }
  return lines.join("\n");
}

/**
 * Runs `deno task stress` with these arguments.
 *
 * @param args the arguments after the task name
 * @returns the exit code: 0 passed, 1 a violation, 2 a usage error
 */
export async function main(args: string[]): Promise<number> {
  const command = program();
  let options: StressOptions;
  // Everything after `--` is echosrv's.
  const cut = args.indexOf("--");
  const passThrough = cut >= 0 ? args.slice(cut + 1) : [];
  try {
    command.parse(cut >= 0 ? args.slice(0, cut) : args, { from: "user" });
    options = command.opts<StressOptions>();
  } catch (error) {
    if (error instanceof CommanderError) return error.code === "commander.helpDisplayed" ? 0 : 2;
    throw error;
  }
  // The user's echosrv arguments, as given (a replay repeats them); --tls and --proxy add theirs below.
  options.serverArg = [
    ...options.serverArg,
    ...(options.serverArgs ?? "").split(/\s+/).filter((a) => a !== ""),
    ...passThrough,
  ];
  const usage = options.stopAfter !== undefined && options.connect
    ? "--stop-after needs a server of its own: it cannot be combined with --connect"
    : options.stopAfter !== undefined && options.stopAfter >= options.duration
    ? "--stop-after must come before the end of --duration"
    : options.stopWith !== "sigterm" && options.connect
    ? "--stop-with needs a server of its own: it cannot be combined with --connect"
    : options.tls && options.connect
    ? "--tls starts a server with a certificate of its own: it cannot be combined with --connect"
    : options.tls && options.proxy
    ? "--tls and --proxy cannot be combined (echosrv reads a PROXY header only before plain TCP)"
    : undefined;
  if (usage) {
    console.error(`stress: error: ${usage}`);
    return 2;
  }
  await using cert = options.tls ? await makeTestCertificate() : undefined;
  if (options.tls && !cert) {
    console.error("stress: error: --tls makes a throwaway certificate with openssl, which is not installed");
    return 2;
  }
  const serverArgs = [
    ...(cert ? ["--tls-cert", cert.certFile, "--tls-key", cert.keyFile] : []),
    ...(options.proxy ? ["--proxy-protocol", "--proxy-from", "127.0.0.1"] : []),
    ...options.serverArg,
  ];
  const transport = options.connect ? { proxyHeader: options.proxy } : clientTransport(serverArgs);
  if (typeof transport === "string") {
    console.error(`stress: error: the echosrv arguments are not valid: ${transport}`);
    return 2;
  }
  let stopper: Stopper = SIGTERM_STOPPER;
  if (options.stopWith === "service") {
    const { serviceStopper } = await import("./service_stop.ts");
    const made = await serviceStopper();
    if (typeof made === "string") {
      console.error(`stress: error: --stop-with service: ${made}`);
      return 2;
    }
    stopper = made;
  }
  const seed = options.seed ?? (crypto.getRandomValues(new Uint32Array(1))[0] || 1);
  const limits: PlanLimits = {
    maxSize: options.maxSize,
    // Stopped under load, the run has one server, so the idle kinds plan against its (long) idle timeout.
    idleTimeoutMs: options.stopAfter !== undefined ? options.serverIdleTimeout : options.idleTimeout,
    sendTimeoutMs: options.sendTimeout,
    byteLimit: options.byteLimit,
    ageLimitMs: options.ageLimit,
    baseDeadlineMs: options.sessionDeadline,
  };
  // Kinds that cannot run in this run get weight 0, said here and repeated by a replay's command line.
  const single = options.stopAfter !== undefined || options.connect !== undefined;
  const python = await havePython();
  const leftOut = new Map<string, string[]>();
  for (const [name, kind] of Object.entries(KINDS)) {
    if ((options.weights[name] ?? 0) === 0) continue;
    const why = single && ["send", "bytes", "age"].includes(kind.target)
      ? "their servers (a short send timeout, a byte limit, an age limit) run only beside a swarmed server of ours " +
        "that is not stopped (no --stop-after, no --connect)"
      : KINDS_NEEDING_PYTHON.includes(name) && options.tls
      ? "its client is a Python socket, which speaks no TLS here"
      : KINDS_NEEDING_PYTHON.includes(name) && !python
      ? "its client is a Python socket, and python3 is not installed"
      : undefined;
    if (why) {
      options.weights[name] = 0;
      leftOut.set(why, [...leftOut.get(why) ?? [], name]);
    }
  }
  for (const [why, names] of leftOut) console.log(`stress: left out (weight 0): ${names.join(", ")}: ${why}`);
  if (Object.values(options.weights).every((w) => w === 0)) {
    console.error("stress: error: no session kind can run here (every weight is 0)");
    return 2;
  }
  const swarm: SwarmOptions = {
    seed,
    durationMs: options.duration,
    clients: options.clients,
    concurrency: options.replay !== undefined ? 1 : options.concurrency,
    weights: options.weights,
    limits,
    serverIdleTimeoutMs: options.serverIdleTimeout,
    shutdownTimeoutMs: options.shutdownTimeout,
    serverArgs,
    transport,
    stopper,
    stopAfterMs: options.stopAfter,
    replay: options.replay,
    connect: options.connect,
    rssLimitKiB: options.rssLimit === undefined ? undefined : Math.ceil(options.rssLimit / 1024),
    warmupMs: options.warmup,
    progress: (line) => console.log(line),
    replayCommand: (n) => replayCommand(options, limits, seed, n),
  };
  if (options.replay === undefined) {
    console.log(
      `echosrv stress: seed ${seed}, ${(options.duration / 1000).toFixed(0)} s, ${options.clients} client processes ` +
        `x ${options.concurrency} sessions at once (rerun with --seed ${seed})`,
    );
  }
  const report = await runSwarm(swarm);
  console.log(summarize(report, options));
  if (options.json) await Deno.writeTextFile(options.json, JSON.stringify(report, null, 2) + "\n");
  return report.passed ? 0 : 1;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
