// bench: `deno task bench`, echosrv's benchmark. It starts each server as its own process on loopback (echosrv
// with its defaults, with its metrics endpoint on (scraped once a second, as Prometheus would), with the operations
// limits on, with each other copy strategy and with two workers, a Node.js `socket.pipe(socket)` baseline and, when
// a C compiler is present, a single-threaded C epoll server as the anchor), drives them with
// bench/loadgen.c in its own process, and runs every measurement in interleaved rounds (each round visits every
// server, in a rotated order) so that a noisy neighbour slows all servers alike. It prints a table of medians with
// the min-max of the rounds and the ratios the project's targets are stated in, and writes bench/results.json and
// bench/results.svg. `--smoke` is the short run CI uses to check that all of it works (no thresholds).

import { COPY_STRATEGIES } from "../lib/echo.ts";
import denoJson from "../deno.json" with { type: "json" };
import { type BenchResults, renderSvg, renderTable, type Sample, type ServerInfo, type TestId } from "./report.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BENCH = new URL(".", import.meta.url).pathname;

/** How the run is shaped; `--smoke` shrinks everything. */
interface Plan {
  rounds: number;
  memoryRounds: number;
  seconds: number;
  warmup: number;
  idleConnections: number;
  tests: TestId[];
  servers: string[] | undefined;
  extra: Array<{ id: string; command: string[] }>;
  out: string;
  smoke: boolean;
  workers: number;
}

const ALL_TESTS: TestId[] = ["bulk", "pp1", "pp50", "connect", "memory"];

function usage(): never {
  console.error(`usage: deno task bench [options]
  --rounds N         interleaved rounds of each throughput test (default 9)
  --memory-rounds N  fresh-server memory measurements per server (default 3)
  --seconds S        measured seconds per test and server (default 1; plus a 0.5 s warm-up)
  --idle N           idle connections for the memory test (default 5000)
  --tests LIST       comma-separated subset of ${ALL_TESTS.join(",")}
  --servers LIST     comma-separated subset of server ids: c-epoll, node, deno-bare, echosrv, echosrv-metrics,
                     echosrv-limits, echosrv-pipe, echosrv-wN (default: all)
  --extra ID=CMD     also benchmark another echo server (CMD prints "port N" once listening; PORT in CMD is 0)
  --workers N        the worker count of the multi-worker echosrv row (default 2; 0 = no such row)
  --out DIR          where results.json and results.svg go (default bench/)
  --smoke            a few seconds: every server and test once, briefly; checks it works, no thresholds`);
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
    out: BENCH,
    smoke: false,
    workers: 2,
  };
  for (let i = 0; i < args.length; i++) {
    const value = () => args[++i] ?? usage();
    const count = () => {
      const n = Number(value());
      if (!Number.isFinite(n) || n < 0) usage();
      return n;
    };
    switch (args[i]) {
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
          if (!ALL_TESTS.includes(t as TestId)) usage();
          return t as TestId;
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
      case "--workers":
        plan.workers = count();
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
    const out = await new Deno.Command("cc", { args: ["-O2", "-Wall", "-o", binary, source] }).output();
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
async function startServer(spec: ServerSpec): Promise<RunningServer> {
  const child = new Deno.Command("sh", {
    args: ["-c", 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', "sh", ...spec.command],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
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

/** Runs loadgen once against a server; loadgen also reads the server's CPU time over its measured window. */
async function measure(loadgen: string, plan: Plan, test: TestId, server: RunningServer): Promise<Sample> {
  const out = await new Deno.Command(loadgen, {
    args: loadArgs(test, server.port, plan.seconds),
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
async function measureMemory(loadgen: string, plan: Plan, spec: ServerSpec): Promise<Sample> {
  const server = await startServer(spec);
  try {
    await sleep(plan.smoke ? 200 : 1000); // let start-up work (JIT, lazy module loading) settle first
    const child = new Deno.Command(loadgen, {
      args: ["idle", `${server.port}`, `${plan.idleConnections}`, plan.smoke ? "0.2" : "1"],
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

function echosrvCommand(args: string[]): string[] {
  // Exactly what `deno task start` runs (the task's own command line from deno.json), with this deno binary.
  return [
    Deno.execPath(),
    ...denoJson.tasks.start.split(/\s+/).slice(1),
    "--port",
    "0",
    "--host",
    "127.0.0.1",
    ...args,
  ];
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
  const loadgen = await buildC("loadgen");
  const specs: ServerSpec[] = [
    { id: "c-epoll", label: "C epoll, 1 thread", command: [await buildC("epoll_echo"), "0"] },
  ];
  if (await commandExists("node")) {
    specs.push({ id: "node", label: "Node.js socket.pipe", command: ["node", `${BENCH}node_echo.mjs`] });
  } else {
    console.error("bench: node not found; the Node.js baseline is left out");
  }
  specs.push({
    id: "deno-bare",
    label: "Deno bare loop (reference)",
    command: [Deno.execPath(), "run", "--allow-net", `${BENCH}deno_bare_echo.ts`],
  });
  specs.push({ id: "echosrv", label: "echosrv (defaults)", command: echosrvCommand([]), echosrv: true });
  // The operations features' cost on the hot path (issue 5): each row is echosrv's defaults plus one set of them.
  specs.push({
    id: "echosrv-metrics",
    label: "echosrv --metrics (scraped 1/s)",
    command: echosrvCommand(["--metrics", "127.0.0.1:0"]),
    scrape: true,
    feature: "--metrics 127.0.0.1:0, /metrics read once a second by the bench",
  });
  specs.push({
    id: "echosrv-limits",
    label: "echosrv --allow + limits",
    command: echosrvCommand(OPERATIONS_LIMITS),
    feature: OPERATIONS_LIMITS.join(" "),
  });
  for (const name of Object.keys(COPY_STRATEGIES)) {
    specs.push({ id: `echosrv-${name}`, label: `echosrv --copy ${name}`, command: echosrvCommand(["--copy", name]) });
  }
  if (plan.workers > 1) {
    specs.push({
      id: `echosrv-w${plan.workers}`,
      label: `echosrv --workers ${plan.workers}`,
      command: echosrvCommand(["--workers", `${plan.workers}`]),
    });
  }
  for (const extra of plan.extra) specs.push({ id: extra.id, label: extra.id, command: extra.command });

  // One long-running instance of each server for the throughput tests (an idle server costs the others nothing).
  const running = new Map<string, RunningServer>();
  try {
    for (const spec of specs) running.set(spec.id, await startServer(spec));
  } catch (error) {
    for (const server of running.values()) await server.stop();
    throw error;
  }
  // The defaults row tells which strategy is the default; that strategy's own row would be the same server twice.
  const defaultCopy = running.get("echosrv")!.copy;
  const duplicate = specs.find((s) => s.id === `echosrv-${defaultCopy}`);
  if (duplicate) {
    await running.get(duplicate.id)!.stop();
    running.delete(duplicate.id);
    specs.splice(specs.indexOf(duplicate), 1);
  }
  specs.find((s) => s.id === "echosrv")!.label = `echosrv (defaults: --copy ${defaultCopy})`;
  const selected = specs.filter((s) => !plan.servers || plan.servers.includes(s.id));
  for (const spec of specs) {
    if (!selected.includes(spec)) {
      await running.get(spec.id)?.stop();
      running.delete(spec.id);
    }
  }

  const machine = await describeMachine();
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
      nice: await niceness(),
      autogroup: await autogroup(),
      scrapeIntervalMs: SCRAPE_INTERVAL_MS,
    },
    servers: selected.map(({ id, label, echosrv, feature }) => ({ id, label, echosrv, feature })),
    samples: {},
  };
  const record = (test: TestId, id: string, sample: Sample) => {
    ((results.samples[test] ??= {})[id] ??= []).push(sample);
    const shown = sample.ok ? "" : `  FAILED: ${sample.error}`;
    console.error(`  ${test.padEnd(7)} ${id.padEnd(18)} ${summarize(test, sample)}${shown}`);
  };

  let failures = 0;
  const restarts: Array<{ server: string; round: number; test: TestId; how: string }> = [];
  results.method.restarts = restarts;
  try {
    const throughputTests = plan.tests.filter((t) => t !== "memory");
    for (let round = 0; round < plan.rounds && throughputTests.length > 0; round++) {
      console.error(`round ${round + 1} of ${plan.rounds}`);
      for (const test of throughputTests) {
        for (const spec of rotate(selected, round)) {
          // On a shared machine something else may end a server (or it may crash): say so, count it, go on.
          const before = running.get(spec.id)!;
          if (before.exited) {
            console.error(`  ${spec.id} ended during the run (${before.exited}); starting it again`);
            restarts.push({ server: spec.id, round: round + 1, test, how: before.exited });
            running.set(spec.id, await startServer(spec));
          }
          const sample = await measure(loadgen, plan, test, running.get(spec.id)!);
          if (!sample.ok) failures++;
          record(test, spec.id, sample);
        }
      }
    }
  } finally {
    for (const server of running.values()) await server.stop();
  }
  if (plan.tests.includes("memory")) {
    for (let round = 0; round < plan.memoryRounds; round++) {
      console.error(`memory round ${round + 1} of ${plan.memoryRounds} (${plan.idleConnections} idle connections)`);
      for (const spec of rotate(selected, round)) {
        const sample = await measureMemory(loadgen, plan, spec);
        if (!sample.ok) failures++;
        record("memory", spec.id, sample);
      }
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

  console.log(renderTable(results));
  await Deno.mkdir(plan.out, { recursive: true });
  const json = `${plan.out.replace(/\/?$/, "/")}results.json`;
  const svg = `${plan.out.replace(/\/?$/, "/")}results.svg`;
  await Deno.writeTextFile(json, JSON.stringify(results, null, 2) + "\n");
  await Deno.writeTextFile(svg, renderSvg(results));
  console.log(`wrote ${json} and ${svg}`);
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
