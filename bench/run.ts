// bench: `deno task bench`, echosrv's benchmark. It starts each server as its own process on loopback (echosrv
// with its defaults on one worker, with its metrics endpoint on (scraped once a second, as Prometheus would), with
// the operations limits on, with the other copy strategy, and without the Tokio setting of issue 15; a Node.js
// `socket.pipe(socket)` baseline, the same code under Deno's `node:net`, a bare Deno read/write loop, and a C epoll
// server as the anchor), drives them with bench/loadgen.c, and runs every measurement in interleaved rounds (each
// round visits every server, in a rotated order) so that a noisy neighbour slows all servers alike. Three parts:
//   - throughput (bulk, ping-pong over 1 and 50 connections, new connections, memory per idle connection): tables of
//     medians with the min-max of the rounds and ratios; bench/results.json and bench/results.svg;
//   - latency under load (bench/load.ts): p50/p99/p999 at 50, 400 and 1000 connections after a warm-up, and the
//     first second, connection set-up included, apart; ratios against C; bench/results-latency.{json,svg};
//   - scaling: `--workers N` against the C server with N threads; bench/results-scaling.{json,svg}.
// On a machine with at least 4 cores the server and the load clients are pinned to separate cores (taskset).
// `--smoke` is the short run CI uses to check that all of it works (no thresholds); it writes to bench/out/smoke/.

import { fileURLToPath } from "node:url";
import { COPY_STRATEGIES } from "../lib/echo.ts";
import denoJson from "../deno.json" with { type: "json" };
import { type BenchResults, renderSvg, renderTable, type Sample, type ServerInfo, type TestId } from "./report.ts";
import {
  clientCpus,
  type LatencySample,
  measureLatency,
  mergeHistograms,
  MIN_CORES_TO_PIN,
  type Placement,
  placement,
  serverCpuList,
} from "./load.ts";
import {
  compactJson,
  curveOf,
  type LatencyResults,
  renderLatencySvg,
  renderLatencyTable,
  renderScalingSvg,
  renderScalingTable,
  type ScalingResults,
} from "./latency_report.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BENCH = fileURLToPath(new URL(".", import.meta.url));

/** The name of Deno's setting that issue 15 is about (read by Deno's runtime when it creates a Tokio runtime). */
export const IO_EVENTS_VARIABLE = "DENO_TOKIO_MAX_IO_EVENTS_PER_TICK";
/** Deno's own value of that setting (Tokio's default, which Deno keeps): what "without the setting" means. */
export const IO_EVENTS_DEFAULT = 1024;
/**
 * The value echosrv's rows run with when deno.json's start task does not set the variable itself (see
 * docs/latency-under-load.md for how it was chosen); when the task sets it, the task's value is used.
 */
export const IO_EVENTS_FALLBACK = 64;

/** The parts of the benchmark, as `--tests` names them. */
type Part = TestId | "latency" | "scaling";

/** How the run is shaped; `--smoke` shrinks everything. */
interface Plan {
  rounds: number;
  memoryRounds: number;
  seconds: number;
  warmup: number;
  idleConnections: number;
  tests: Part[];
  servers: string[] | undefined;
  extra: Array<{ id: string; command: string[] }>;
  /** Where the results go; undefined: bench/ (bench/out/smoke/ for a smoke run). */
  out: string | undefined;
  smoke: boolean;
  /** Latency under load: the connection counts, rounds, and the seconds of each phase. */
  latencyConns: number[];
  latencyRounds: number;
  latencySeconds: number;
  latencyWarmup: number;
  burst: number;
  /** Extra echosrv rows at these values of the Tokio setting (for choosing it). */
  ioEvents: number[];
  /** Worker counts of the scaling part (undefined: 1, 2, 4, ... as far as the machine allows). */
  scaleWorkers: number[] | undefined;
  scaleRounds: number;
  scaleConns: number;
  /** Pin the server and the clients to separate cores: "auto" when the machine has at least 4, or always, or never. */
  pin: boolean | "auto";
  /** Load processes per latency measurement (undefined: as many as the server's cores need). */
  clients: number | undefined;
  /** Take a latency measurement again (at most this many times) when other work disturbed it. */
  retries: number;
}

const ALL_TESTS: Part[] = ["bulk", "pp1", "pp50", "connect", "memory", "latency", "scaling"];

const USAGE = `usage: deno task bench [options]
  --rounds N           interleaved rounds of each throughput test (default 9)
  --memory-rounds N    fresh-server memory measurements per server (default 3)
  --seconds S          measured seconds per throughput test and server (default 1; plus a 0.5 s warm-up)
  --idle N             idle connections for the memory test (default 5000)
  --tests LIST         comma-separated subset of ${ALL_TESTS.join(",")}
  --servers LIST       comma-separated subset of server ids: c-epoll, node, deno-bare, deno-bare-set, deno-node,
                       echosrv, echosrv-no-setting, echosrv-metrics, echosrv-limits, echosrv-pipe, echosrv-ioN
                       (default: all)
  --extra ID=CMD       also benchmark another echo server (CMD prints "port N" once listening; PORT in CMD is 0)
  --latency-conns LIST connection counts of the latency test (default 50,400,1000)
  --latency-rounds N   interleaved rounds of the latency test (default 5)
  --latency-seconds S  measured seconds of each latency measurement (default 2; after the burst and the warm-up)
  --latency-warmup S   warm-up after the burst (default 1)
  --burst S            the first seconds, connection set-up included, reported apart (default 1)
  --io-events LIST     also measure echosrv with ${IO_EVENTS_VARIABLE} at each of these values (rows echosrv-ioN)
  --scale-workers LIST worker counts of the scaling test (default 1, 2, 4, ... up to the cores the clients leave)
  --scale-rounds N     interleaved rounds of the scaling test (default 3)
  --scale-conns N      connections of the scaling test (default 400)
  --clients N          load processes per latency measurement (default: enough for the server's cores)
  --no-pin             do not pin the server and the clients to separate cores (default: pin when 4+ cores)
  --pin                pin them even on a machine with 2 or 3 cores (to try the pinned set-up there)
  --retries N          take a latency measurement again up to N times when other work disturbed it (default 2)
  --out DIR            where the results go (default bench/; bench/out/smoke/ with --smoke)
  --smoke              a few seconds per part: every server and test once, briefly; checks it works, no thresholds
  --help               this text`;

function usage(): never {
  console.error(USAGE);
  Deno.exit(2);
}

function parsePlan(args: string[]): Plan {
  const plan: Plan = {
    // Many short rounds rather than a few long ones: a round's servers are measured close together in time, so a
    // burst of other work on a shared machine hits fewer of the pairs that the ratios are taken from.
    rounds: 9,
    memoryRounds: 3,
    seconds: 1,
    warmup: 0.5,
    idleConnections: 5000,
    tests: ALL_TESTS,
    servers: undefined,
    extra: [],
    out: undefined,
    smoke: false,
    latencyConns: [50, 400, 1000],
    latencyRounds: 5,
    latencySeconds: 2,
    latencyWarmup: 1,
    burst: 1,
    ioEvents: [],
    scaleWorkers: undefined,
    scaleRounds: 3,
    scaleConns: 400,
    pin: "auto",
    clients: undefined,
    retries: 2,
  };
  for (let i = 0; i < args.length; i++) {
    const value = () => args[++i] ?? usage();
    const count = () => {
      const n = Number(value());
      if (!Number.isFinite(n) || n < 0) usage();
      return n;
    };
    const counts = () =>
      value().split(",").map((t) => {
        const n = Number(t);
        if (!Number.isInteger(n) || n < 1) usage();
        return n;
      });
    switch (args[i]) {
      case "--help":
      case "-h":
        console.log(USAGE);
        Deno.exit(0);
        break;
      case "--rounds":
        plan.rounds = Math.max(1, count());
        break;
      case "--memory-rounds":
        plan.memoryRounds = count();
        break;
      case "--seconds":
        plan.seconds = count();
        break;
      case "--idle":
        plan.idleConnections = Math.max(1, count());
        break;
      case "--tests":
        plan.tests = value().split(",").map((t) => {
          if (!ALL_TESTS.includes(t as Part)) usage();
          return t as Part;
        });
        break;
      case "--servers":
        plan.servers = value().split(",");
        break;
      case "--extra": {
        const [id, ...command] = splitExtra(value());
        plan.extra.push({ id, command });
        break;
      }
      case "--latency-conns":
        plan.latencyConns = counts();
        break;
      case "--latency-rounds":
        plan.latencyRounds = Math.max(1, count());
        break;
      case "--latency-seconds":
        plan.latencySeconds = Math.max(0.1, count());
        break;
      case "--latency-warmup":
        plan.latencyWarmup = count();
        break;
      case "--burst":
        plan.burst = Math.max(0.1, count());
        break;
      case "--io-events":
        plan.ioEvents = counts();
        break;
      case "--scale-workers":
        plan.scaleWorkers = counts();
        break;
      case "--scale-rounds":
        plan.scaleRounds = Math.max(1, count());
        break;
      case "--scale-conns":
        plan.scaleConns = Math.max(1, count());
        break;
      case "--clients":
        plan.clients = Math.max(1, count());
        break;
      case "--no-pin":
        plan.pin = false;
        break;
      case "--pin":
        plan.pin = true;
        break;
      case "--retries":
        plan.retries = count();
        break;
      case "--out":
        plan.out = value();
        break;
      case "--smoke":
        Object.assign(plan, {
          smoke: true,
          rounds: 1,
          memoryRounds: 1,
          seconds: 0.25,
          warmup: 0.1,
          idleConnections: 200,
          latencyRounds: 1,
          latencySeconds: 0.25,
          latencyWarmup: 0.1,
          burst: 0.3,
          scaleRounds: 1,
          retries: 0,
        });
        break;
      default:
        usage();
    }
  }
  return plan;
}

function splitExtra(text: string): string[] {
  const cut = text.indexOf("=");
  if (cut <= 0) usage();
  return [text.slice(0, cut), ...text.slice(cut + 1).trim().split(/\s+/)];
}

// ---- tools: the C programs, built with cc ----

async function commandExists(name: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" }).output();
    return success;
  } catch {
    return false;
  }
}

/** Builds bench/NAME.c into bench/out/NAME (when the source is newer than the binary). */
async function buildC(name: string): Promise<string> {
  const source = `${BENCH}${name}.c`;
  const binary = `${BENCH}out/${name}`;
  await Deno.mkdir(`${BENCH}out`, { recursive: true });
  const newer = await Deno.stat(binary).then((b) => b.mtime! < Deno.statSync(source).mtime!, () => true);
  if (newer) {
    const out = await new Deno.Command("cc", { args: ["-O2", "-Wall", "-pthread", "-o", binary, source] }).output();
    if (!out.success) throw new Error(`cc failed on ${source}:\n${new TextDecoder().decode(out.stderr)}`);
  }
  return binary;
}

// ---- servers ----

/** A server under test, running. */
interface RunningServer {
  pid: number;
  port: number;
  /** The copy strategy an echosrv reported at startup (undefined for other servers). */
  copy?: string;
  /** The port of its /metrics, when it serves them (scraped until stopped). */
  metricsPort?: number;
  /** Set when the process has ended on its own: how, and its last lines of output. */
  exited?: string;
  stop(): Promise<void>;
}

interface ServerSpec extends ServerInfo {
  command: string[];
  /** The server serves Prometheus metrics (it logs their address); the bench scrapes them while it runs. */
  scrape?: boolean;
  /**
   * DENO_TOKIO_MAX_IO_EVENTS_PER_TICK in the server's environment; undefined: not set, so Deno's default (1024).
   * Whatever the bench's own environment holds is never passed on.
   */
  ioEvents?: number;
  /** Other variables of its environment (those a deno.json task sets before its command). */
  env?: Record<string, string>;
  /** The cores it is pinned to, from core 0, when the run pins (default 1). */
  cores?: number;
  /** The parts it takes part in (default: the throughput tests and the latency test). */
  parts?: Array<"throughput" | "latency">;
}

/**
 * The operations limits of the `echosrv-limits` row: every per-connection check on (access rules, the per-client
 * count, the byte limit, the age limit and its sweep), with values no measurement reaches (a 1 s bulk run echoes a
 * few GB; the memory test opens 5000 connections from one address), so they cost their checks and close nothing.
 */
const OPERATIONS_LIMITS = [
  "--allow",
  "127.0.0.0/8",
  "--allow",
  "::1/128",
  "--max-connections-per-ip",
  "100000",
  "--max-bytes-per-connection",
  "1TiB",
  "--max-connection-duration",
  "1h",
];

/** How often the bench reads /metrics from a server that serves them: Prometheus's usual interval is 1 s to 1 min. */
const SCRAPE_INTERVAL_MS = 1000;

/** What the scrapes of one server's /metrics came to over the whole run. */
interface ScrapeTally {
  ok: number;
  failed: number;
  lastError?: string;
}

/** Scrape tallies by server id (for results.json and the report). */
const scrapes: Record<string, ScrapeTally> = {};

/**
 * Reads `http://127.0.0.1:PORT/metrics` now and then every {@link SCRAPE_INTERVAL_MS}, as Prometheus would (one
 * keep-alive connection, a timeout, no overlapping scrapes), checking that each answer is the metrics text.
 *
 * @returns a function that stops the scraping (and waits for a scrape in flight)
 */
function startScraper(port: number, tally: ScrapeTally): () => Promise<void> {
  let inFlight: Promise<void> | undefined;
  const scrape = async () => {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
      const text = await response.text();
      if (response.status !== 200 || !/^echosrv_connections_accepted_total \d+$/m.test(text)) {
        throw new Error(`HTTP ${response.status}, ${text.length} bytes without echosrv_connections_accepted_total`);
      }
      tally.ok++;
    } catch (error) {
      tally.failed++;
      tally.lastError = String(error);
    } finally {
      inFlight = undefined;
    }
  };
  inFlight = scrape();
  const timer = setInterval(() => inFlight ??= scrape(), SCRAPE_INTERVAL_MS);
  return async () => {
    clearInterval(timer);
    await inFlight;
  };
}

/**
 * Starts a server with every file-descriptor limit raised to the hard limit (the memory test holds thousands of
 * connections), and waits for the line that names its port.
 */
async function startServer(spec: ServerSpec, where: Placement): Promise<RunningServer> {
  // The Tokio setting is exactly what the spec says: never inherited from the shell that runs the bench.
  const script = `unset ${IO_EVENTS_VARIABLE}; ` +
    `if [ -n "$BENCH_IO_EVENTS" ]; then export ${IO_EVENTS_VARIABLE}="$BENCH_IO_EVENTS"; fi; unset BENCH_IO_EVENTS; ` +
    'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"';
  const pin = where.pinned ? ["taskset", "-c", serverCpuList(spec.cores ?? 1)] : [];
  const child = new Deno.Command("sh", {
    args: ["-c", script, "sh", ...pin, ...spec.command],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { ...spec.env, NO_COLOR: "1", BENCH_IO_EVENTS: spec.ioEvents === undefined ? "" : `${spec.ioEvents}` },
  }).spawn();
  const output: string[] = [];
  let found: ((line: string) => void) | undefined;
  const portLine = new Promise<string>((resolve) => found = resolve);
  // echosrv logs "serving metrics on http://127.0.0.1:PORT/metrics ..." after its echo port.
  let foundMetrics: ((line: string) => void) | undefined;
  const metricsLine = new Promise<string>((resolve) => foundMetrics = resolve);
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of stream) {
      const lines = (partial + decoder.decode(chunk, { stream: true })).split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        if (output.length < 200) output.push(line);
        if (/\bport \d+/.test(line)) found?.(line);
        if (/serving metrics on http:\/\/\S+:\d+\/metrics/.test(line)) foundMetrics?.(line);
      }
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const line = await Promise.race([
    spec.scrape ? Promise.all([portLine, metricsLine]).then(([port]) => port) : portLine,
    child.status.then((s) => {
      throw new Error(`${spec.id} exited (${s.code}) before listening:\n${output.join("\n")}`);
    }),
    new Promise<never>((_, reject) =>
      timer = setTimeout(() => reject(new Error(`${spec.id} did not say its port within 20 s`)), 20_000)
    ),
  ]).finally(() => clearTimeout(timer));
  const port = Number(/\bport (\d+)/.exec(line)![1]);
  const copy = /\(copy (\w+)/.exec(line)?.[1];
  const metricsPort = spec.scrape ? Number(/:(\d+)\/metrics/.exec(await metricsLine)![1]) : undefined;
  const stopScraping = metricsPort ? startScraper(metricsPort, scrapes[spec.id] ??= { ok: 0, failed: 0 }) : undefined;
  const server: RunningServer = {
    pid: child.pid,
    port,
    copy,
    metricsPort,
    async stop() {
      await stopScraping?.();
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const killer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }, 5000);
      await child.status;
      clearTimeout(killer);
      await pumps;
    },
  };
  child.status.then((status) => {
    server.exited = `exit code ${status.code}${status.signal ? `, signal ${status.signal}` : ""}; last output:\n` +
      output.slice(-5).join("\n");
  });
  return server;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- one measurement ----

/** Arguments of loadgen for each throughput test. */
function loadArgs(test: TestId, port: number, seconds: number): string[] {
  switch (test) {
    case "bulk":
      return ["bulk", `${port}`, `${seconds}`];
    case "pp1":
      return ["pingpong", `${port}`, `${seconds}`, "1"];
    case "pp50":
      return ["pingpong", `${port}`, `${seconds}`, "50"];
    case "connect":
      return ["connect", `${port}`, `${seconds}`, "8"];
    default:
      throw new Error(`not a throughput test: ${test}`);
  }
}

/** loadgen's command line, pinned to `cpu` when there is one. */
function pinnedLoadgen(loadgen: string, args: string[], cpu: number | undefined): [string, string[]] {
  return cpu === undefined ? [loadgen, args] : ["taskset", ["-c", `${cpu}`, loadgen, ...args]];
}

/** Runs loadgen once against a server; loadgen also reads the server's CPU time over its measured window. */
async function measure(
  loadgen: string,
  plan: Plan,
  test: TestId,
  server: RunningServer,
  cpu: number | undefined,
): Promise<Sample> {
  const [command, args] = pinnedLoadgen(loadgen, loadArgs(test, server.port, plan.seconds), cpu);
  const out = await new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { LOADGEN_WARMUP: `${plan.warmup}`, LOADGEN_SERVER_PID: `${server.pid}` },
  }).output();
  return lastJsonLine(out, "loadgen");
}

/** The last line of a loadgen run as a sample; a run that printed none becomes a failed sample. */
function lastJsonLine(out: Deno.CommandOutput, what: string): Sample {
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  try {
    const sample = JSON.parse(lines[lines.length - 1]) as Sample;
    if (sample.ok && !out.success) {
      return { ok: false, error: new TextDecoder().decode(out.stderr).trim() || `${what} exited ${out.code}` };
    }
    if (sample.server_busy !== undefined && sample.server_busy < 0) delete sample.server_busy;
    if (sample.server_system !== undefined && sample.server_system < 0) delete sample.server_system;
    return sample;
  } catch {
    return { ok: false, error: `${what} exited ${out.code}: ${new TextDecoder().decode(out.stderr).trim()}` };
  }
}

/**
 * The memory test: a fresh server; loadgen reads its RSS, opens the idle connections (each echoes 64 bytes once),
 * waits a second, reads the RSS again, and holds the connections until its standard input closes.
 */
async function measureMemory(
  loadgen: string,
  plan: Plan,
  spec: ServerSpec,
  where: Placement,
  cpu: number | undefined,
): Promise<Sample> {
  const server = await startServer(spec, where);
  try {
    await sleep(plan.smoke ? 200 : 1000); // let start-up work (JIT, lazy module loading) settle first
    const [command, args] = pinnedLoadgen(
      loadgen,
      ["idle", `${server.port}`, `${plan.idleConnections}`, plan.smoke ? "0.2" : "1"],
      cpu,
    );
    const child = new Deno.Command(command, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { LOADGEN_SERVER_PID: `${server.pid}` },
    }).spawn();
    // loadgen prints its line once the measurement is taken, then waits for its standard input to close; the
    // connections must stay open until then, or the server would look cheaper than it is.
    const reader = child.stdout.getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await child.stdin.close();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const stderr = await new Response(child.stderr).text();
    const status = await child.status;
    return lastJsonLine(
      { stdout: new TextEncoder().encode(text), stderr: new TextEncoder().encode(stderr), ...status },
      "loadgen idle",
    );
  } finally {
    await server.stop();
  }
}

// ---- the machine ----

async function versionOf(command: string, args: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "null" }).output();
    return new TextDecoder().decode(out.stdout).split("\n")[0].trim() || undefined;
  } catch {
    return undefined;
  }
}

async function describeMachine(): Promise<BenchResults["machine"]> {
  // Through cat: Deno asks for --allow-all to read /proc directly.
  const cpuinfo = await new Deno.Command("cat", { args: ["/proc/cpuinfo"], stdout: "piped", stderr: "null" }).output()
    .then((out) => new TextDecoder().decode(out.stdout), () => "");
  const field = (name: string) => new RegExp(`^${name}\\s*: (.*)$`, "m").exec(cpuinfo)?.[1];
  const family = field("cpu family"), model = field("model");
  return {
    cpu: `${field("model name") ?? "unknown"}${family ? ` (family ${family}, model ${model})` : ""}`,
    cores: navigator.hardwareConcurrency,
    kernel: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    node: await versionOf("node", ["--version"]),
    cc: await versionOf("cc", ["--version"]),
    loadavgBefore: loadAverage(),
  };
}

/** This process's scheduling niceness (a run at a negative niceness was given priority over other work). */
async function niceness(): Promise<number | undefined> {
  const text = await versionOf("ps", ["-o", "ni=", "-p", `${Deno.pid}`]);
  const n = Number(text);
  return text === undefined || !Number.isFinite(n) ? undefined : n;
}

/**
 * This process's scheduling group and its niceness ("/autogroup-42 nice -10"): a run started as the README shows
 * (`setsid`, then `echo -10 > /proc/self/autogroup`) gets the CPU ahead of other sessions' work.
 */
async function autogroup(): Promise<string | undefined> {
  return await versionOf("cat", [`/proc/${Deno.pid}/autogroup`]);
}

/** The 1, 5 and 15 minute load averages: how busy the machine was around the run (other work shares it). */
function loadAverage(): string {
  return Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
}

// ---- the run ----

/**
 * deno.json's start task as the bench runs it: the words before `deno` that set variables (`VAR=value`, or after
 * `env`) become the environment, and the rest is the command line after `deno`.
 *
 * @param task the task's command line
 * @returns its environment and its arguments to `deno`
 * @throws {Error} when the task does not run `deno`
 */
export function readTask(task: string): { env: Record<string, string>; args: string[] } {
  const words = task.trim().split(/\s+/);
  const env: Record<string, string> = {};
  if (words[0] === "env") words.shift();
  while (words.length > 0 && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0])) {
    const word = words.shift()!;
    const cut = word.indexOf("=");
    env[word.slice(0, cut)] = word.slice(cut + 1).replace(/^(["'])(.*)\1$/, "$2");
  }
  if (words[0] !== "deno") throw new Error(`the task does not run deno: ${task}`);
  return { env, args: words.slice(1) };
}

/** How echosrv's rows start: the start task's command line and environment, and where the Tokio setting came from. */
interface EchosrvStart {
  args: string[];
  env: Record<string, string>;
  ioEvents: number;
  /** Where the value came from, for the report. */
  ioSource: string;
}

function echosrvStart(): EchosrvStart {
  const { env, args } = readTask(denoJson.tasks.start);
  const fromTask = env[IO_EVENTS_VARIABLE];
  delete env[IO_EVENTS_VARIABLE];
  if (fromTask !== undefined && /^\d+$/.test(fromTask)) {
    return { args, env, ioEvents: Number(fromTask), ioSource: "deno.json's start task" };
  }
  return {
    args,
    env,
    ioEvents: IO_EVENTS_FALLBACK,
    ioSource: `the benchmark (deno.json's start task does not set ${IO_EVENTS_VARIABLE})`,
  };
}

function echosrvCommand(start: EchosrvStart, args: string[]): string[] {
  // Exactly what `deno task start` runs (the task's own command line from deno.json), with this deno binary.
  return [Deno.execPath(), ...start.args, "--port", "0", "--host", "127.0.0.1", ...args];
}

/** Other work on the machine (in cores) above which a latency measurement is taken again. */
const DISTURBED_CORES = 0.25;

/**
 * One latency measurement, taken again (up to `plan.retries` times) while other work on the machine disturbed it;
 * the least disturbed one is kept, with the number of retries.
 */
async function latencySample(
  loadgen: string,
  plan: Plan,
  where: Placement,
  server: RunningServer,
  serverCores: number,
  conns: number,
): Promise<LatencySample> {
  let best: LatencySample | undefined;
  for (let attempt = 0; attempt <= plan.retries; attempt++) {
    const sample = await measureLatency({
      loadgen,
      port: server.port,
      serverPid: server.pid,
      conns,
      seconds: plan.latencySeconds,
      warmup: plan.latencyWarmup,
      burst: plan.burst,
      cpus: clientCpus(where, serverCores, conns, plan.clients),
    });
    // Let the server close the last measurement's connections before anything else is measured.
    await sleep(plan.smoke ? 50 : 300);
    if (!sample.ok) return sample;
    sample.retries = attempt;
    if (!best || (sample.others ?? 0) < (best.others ?? 0)) best = sample;
    if ((sample.others ?? 0) <= DISTURBED_CORES) break;
    if (attempt < plan.retries) {
      console.error(`    other work took ${sample.others!.toFixed(2)} cores during it: measuring again`);
    }
  }
  return best!;
}

function latencySummary(s: LatencySample): string {
  if (!s.ok) return `FAILED: ${s.error}`;
  const ms = (us: number) => (us / 1000).toFixed(us < 10_000 ? 2 : 0);
  const clients = s.client_busy.map((b) => `${Math.round(b * 100)}%`).join(" ");
  return `${Math.round(s.round_trips_per_s)} rt/s p50/p99/p999 ${ms(s.p50_us)}/${ms(s.p99_us)}/${ms(s.p999_us)} ms` +
    `${s.starved_conns ? `, ${s.starved_conns} starved` : ""}; first ${s.burst.seconds} s p99/p999/max ` +
    `${ms(s.burst.p99_us)}/${ms(s.burst.p999_us)}/${ms(s.burst.max_us)} ms (clients ${clients}, server ` +
    `${pct(s.server_busy)}, others ${pct(s.others)}${s.retries ? `, ${s.retries} retried` : ""})`;
}

/** The worker counts of the scaling part: 1, 2, 4, ... up to the cores the load clients leave (all when unpinned). */
export function scaleCounts(where: Placement): number[] {
  const top = where.pinned ? Math.floor(where.cores / 2) : where.cores;
  const counts: number[] = [];
  for (let n = 1; n <= top; n *= 2) counts.push(n);
  if (counts[counts.length - 1] !== top && top >= 1) counts.push(top);
  return counts;
}

/** Where the results go; a smoke run never writes over the committed results in bench/. */
async function outputFolder(plan: Plan): Promise<string> {
  const out = (plan.out ?? (plan.smoke ? `${BENCH}out/smoke/` : BENCH)).replace(/\/?$/, "/");
  await Deno.mkdir(out, { recursive: true });
  if (plan.smoke && (await Deno.realPath(out)) === (await Deno.realPath(BENCH))) {
    throw new Error("--smoke does not write to bench/, where the committed results are; give another --out");
  }
  return out;
}

async function main(): Promise<number> {
  const plan = parsePlan(Deno.args);
  if (Deno.build.os !== "linux") {
    console.error("bench: needs Linux (it reads /proc for CPU time and memory)");
    return 1;
  }
  if (!(await commandExists("cc"))) {
    console.error(
      "bench: needs a C compiler (cc) to build its load client, bench/loadgen.c; install one " +
        "(Debian: apt-get install gcc libc6-dev) and run again",
    );
    return 1;
  }
  let out: string;
  try {
    out = await outputFolder(plan);
  } catch (error) {
    console.error(`bench: ${(error as Error).message}`);
    return 2;
  }
  const where = placement(navigator.hardwareConcurrency, plan.pin, await commandExists("taskset"));
  console.error(
    where.pinned
      ? `bench: ${where.cores} cores: servers pinned from core 0, load clients on the cores after them (taskset)`
      : `bench: ${where.cores} cores: not pinned (${
        plan.pin === false ? "--no-pin" : `pinning needs taskset, and ${MIN_CORES_TO_PIN} cores or more without --pin`
      }); the clients share the cores with the server`,
  );
  const loadgen = await buildC("loadgen");
  const epoll = await buildC("epoll_echo");
  const start = echosrvStart();
  if (!start.ioSource.startsWith("deno.json")) {
    console.error(`bench: echosrv's rows get ${IO_EVENTS_VARIABLE}=${start.ioEvents} from ${start.ioSource}`);
  }
  const echosrv = (args: string[], ioEvents: number | undefined = start.ioEvents) => ({
    command: echosrvCommand(start, args),
    env: start.env,
    ioEvents,
  });
  const specs: ServerSpec[] = [{ id: "c-epoll", label: "C epoll, 1 thread", command: [epoll, "0"] }];
  if (await commandExists("node")) {
    specs.push({ id: "node", label: "Node.js socket.pipe", command: ["node", `${BENCH}node_echo.mjs`] });
  } else {
    console.error("bench: node not found; the Node.js baseline is left out");
  }
  // The same code as the Node.js row, under Deno's node:net (its own I/O scheduling, see the latency notes).
  specs.push({
    id: "deno-node",
    label: "node:net under Deno (same code)",
    command: [Deno.execPath(), "run", "--allow-net", `${BENCH}node_echo.mjs`],
    parts: ["latency"],
  });
  specs.push({
    id: "deno-bare",
    label: "Deno bare loop (reference)",
    command: [Deno.execPath(), "run", "--allow-net", `${BENCH}deno_bare_echo.ts`],
  });
  specs.push({
    id: "deno-bare-set",
    label: `Deno bare loop, ${IO_EVENTS_VARIABLE}=${start.ioEvents}`,
    command: [Deno.execPath(), "run", "--allow-net", `${BENCH}deno_bare_echo.ts`],
    ioEvents: start.ioEvents,
    parts: ["latency"],
  });
  specs.push({ id: "echosrv", label: "echosrv (defaults)", ...echosrv(["--workers", "1"]), echosrv: true });
  specs.push({
    id: "echosrv-no-setting",
    label: `echosrv without the setting (${IO_EVENTS_DEFAULT})`,
    ...echosrv(["--workers", "1"], IO_EVENTS_DEFAULT),
    parts: ["latency"],
  });
  for (const n of plan.ioEvents) {
    specs.push({
      id: `echosrv-io${n}`,
      label: `echosrv, ${IO_EVENTS_VARIABLE}=${n}`,
      ...echosrv(["--workers", "1"], n),
      parts: ["latency"],
    });
  }
  // The operations features' cost on the hot path (issue 5): each row is echosrv's defaults plus one set of them.
  specs.push({
    id: "echosrv-metrics",
    label: "echosrv --metrics (scraped 1/s)",
    ...echosrv(["--workers", "1", "--metrics", "127.0.0.1:0"]),
    scrape: true,
    feature: "--metrics 127.0.0.1:0, /metrics read once a second by the bench",
    parts: ["throughput"],
  });
  specs.push({
    id: "echosrv-limits",
    label: "echosrv --allow + limits",
    ...echosrv(["--workers", "1", ...OPERATIONS_LIMITS]),
    feature: OPERATIONS_LIMITS.join(" "),
    parts: ["throughput"],
  });
  for (const name of Object.keys(COPY_STRATEGIES)) {
    specs.push({
      id: `echosrv-${name}`,
      label: `echosrv --copy ${name}`,
      ...echosrv(["--workers", "1", "--copy", name]),
      parts: ["throughput"],
    });
  }
  for (const extra of plan.extra) specs.push({ id: extra.id, label: extra.id, command: extra.command });

  const throughputTests = plan.tests.filter((t): t is TestId => t !== "latency" && t !== "scaling");
  const inPart = (spec: ServerSpec, part: "throughput" | "latency") => (spec.parts ?? [part]).includes(part);
  const wanted = (spec: ServerSpec) =>
    (!plan.servers || plan.servers.includes(spec.id)) &&
    ((throughputTests.length > 0 && inPart(spec, "throughput")) ||
      (plan.tests.includes("latency") && inPart(spec, "latency")));
  // The defaults row tells which strategy is the default; that strategy's own row would be the same server twice.
  // One long-running instance of each server (an idle server costs the others nothing).
  const running = new Map<string, RunningServer>();
  try {
    for (const spec of specs) {
      if (wanted(spec) || spec.id === "echosrv") running.set(spec.id, await startServer(spec, where));
    }
  } catch (error) {
    for (const server of running.values()) await server.stop();
    throw error;
  }
  const defaultCopy = running.get("echosrv")!.copy;
  const duplicate = specs.find((s) => s.id === `echosrv-${defaultCopy}`);
  if (duplicate) {
    await running.get(duplicate.id)?.stop();
    running.delete(duplicate.id);
    specs.splice(specs.indexOf(duplicate), 1);
  }
  specs.find((s) => s.id === "echosrv")!.label = `echosrv (defaults: --copy ${defaultCopy}, --workers 1)`;
  const selected = specs.filter(wanted);
  if (!selected.some((s) => s.id === "echosrv")) {
    await running.get("echosrv")!.stop();
    running.delete("echosrv");
  }

  const machine = await describeMachine();
  const placementNote = where.pinned
    ? "server pinned to core 0 (N workers or threads: cores 0..N-1), each load process to a core of its own after them"
    : "not pinned: the load clients share the machine's cores with the server";
  const baseMethod = {
    nice: await niceness(),
    autogroup: await autogroup(),
    pinned: where.pinned,
    placement: placementNote,
    ioEvents: { value: start.ioEvents, source: start.ioSource },
  };
  const throughputServers = selected.filter((s) => inPart(s, "throughput"));
  const results: BenchResults = {
    date: new Date().toISOString(),
    machine,
    method: {
      rounds: plan.rounds,
      memoryRounds: plan.memoryRounds,
      seconds: plan.seconds,
      warmup: plan.warmup,
      idleConnections: plan.idleConnections,
      smoke: plan.smoke,
      client: "bench/loadgen.c: one process, one thread, epoll; every echoed byte verified",
      ...baseMethod,
      scrapeIntervalMs: SCRAPE_INTERVAL_MS,
    },
    servers: throughputServers.map(({ id, label, echosrv, feature }) => ({ id, label, echosrv, feature })),
    samples: {},
  };
  const record = (test: TestId, id: string, sample: Sample) => {
    ((results.samples[test] ??= {})[id] ??= []).push(sample);
    const shown = sample.ok ? "" : `  FAILED: ${sample.error}`;
    console.error(`  ${test.padEnd(7)} ${id.padEnd(18)} ${summarize(test, sample)}${shown}`);
  };
  /** The load client's core in the throughput tests: the first after the server's, when pinned. */
  const throughputCpu = (spec: ServerSpec) => where.pinned ? (spec.cores ?? 1) : undefined;

  let failures = 0;
  const restarts: Array<{ server: string; round: number; test: string; how: string }> = [];
  results.method.restarts = restarts;
  /** The running instance of a server, started again if something ended it (said, counted, and the run goes on). */
  const serverFor = async (spec: ServerSpec, round: number, test: string) => {
    const before = running.get(spec.id)!;
    if (before.exited) {
      console.error(`  ${spec.id} ended during the run (${before.exited}); starting it again`);
      restarts.push({ server: spec.id, round: round + 1, test, how: before.exited });
      running.set(spec.id, await startServer(spec, where));
    }
    return running.get(spec.id)!;
  };
  const latencyServers = selected.filter((s) => inPart(s, "latency"));
  const latency: LatencyResults = {
    date: results.date,
    machine,
    method: {
      rounds: plan.latencyRounds,
      seconds: plan.latencySeconds,
      warmup: plan.latencyWarmup,
      burst: plan.burst,
      smoke: plan.smoke,
      client: "bench/loadgen.c latency mode, as many processes as the server's cores need, started together; " +
        "every echoed byte verified",
      retries: plan.retries,
      disturbedCores: DISTURBED_CORES,
      ...baseMethod,
      restarts,
    },
    servers: latencyServers.map(({ id, label, echosrv, feature }) => ({ id, label, echosrv, feature })),
    conns: plan.latencyConns,
    samples: {},
    curves: {},
  };
  try {
    for (let round = 0; round < plan.rounds && throughputTests.length > 0; round++) {
      console.error(`round ${round + 1} of ${plan.rounds}`);
      for (const test of throughputTests.filter((t) => t !== "memory")) {
        for (const spec of rotate(throughputServers, round)) {
          const server = await serverFor(spec, round, test);
          const sample = await measure(loadgen, plan, test, server, throughputCpu(spec));
          if (!sample.ok) failures++;
          record(test, spec.id, sample);
        }
      }
    }
    if (plan.tests.includes("latency") && latencyServers.length > 0) {
      const pooled: Record<string, { steady: Array<Array<[number, number]>>; burst: Array<Array<[number, number]>> }> =
        {};
      for (let round = 0; round < plan.latencyRounds; round++) {
        console.error(`latency round ${round + 1} of ${plan.latencyRounds}`);
        for (const conns of plan.latencyConns) {
          for (const spec of rotate(latencyServers, round)) {
            const server = await serverFor(spec, round, `latency ${conns}`);
            const sample = await latencySample(loadgen, plan, where, server, spec.cores ?? 1, conns);
            console.error(`  ${`${conns} conns`.padEnd(10)} ${spec.id.padEnd(20)} ${latencySummary(sample)}`);
            if (!sample.ok) failures++;
            const pool = pooled[`${conns} ${spec.id}`] ??= { steady: [], burst: [] };
            if (sample.hist) pool.steady.push(sample.hist);
            if (sample.burstHist) pool.burst.push(sample.burstHist);
            delete sample.hist;
            delete sample.burstHist;
            ((latency.samples[conns] ??= {})[spec.id] ??= []).push(sample);
          }
        }
      }
      for (const conns of plan.latencyConns) {
        for (const spec of latencyServers) {
          const pool = pooled[`${conns} ${spec.id}`];
          if (!pool) continue;
          (latency.curves[conns] ??= {})[spec.id] = {
            steady: curveOf(mergeHistograms(pool.steady)),
            burst: curveOf(mergeHistograms(pool.burst)),
          };
        }
      }
    }
  } finally {
    for (const server of running.values()) await server.stop();
  }
  if (throughputTests.includes("memory")) {
    for (let round = 0; round < plan.memoryRounds; round++) {
      console.error(`memory round ${round + 1} of ${plan.memoryRounds} (${plan.idleConnections} idle connections)`);
      for (const spec of rotate(throughputServers, round)) {
        const sample = await measureMemory(loadgen, plan, spec, where, throughputCpu(spec));
        if (!sample.ok) failures++;
        record("memory", spec.id, sample);
      }
    }
  }

  let scaling: ScalingResults | undefined;
  if (plan.tests.includes("scaling")) {
    const counts = plan.scaleWorkers ?? scaleCounts(where);
    scaling = {
      date: new Date().toISOString(),
      machine,
      method: {
        rounds: plan.scaleRounds,
        conns: plan.scaleConns,
        seconds: plan.latencySeconds,
        warmup: plan.latencyWarmup,
        burst: plan.burst,
        smoke: plan.smoke,
        ...baseMethod,
      },
      workers: counts,
      samples: {},
    };
    const pairs = counts.map((n) =>
      [
        {
          id: `c-epoll-t${n}`,
          label: `C epoll, ${n} thread(s), SO_REUSEPORT`,
          command: [epoll, "0", "127.0.0.1", `${n}`],
          cores: n,
        },
        { id: `echosrv-w${n}`, label: `echosrv --workers ${n}`, ...echosrv(["--workers", `${n}`]), cores: n },
      ] as ServerSpec[]
    );
    const scaled = new Map<string, RunningServer>();
    try {
      for (const spec of pairs.flat()) scaled.set(spec.id, await startServer(spec, where));
      for (let round = 0; round < plan.scaleRounds; round++) {
        console.error(`scaling round ${round + 1} of ${plan.scaleRounds}`);
        for (const [i, n] of counts.entries()) {
          for (const spec of rotate(pairs[i], round)) {
            let server = scaled.get(spec.id)!;
            if (server.exited) {
              console.error(`  ${spec.id} ended during the run (${server.exited}); starting it again`);
              restarts.push({ server: spec.id, round: round + 1, test: "scaling", how: server.exited });
              scaled.set(spec.id, server = await startServer(spec, where));
            }
            const sample = await latencySample(loadgen, plan, where, server, n, plan.scaleConns);
            delete sample.hist;
            delete sample.burstHist;
            console.error(`  ${`N=${n}`.padEnd(10)} ${spec.id.padEnd(20)} ${latencySummary(sample)}`);
            if (!sample.ok) failures++;
            const kind = spec.id.startsWith("c-epoll") ? "c-epoll" : "echosrv";
            ((scaling.samples[n] ??= {})[kind] ??= []).push(sample);
          }
        }
      }
    } finally {
      for (const server of scaled.values()) await server.stop();
    }
  }

  results.machine.loadavgAfter = loadAverage();
  results.method.scrapes = scrapes;
  for (const [id, tally] of Object.entries(scrapes)) {
    if (tally.failed > 0) {
      failures++;
      console.error(
        `  ${id}: ${tally.failed} of ${tally.ok + tally.failed} scrapes of /metrics failed (${tally.lastError})`,
      );
    }
  }

  const written: string[] = [];
  const write = async (name: string, text: string) => {
    await Deno.writeTextFile(`${out}${name}`, text);
    written.push(`${out}${name}`);
  };
  if (throughputTests.length > 0 && throughputServers.length > 0) {
    console.log(renderTable(results));
    await write("results.json", JSON.stringify(results, null, 2) + "\n");
    await write("results.svg", renderSvg(results));
  }
  if (plan.tests.includes("latency") && latencyServers.length > 0) {
    console.log("");
    console.log(renderLatencyTable(latency));
    await write("results-latency.json", compactJson(latency));
    await write("results-latency.svg", renderLatencySvg(latency));
  }
  if (scaling) {
    console.log("");
    console.log(renderScalingTable(scaling));
    await write("results-scaling.json", compactJson(scaling));
    await write("results-scaling.svg", renderScalingSvg(scaling));
  }
  console.log(`wrote ${written.join(", ")}`);
  if (failures > 0) console.error(`bench: ${failures} measurement(s) failed (see above)`);
  return failures > 0 ? 1 : 0;
}

function rotate<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function summarize(test: TestId, s: Sample): string {
  if (!s.ok) return "";
  const rate = s.round_trips_per_s ?? s.connections_per_s;
  const perOp = rate && s.server_busy !== undefined
    ? `, ${(s.server_busy / rate * 1e6).toFixed(2)} server CPU us/op`
    : "";
  const others = s.machine_busy === undefined || s.machine_busy < 0
    ? ""
    : `, others ${pct(Math.max(0, s.machine_busy - (s.client_busy ?? 0) - (s.server_busy ?? 0)))}`;
  const busy = `client ${pct(s.client_busy)}, server ${pct(s.server_busy)}${others}${perOp}`;
  switch (test) {
    case "bulk":
      return `${(s.bytes_per_s! / 1e9).toFixed(2)} GB/s (${busy})`;
    case "pp1":
    case "pp50":
      return `${Math.round(s.round_trips_per_s!)} rt/s p50 ${s.p50_us} us p99 ${s.p99_us} us (${busy})`;
    case "connect":
      return `${Math.round(s.connections_per_s!)} conn/s (${busy})`;
    case "memory":
      return `${s.kib_per_conn!.toFixed(2)} KiB/conn (RSS ${s.rss_before_kib} -> ${s.rss_after_kib} KiB)`;
  }
}

function pct(x: number | undefined): string {
  return x === undefined || Number.isNaN(x) ? "?" : `${Math.round(x * 100)}%`;
}

if (import.meta.main) Deno.exit(await main());
