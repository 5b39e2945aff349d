// swarm: the stress run's orchestrator. It starts echosrv as a process the way `deno task start` does, starts the
// client processes (stress/client.ts), watches the server while they run (memory, descriptors, that it is still
// alive), optionally stops it under load, and judges the run against the invariants: every completed session
// byte-exact, no session hung, the server never exited, its memory stayed within the stated bound without
// growing, its descriptors came back to baseline, its log holds no unexpected warning or error.
//
// The swarmed server runs with a long idle timeout, as in production: a client starved by a busy machine drains
// its echo slowly, and echosrv sees a byte move only when the kernel takes it, so with a short timeout a slow but
// live reader gets cut (measured: over 10 s between writes at load 7 on 2 cores). The idle kinds get a second
// echosrv of their own with a shorter idle timeout (10 s) and a short send timeout (3 s), so both timeouts are
// checked on every run; the byte-limit kinds a third, with a byte limit (256 KiB), and the age-limit kind a fourth,
// with an age limit (10 s): each side server has the one limit that can end its kinds' sessions (the two timeouts
// never meet: one watches a connection with nothing to send, the other one whose echo is blocked). The side servers
// log every connection's close (`--log-level debug`), as does the swarmed server when it is stopped under load, and
// every close the server started is held against its line (stress/closes.ts): the client must have read exactly
// what the server counted as echoed, then the end of stream, for the reason planned.

import { descriptorCount, openDescriptors, residentKiB } from "../support/process_info.ts";
import { type LogLine, ROOT, spawnServer } from "../support/server_process.ts";
import { type ClientConfig, type ClientMessage, emptyStats, type KindStats } from "./client.ts";
import { type CheckVerdict, ClosingLog, describeClosing, judgeClose } from "./closes.ts";
import { KINDS, type PlanLimits, type SessionPlan, SLOW_BYTES_PER_MS } from "./kinds.ts";
import type { ConnRecord, Ending, Target, Transport } from "./session.ts";
import { formatDuration } from "../lib/units.ts";

/** Everything a run needs. */
export interface SwarmOptions {
  seed: number;
  /** No session starts after this long. */
  durationMs: number;
  /** Client processes. */
  clients: number;
  /** Sessions at once in each client process. */
  concurrency: number;
  weights: Record<string, number>;
  /**
   * What plans respect, and the side servers' settings: the idle kinds' server's idle timeout is
   * `limits.idleTimeoutMs` and its send timeout `limits.sendTimeoutMs`; the byte-limit server's limit is
   * `limits.byteLimit`, the age-limit server's `limits.ageLimitMs`.
   */
  limits: PlanLimits;
  /** The swarmed server's idle timeout (long: a slow but live reader must not look idle). */
  serverIdleTimeoutMs: number;
  /** The server's grace period on stop (`--shutdown-timeout`). */
  shutdownTimeoutMs: number;
  /** Extra echosrv arguments (for example `--copy pipe`, `--workers 2`). */
  serverArgs: string[];
  /** How the clients connect: TLS or a PROXY header first, when the server arguments ask for them. */
  transport?: Transport;
  /** Stop the server this long into the run, while the swarm runs. */
  stopAfterMs?: number;
  /** How to start and stop the swarmed server: SIGTERM by default; the Windows service's STOP (stress/service_stop.ts). */
  stopper?: Stopper;
  /** Run this one session only, and describe it. */
  replay?: number;
  /** Swarm an echo server that is already running instead of starting one (no server-side checks then). */
  connect?: Target;
  /** RSS allowed after warm-up, in KiB; default: the warm-up peak plus half of it plus 32 MiB. */
  rssLimitKiB?: number;
  /** How long the memory is let settle before it is held to the bound. */
  warmupMs?: number;
  /** Progress lines (every 10 s) and notes. */
  progress: (line: string) => void;
  /** How the replay command line of a failure is written (its non-default options). */
  replayCommand: (n: number) => string;
}

/** The echosrv a run swarms, however it was started; tests/helpers.ts's ServerProcess is one. */
export interface SwarmServer extends AsyncDisposable {
  readonly pid: number;
  /** The echo port. */
  readonly port: number;
  /** Its JSON log lines so far. */
  readonly lines: string[];
  /** Its standard error so far. */
  readonly stderr: string;
  /** Waits (bounded) for the exit; resolves with the exit code. */
  exited(ms?: number): Promise<number>;
  signal(signal: Deno.Signal): void;
}

/**
 * A way to start the swarmed server and ask it to stop, by name in the report: SIGTERM (as `kill` and systemd
 * do) by default; the Windows service manager's STOP through the fake SCM (stress/service_stop.ts).
 */
export interface Stopper {
  name: string;
  /** Starts echosrv with these arguments; by default as `deno task start` does, its JSON log on standard output. */
  launch?(args: string[]): Promise<SwarmServer>;
  /** Asks it to stop (gracefully). */
  stop(server: SwarmServer): void | Promise<void>;
  /** Once it has exited: what this way of stopping promises besides the exit code (a line, and any violations). */
  judge?(server: SwarmServer): Promise<{ summary: string; violations: string[] }>;
}

/** Stop with SIGTERM, as `kill` and systemd do. */
export const SIGTERM_STOPPER: Stopper = { name: "SIGTERM", stop: (server) => server.signal("SIGTERM") };

/** A failure, as reported. */
export interface FailureReport {
  client: number;
  n: number;
  kind: string;
  ending: Ending;
  detail: string;
  plan: SessionPlan;
  replay: string;
  /** The connection it ended on, and the server's closing line for it when that server logs them. */
  record?: ConnRecord;
  server?: string;
}

/** Closes checked against a server's log, for one kind (or the stop's cuts). */
export interface CloseStats {
  checked: number;
  /** By verdict (stress/closes.ts): exact, late write, never served, violation. */
  verdicts: Partial<Record<CheckVerdict, number>>;
  /** By the reason in the server's line. */
  reasons: Record<string, number>;
  /** Bytes the clients read back on these connections, every one counted by the server and verified. */
  bytes: number;
}

/** One memory window after warm-up. */
export interface MemoryWindow {
  fromS: number;
  toS: number;
  medianKiB: number;
  maxKiB: number;
}

/** What the memory did. */
export interface MemoryReport {
  startKiB: number;
  warmupMs: number;
  warmupPeakKiB: number;
  peakKiB: number;
  boundKiB: number;
  boundHeld: boolean;
  windows: MemoryWindow[];
  /** Growth that persists: the median change between consecutive windows, times the number of changes. */
  growthKiB: number;
  growthAllowedKiB: number;
  growthHeld: boolean;
  /** Median of the last window minus that of the first (the heap's own sizing included). */
  growthFirstToLastKiB: number;
  samples: number;
  /** Every sample after the start: seconds into the run and RSS in KiB (for plots and second opinions). */
  series: Array<[number, number]>;
}

/** What a stop under load did. */
export interface StopReport {
  how: string;
  graceMs: number;
  /** From the signal to the process's exit (-1 if it did not exit). */
  exitedAfterMs: number;
  exitCode: number | null;
  /** Sessions that ended as planned (byte-exact) after the signal: the grace period let them finish. */
  okAfterSignal: number;
  cut: number;
  refused: number;
  /** Connections the server closed when the grace period ran out (its "closing N connection(s)" lines). */
  closedAtGraceEnd: number;
}

/** The outcome of a run. */
export interface SwarmReport {
  passed: boolean;
  violations: string[];
  seed: number;
  elapsedMs: number;
  clients: number;
  concurrency: number;
  kinds: Record<string, KindStats>;
  total: KindStats;
  failures: FailureReport[];
  /** Most connections the server held at once (its descriptors above the baseline), sampled; -1 if not watched. */
  peakConnections: number;
  /** Summed peaks of the client processes (an upper bound of what was open at once). */
  clientPeakConnections: number;
  memory?: MemoryReport;
  descriptors?: { baseline: number; peak: number; after: number; backToBaseline: boolean };
  log?: { lines: number; unexpected: string[] };
  /** The swarmed server's closing summary: connections, bytes, and those closed by its idle timeout. */
  server?: { exitCode: number | null; accepted?: number; bytesEchoed?: number; closedIdle?: number; workers?: number };
  /** The idle kinds' server (absent when the run has one server: a stop under load, or --connect). */
  idleServer?: SideServerReport;
  /** The byte-limit server (absent when the run has one server, or no kind uses it). */
  bytesServer?: SideServerReport;
  /** The age-limit server (absent when the run has one server, or no kind uses it). */
  ageServer?: SideServerReport;
  /**
   * Connections whose close was held against the server's closing line, by kind ("stop cuts" for sessions a stop
   * cut): what the clients read, how it ended, and the reason the server gave.
   */
  closes?: Record<string, CloseStats>;
  /** A replay's close checks, one line each. */
  closeNotes?: string[];
  /**
   * Sessions cut by a reset that answered their own write to a socket the server had closed as planned, after
   * they had been quiet longer than a lingering close waits (or after a stop's): the linger's bound, not a loss
   * by the server. Counted as cut, not failed; one line each.
   */
  lateWrites?: string[];
  stop?: StopReport;
  /** What the way of stopping checked besides the exit (the Windows service's states), when it checks anything. */
  stopCheck?: string;
  replay?: Extract<ClientMessage, { type: "replay" }>;
}

/** A side server's exit and closing summary (its counters by close reason). */
export interface SideServerReport {
  exitCode: number | null;
  accepted?: number;
  closedIdle?: number;
  closedSendTimeout?: number;
  closedMaxBytes?: number;
  closedMaxDuration?: number;
  /** Closing lines in its log (one per connection served). */
  closingLines: number;
  unexpected: string[];
}

/** Memory and descriptor sampling period. */
const SAMPLE_MS = 500;
/** How long the descriptors may take to come back after the last client left. */
const DESCRIPTORS_SETTLE_MS = 30_000;
/** Generous hang guard on top of every bounded wait (a busy machine is slow, not stuck). */
const HANG_GUARD_MS = 30_000;
/** Clock grain allowed when comparing a client's timestamps with the signal's. */
const CLOCK_SLACK_MS = 100;

/** One client process and what it reported. */
class ClientProcess {
  stats: Record<string, KindStats> = {};
  peakConnections = 0;
  okTimes: number[] = [];
  done = false;
  stderr = "";
  readonly status: Promise<Deno.CommandStatus>;
  readonly #child: Deno.ChildProcess;
  readonly #pumped: Promise<void>;

  constructor(config: ClientConfig, onMessage: (message: ClientMessage) => void) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-run=python3", `${ROOT}stress/client.ts`, JSON.stringify(config)],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const lines = async () => {
      let partial = "";
      for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
        const parts = (partial + chunk).split("\n");
        partial = parts.pop()!;
        for (const line of parts) if (line.trim() !== "") this.#take(line, onMessage);
      }
      if (partial.trim() !== "") this.#take(partial, onMessage);
    };
    const errors = async () => {
      for await (const chunk of this.#child.stderr.pipeThrough(new TextDecoderStream())) this.stderr += chunk;
    };
    this.#pumped = Promise.all([lines(), errors()]).then(() => {});
    this.status = this.#child.status;
  }

  #take(line: string, onMessage: (message: ClientMessage) => void): void {
    let message: ClientMessage;
    try {
      message = JSON.parse(line);
    } catch {
      this.stderr += `(not JSON on standard output) ${line}\n`;
      return;
    }
    if (message.type === "progress" || message.type === "done") {
      this.stats = message.stats;
      this.peakConnections = message.peakConnections;
      if (message.type === "done") {
        this.done = true;
        this.okTimes = message.okTimes ?? [];
      }
    }
    onMessage(message);
  }

  /** Waits for exit and all output; kills the process if `ms` pass first. Returns false on a kill. */
  async finish(ms: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#pumped.then(() => this.status).then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
    ]);
    clearTimeout(timer);
    if (!exited) this.kill();
    await this.#pumped;
    await this.status;
    return exited;
  }

  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // gone already
    }
  }
}

/** The server process under watch: memory and descriptor samples, and its exit. */
class ServerWatch {
  readonly rss: Array<{ t: number; kiB: number }> = [];
  readonly startKiB: number;
  readonly baselineFds: number;
  peakFds: number;
  lastFds: number;
  lastKiB = 0;
  /** The exit code once it has exited. */
  exitCode: number | null = null;
  /** Resolves with the exit code (or null if it could not be read). */
  readonly exit: Promise<number | null>;
  #signalPerf: number | undefined;
  /** From the stop signal to the exit. */
  exitedAfterMs: number | undefined;
  /** Set when it exited without being asked to (already a violation). */
  exitedUnasked = false;

  constructor(readonly server: SwarmServer) {
    this.startKiB = residentKiB(server.pid) ?? 0;
    this.baselineFds = descriptorCount(server.pid) ?? 0;
    this.peakFds = this.lastFds = this.baselineFds;
    this.exit = server.exited(2 ** 31 - 1).then((code) => {
      this.exitCode = code;
      if (this.#signalPerf !== undefined) this.exitedAfterMs = Math.round(performance.now() - this.#signalPerf);
      return code;
    }, () => null);
  }

  get exited(): boolean {
    return this.exitCode !== null;
  }

  /** Takes one sample; memory samples are kept only while `keepMemory` (sessions still starting, no stop yet). */
  sample(t: number, keepMemory: boolean): void {
    const kiB = residentKiB(this.server.pid);
    if (kiB !== undefined) {
      this.lastKiB = kiB;
      if (keepMemory) this.rss.push({ t, kiB });
    }
    const fds = descriptorCount(this.server.pid);
    if (fds !== undefined) {
      this.lastFds = fds;
      if (fds > this.peakFds) this.peakFds = fds;
    }
  }

  stop(stopper: Stopper): void {
    this.#signalPerf = performance.now();
    Promise.resolve(stopper.stop(this.server)).catch((error) => this.stopFailure = String(error));
  }

  /** Set when asking the server to stop failed. */
  stopFailure: string | undefined;

  /** Waits (bounded) for the descriptors to come back to the baseline. */
  async descriptorsSettled(): Promise<NonNullable<SwarmReport["descriptors"]>> {
    const pid = this.server.pid;
    let after = descriptorCount(pid) ?? this.baselineFds;
    for (const until = performance.now() + DESCRIPTORS_SETTLE_MS; after > this.baselineFds;) {
      if (performance.now() >= until) break;
      await sleep(100);
      after = descriptorCount(pid) ?? this.baselineFds;
    }
    return { baseline: this.baselineFds, peak: this.peakFds, after, backToBaseline: after <= this.baselineFds };
  }
}

function sumStats(all: Array<Record<string, KindStats>>): { kinds: Record<string, KindStats>; total: KindStats } {
  const kinds: Record<string, KindStats> = Object.fromEntries(Object.keys(KINDS).map((k) => [k, emptyStats()]));
  const total = emptyStats();
  for (const stats of all) {
    for (const [name, s] of Object.entries(stats)) {
      for (const into of [kinds[name] ??= emptyStats(), total]) {
        for (const key of Object.keys(s) as Array<keyof KindStats>) {
          into[key] = key === "lastOkAt" ? Math.max(into[key], s[key]) : into[key] + s[key];
        }
      }
    }
  }
  return { kinds, total };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

/** The longest any session of this run may legitimately take (its deadline at the largest plan), plus slack. */
function longestSessionMs(limits: PlanLimits): number {
  const bytes = Math.max(limits.maxSize, 48 * 1024 * 1024);
  return limits.baseDeadlineMs + bytes / SLOW_BYTES_PER_MS +
    Math.max(limits.idleTimeoutMs * 2, limits.ageLimitMs + 2000, limits.sendTimeoutMs * 2) + 20_000;
}

/**
 * Starts an echosrv for the swarm, as `deno task start` does, on loopback and a free port. `after` comes after the
 * user's echosrv arguments (what the run's checks need, such as the per-connection log lines).
 */
function startServer(
  options: SwarmOptions,
  idleTimeoutMs: number,
  launch: (args: string[]) => Promise<SwarmServer> = spawnServer,
  after: string[] = [],
): Promise<SwarmServer> {
  return launch([
    "--port",
    "0",
    "-H",
    "127.0.0.1",
    "--idle-timeout",
    formatDuration(idleTimeoutMs),
    "--shutdown-timeout",
    formatDuration(options.shutdownTimeoutMs),
    ...options.serverArgs,
    ...after,
  ]);
}

/** The per-connection log lines, whose closing lines the close checks read. */
const CONNECTION_LINES = ["--log-level", "debug"];

/** Whether any kind with weight in this run connects to `target`. */
function targetUsed(options: SwarmOptions, target: string): boolean {
  return Object.entries(KINDS).some(([name, kind]) => kind.target === target && (options.weights[name] ?? 0) > 0);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Memory after warm-up: the peak under the bound, and no growth that persists from window to window. RSS on a busy
 * run is a staircase: V8 sizes its heap in a step or two, at no fixed time (traced with --trace-gc: the live heap
 * stays at 6.5 MB while the committed heap steps from 34 to 56 MB), then stays flat. A leak instead grows in every
 * window. So the growth judged is the median change between consecutive windows (their medians, so no single GC
 * decides), times the number of changes: steps do not count, a steady climb does.
 */
function judgeMemory(watch: ServerWatch, options: SwarmOptions, violations: string[]): MemoryReport | undefined {
  const warmupMs = options.warmupMs ?? Math.max(5_000, Math.min(60_000, options.durationMs * 0.2));
  const settled = watch.rss.filter((s) => s.t >= warmupMs);
  if (settled.length < 4) return undefined;
  const warmupPeakKiB = Math.max(watch.startKiB, ...watch.rss.filter((s) => s.t < warmupMs).map((s) => s.kiB));
  const boundKiB = options.rssLimitKiB ?? Math.round(warmupPeakKiB * 1.5 + 32 * 1024);
  const peakKiB = Math.max(...settled.map((s) => s.kiB));
  const first = settled[0].t;
  const span = settled[settled.length - 1].t - first;
  // At least five windows, so a heap step or two is outvoted in the median change, however short the run.
  const count = Math.min(10, Math.max(5, Math.round(span / 30_000)));
  const windows: MemoryWindow[] = [];
  for (let i = 0; i < count; i++) {
    const from = first + (span * i) / count;
    const to = first + (span * (i + 1)) / count;
    const inside = settled.filter((s) => s.t >= from && (i === count - 1 ? s.t <= to : s.t < to)).map((s) => s.kiB);
    if (inside.length > 0) {
      windows.push({
        fromS: Math.round(from / 1000),
        toS: Math.round(to / 1000),
        medianKiB: median(inside),
        maxKiB: Math.max(...inside),
      });
    }
  }
  const last = windows[windows.length - 1];
  const changes = windows.slice(1).map((w, i) => w.medianKiB - windows[i].medianKiB);
  const sortedChanges = [...changes].sort((a, b) => a - b);
  const steadyChange = sortedChanges[Math.floor((sortedChanges.length - 1) / 2)] ?? 0; // the lower median
  const growthKiB = steadyChange * changes.length;
  const growthAllowedKiB = Math.round(Math.max(16 * 1024, windows[0].medianKiB * 0.1));
  const memory: MemoryReport = {
    startKiB: watch.startKiB,
    warmupMs,
    warmupPeakKiB,
    peakKiB,
    boundKiB,
    boundHeld: peakKiB <= boundKiB,
    windows,
    growthKiB,
    growthAllowedKiB,
    growthHeld: growthKiB <= growthAllowedKiB,
    growthFirstToLastKiB: last.medianKiB - windows[0].medianKiB,
    samples: watch.rss.length,
    series: watch.rss.map((s) => [Math.round(s.t / 100) / 10, s.kiB]),
  };
  if (!memory.boundHeld) {
    violations.push(`server RSS reached ${formatKiB(peakKiB)} after warm-up, over the bound of ${formatKiB(boundKiB)}`);
  }
  if (!memory.growthHeld) {
    violations.push(
      `server RSS kept growing: ${formatKiB(growthKiB)} of steady growth across ${windows.length} windows ` +
        `(median change per window times the changes; allowed ${formatKiB(growthAllowedKiB)})`,
    );
  }
  return memory;
}

/** The log: JSON lines only, and no warning or error (the swarm never hits a limit on purpose). */
function judgeLog(
  server: SwarmServer,
  violations: string[],
  what = "the server's log",
): { records: LogLine[]; unexpected: string[] } {
  const unexpected: string[] = [];
  const records: LogLine[] = [];
  for (const line of server.lines) {
    try {
      const record = JSON.parse(line) as LogLine;
      records.push(record);
      if (record.level !== "INFO" && record.level !== "DEBUG") unexpected.push(`${record.level} ${record.message}`);
    } catch {
      unexpected.push(`not JSON: ${line}`);
    }
  }
  if (server.stderr.trim() !== "") unexpected.push(`standard error: ${server.stderr.trim().slice(-2000)}`);
  if (unexpected.length > 0) violations.push(`unexpected lines in ${what}:\n    ${unexpected.join("\n    ")}`);
  return { records, unexpected };
}

/**
 * Stop under load: refusals and cuts only after the signal; a cut of a connection that already had echo back only
 * once the grace period was over (the server may close what remains then, not before). Timestamps are compared
 * in the safe direction: load can only make the client see things later.
 */
function judgeStop(
  events: Array<Extract<ClientMessage, { type: "stopped" }>>,
  signalAt: number,
  graceMs: number,
  violations: string[],
): void {
  const graceEnd = signalAt + graceMs;
  for (const event of events) {
    if (event.at < signalAt - CLOCK_SLACK_MS) {
      violations.push(`session ${event.n} (${event.kind}) was ${event.ending} before the stop signal`);
    } else if (event.ending === "cut" && event.received > 0 && event.at < graceEnd - CLOCK_SLACK_MS) {
      violations.push(
        `session ${event.n} (${event.kind}) was cut ${event.at - signalAt} ms after the stop signal, inside the ` +
          `${graceMs} ms grace period (${event.detail})`,
      );
    }
  }
}

/**
 * Runs the swarm against a fresh echosrv (or `options.connect`) and judges it.
 *
 * @param options what to run
 * @returns the report; `passed` is false on any violation
 */
export async function runSwarm(options: SwarmOptions): Promise<SwarmReport> {
  const violations: string[] = [];
  const failures: FailureReport[] = [];
  const stopEvents: Array<Extract<ClientMessage, { type: "stopped" }>> = [];
  const checks: Array<Extract<ClientMessage, { type: "check" }>> = [];
  let replayResult: Extract<ClientMessage, { type: "replay" }> | undefined;
  const stopper = options.stopper ?? SIGTERM_STOPPER;

  // One server when it is being stopped (the stop is what is under test) or is not ours; else a second one for
  // the idle kinds and the send timeout, a third for the byte limit and a fourth for the age limit when a kind uses
  // them. A stopped server logs its connections, so that the sessions its stop cuts are checked against its closes.
  const single = options.stopAfterMs !== undefined || options.connect !== undefined;
  const limits = options.limits;
  await using server = options.connect ? undefined : await startServer(
    options,
    options.serverIdleTimeoutMs,
    stopper.launch?.bind(stopper),
    options.stopAfterMs !== undefined ? CONNECTION_LINES : [],
  );
  await using idleServer = single ? undefined : await startServer(options, limits.idleTimeoutMs, spawnServer, [
    "--send-timeout",
    formatDuration(limits.sendTimeoutMs),
    ...CONNECTION_LINES,
  ]);
  const sideServer = (target: string, args: string[]) =>
    single || !targetUsed(options, target)
      ? undefined
      : startServer(options, options.serverIdleTimeoutMs, spawnServer, [...args, ...CONNECTION_LINES]);
  await using bytesServer = await sideServer("bytes", ["--max-bytes-per-connection", String(limits.byteLimit)]);
  await using ageServer = await sideServer("age", ["--max-connection-duration", formatDuration(limits.ageLimitMs)]);
  const watch = server ? new ServerWatch(server) : undefined;
  const target = options.connect ?? { hostname: "127.0.0.1", port: server!.port };
  const idleTarget = idleServer ? { hostname: "127.0.0.1", port: idleServer.port } : target;
  const targets: Record<string, Target> = { echo: target, idle: idleTarget };
  if (idleServer) targets.send = idleTarget;
  if (bytesServer) targets.bytes = { hostname: "127.0.0.1", port: bytesServer.port };
  if (ageServer) targets.age = { hostname: "127.0.0.1", port: ageServer.port };
  const base: Omit<ClientConfig, "client"> = {
    env: {
      targets,
      idleTimeoutMs: options.limits.idleTimeoutMs,
      stopMode: options.stopAfterMs !== undefined,
      transport: options.transport,
    },
    limits: options.limits,
    weights: options.weights,
    seed: options.seed,
    clients: options.replay !== undefined ? 1 : options.clients,
    concurrency: options.concurrency,
    durationMs: options.durationMs,
    replay: options.replay,
  };
  const onMessage = (message: ClientMessage) => {
    if (message.type === "failure") {
      failures.push({ ...message, replay: options.replayCommand(message.n) });
      options.progress(`FAILURE session ${message.n} (${message.kind}): ${message.ending}: ${message.detail}`);
    } else if (message.type === "stopped") {
      stopEvents.push(message);
    } else if (message.type === "check") {
      checks.push(message);
    } else if (message.type === "replay") {
      replayResult = message;
    }
  };

  const started = performance.now();
  const clients = Array.from(
    { length: base.clients },
    (_, client) => new ClientProcess({ ...base, client }, onMessage),
  );
  let signalAt: number | undefined;
  try {
    // Watch while the swarm runs.
    let running = true;
    const allExited = Promise.all(clients.map((c) => c.status)).then(() => void (running = false));
    let lastProgress = started;
    while (running && !watch?.exited) {
      await Promise.race([sleep(SAMPLE_MS), allExited]);
      const t = performance.now() - started;
      watch?.sample(t, t <= options.durationMs && signalAt === undefined);
      if (watch && options.stopAfterMs !== undefined && signalAt === undefined && t >= options.stopAfterMs) {
        options.progress(`[${(t / 1000).toFixed(0)}s] stopping the server under load (${stopper.name})`);
        signalAt = Date.now();
        watch.stop(stopper);
      }
      if (options.replay === undefined && performance.now() - lastProgress >= 10_000) {
        lastProgress = performance.now();
        const { total } = sumStats(clients.map((c) => c.stats));
        options.progress(
          `[${(t / 1000).toFixed(0)}s] sessions ${total.sessions} (ok ${total.ok}, failed ${total.failed}), ` +
            `verified ${formatBytesIEC(total.bytesVerified)}` +
            (watch
              ? `, server connections ${Math.max(0, watch.lastFds - watch.baselineFds)}, RSS ${
                formatKiB(watch.lastKiB)
              }`
              : ""),
        );
      }
    }
    if (watch?.exited && signalAt === undefined) {
      watch.exitedUnasked = true;
      violations.push(`the server exited (code ${watch.exitCode}) while the swarm ran: ${watch.server.stderr}`);
      for (const c of clients) c.kill();
    }
    const hangGuard = options.durationMs + longestSessionMs(options.limits) + HANG_GUARD_MS;
    for (const [i, client] of clients.entries()) {
      const exited = await client.finish(Math.max(0, hangGuard - (performance.now() - started)));
      const status = await client.status;
      if (!exited) {
        violations.push(`client process ${i} was still running ${formatDuration(hangGuard)} into the run: killed`);
      } else if (!status.success && !watch?.exited) {
        violations.push(`client process ${i} exited with code ${status.code}: ${client.stderr.slice(-2000)}`);
      } else if (client.stderr.trim() !== "") {
        violations.push(`client process ${i} wrote to standard error: ${client.stderr.slice(-2000)}`);
      } else if (!client.done && options.replay === undefined && !watch?.exited) {
        violations.push(`client process ${i} ended without its final report`);
      }
    }
  } finally {
    for (const c of clients) c.kill();
  }
  const elapsedMs = performance.now() - started;

  const { kinds, total } = sumStats(clients.map((c) => c.stats));
  const report: SwarmReport = {
    passed: false,
    violations,
    seed: options.seed,
    elapsedMs: Math.round(elapsedMs),
    clients: base.clients,
    concurrency: options.concurrency,
    kinds,
    total,
    failures,
    peakConnections: watch ? Math.max(0, watch.peakFds - watch.baselineFds) : -1,
    clientPeakConnections: clients.reduce((n, c) => n + c.peakConnections, 0),
    replay: replayResult,
  };
  if (watch) await judgeServer(watch, options, signalAt, stopEvents, clients, report);
  if (idleServer) report.idleServer = await judgeSideServer(idleServer, "the idle kinds' server", options, violations);
  if (bytesServer) {
    report.bytesServer = await judgeSideServer(bytesServer, "the byte-limit server", options, violations);
  }
  if (ageServer) report.ageServer = await judgeSideServer(ageServer, "the age-limit server", options, violations);
  // Every server has exited: their logs are complete.
  const logs: Record<string, ClosingLog | undefined> = {};
  const logOf = (target: string): ClosingLog | undefined => {
    const s = target === "bytes"
      ? bytesServer
      : target === "age"
      ? ageServer
      : target === "echo" || single
      ? server
      : idleServer;
    if (!s) return undefined;
    return logs[target] ??= new ClosingLog(s.lines);
  };
  if (!options.connect) {
    const notes = options.replay !== undefined ? report.closeNotes = [] : undefined;
    report.closes = judgeCloses(checks, logOf, options, violations, notes);
  }
  for (const f of failures) {
    const log = f.record && !options.connect ? logOf(f.record.target) : undefined;
    const closing = log && f.record ? log.find(f.record.port, f.record.connectAt) : undefined;
    if (closing) f.server = describeClosing(closing);
    if (log && f.record?.expect && f.ending === "cut") {
      const outcome = judgeClose(f.record, log, false);
      if (outcome.verdict === "late write") {
        const stats = report.closes![f.kind] ??= { checked: 0, verdicts: {}, reasons: {}, bytes: 0 };
        stats.checked++;
        stats.verdicts["late write"] = (stats.verdicts["late write"] ?? 0) + 1;
        stats.reasons[outcome.closing!.reason] = (stats.reasons[outcome.closing!.reason] ?? 0) + 1;
        for (const s of [kinds[f.kind], total]) {
          s.failed--;
          s.cut++;
        }
        (report.lateWrites ??= []).push(`session ${f.n} (${f.kind}): ${f.detail}; ${outcome.detail}`);
        continue;
      }
    }
    violations.push(
      `session ${f.n} (${f.kind}) ${f.ending}: ${f.detail}` + (f.server ? `; ${f.server}` : "") +
        `\n    replay: ${f.replay}`,
    );
  }
  if (options.replay !== undefined) {
    if (!replayResult) violations.push("the replayed session reported nothing");
    else if (replayResult.ending !== "ok") {
      const record = replayResult.record;
      const closing = record && !options.connect
        ? logOf(record.target)?.find(record.port, record.connectAt)
        : undefined;
      violations.push(
        `session ${replayResult.plan.n} ${replayResult.ending}: ${replayResult.detail}` +
          (closing ? `; ${describeClosing(closing)}` : ""),
      );
    }
  }
  report.passed = violations.length === 0;
  return report;
}

/**
 * Holds each reported connection against its server's closing line (stress/closes.ts), and counts the outcomes by
 * kind. Sessions a stop cut are counted as "stop cuts".
 */
function judgeCloses(
  checks: Array<Extract<ClientMessage, { type: "check" }>>,
  logOf: (target: string) => ClosingLog | undefined,
  options: SwarmOptions,
  violations: string[],
  notes?: string[],
): Record<string, CloseStats> {
  const closes: Record<string, CloseStats> = {};
  const silent = new Set<string>();
  for (const check of checks) {
    const log = logOf(check.record.target);
    if (!log) continue;
    if (log.count === 0) {
      // The server logged no connection at all: its log level or trace flags (given after --) hide those lines.
      if (!silent.has(check.record.target)) {
        silent.add(check.record.target);
        violations.push(
          `the server of target "${check.record.target}" logged no closing line, so no close could be checked ` +
            "(do the echosrv options turn the debug level or trace flag 0x4 off?)",
        );
      }
      continue;
    }
    const outcome = judgeClose(check.record, log, check.stopCut);
    const stats = closes[check.stopCut ? "stop cuts" : check.kind] ??= {
      checked: 0,
      verdicts: {},
      reasons: {},
      bytes: 0,
    };
    stats.checked++;
    stats.verdicts[outcome.verdict] = (stats.verdicts[outcome.verdict] ?? 0) + 1;
    if (outcome.closing) stats.reasons[outcome.closing.reason] = (stats.reasons[outcome.closing.reason] ?? 0) + 1;
    if (outcome.verdict !== "violation") stats.bytes += check.record.received;
    notes?.push(
      `port ${check.record.port}: read ${check.record.received} bytes, then ${check.record.end ?? "no end"}: ` +
        `${outcome.verdict} (${outcome.detail})`,
    );
    if (outcome.verdict === "violation") {
      violations.push(
        `session ${check.n} (${check.kind})${check.stopCut ? ", cut by the stop," : ""}: ${outcome.detail}\n` +
          `    replay: ${options.replayCommand(check.n)}`,
      );
    }
  }
  return closes;
}

/** The server's side of the verdict: descriptors, exit, log, memory, and the stop if there was one. */
async function judgeServer(
  watch: ServerWatch,
  options: SwarmOptions,
  signalAt: number | undefined,
  stopEvents: Array<Extract<ClientMessage, { type: "stopped" }>>,
  clients: ClientProcess[],
  report: SwarmReport,
): Promise<void> {
  const violations = report.violations;
  if (signalAt === undefined && !watch.exited) {
    report.descriptors = await watch.descriptorsSettled();
    if (!report.descriptors.backToBaseline) {
      violations.push(
        `the server holds ${report.descriptors.after} descriptors ${DESCRIPTORS_SETTLE_MS / 1000} s after the ` +
          `swarm left, more than its baseline of ${report.descriptors.baseline}: ` +
          JSON.stringify(openDescriptors(watch.server.pid)),
      );
    }
    watch.stop(options.stopper ?? SIGTERM_STOPPER);
  }
  const exitCode = await Promise.race([
    watch.exit,
    sleep(options.shutdownTimeoutMs + HANG_GUARD_MS).then(() => "hung" as const),
  ]);
  if (exitCode === "hung") {
    violations.push(`the server did not exit within its grace period plus ${HANG_GUARD_MS / 1000} s of being stopped`);
  } else if (exitCode !== 0 && !watch.exitedUnasked) {
    violations.push(`the server exited with code ${exitCode} when stopped (expected 0)`);
  }
  if (watch.stopFailure) violations.push(`asking the server to stop failed: ${watch.stopFailure}`);
  const { records, unexpected } = judgeLog(watch.server, violations);
  const stopped = records.find((r) => r.message?.startsWith("stopped:"));
  if (exitCode === 0 && !stopped) violations.push("the server exited without its closing summary line");
  report.log = { lines: watch.server.lines.length, unexpected };
  report.server = {
    exitCode: typeof exitCode === "number" ? exitCode : null,
    accepted: stopped?.properties.accepted as number | undefined,
    bytesEchoed: stopped?.properties.bytesEchoed as number | undefined,
    closedIdle: stopped?.properties.closedIdle as number | undefined,
    workers: (records.find((r) => r.message?.startsWith("echoing on port"))?.properties.workers as number) ?? 1,
  };
  if (options.replay === undefined) report.memory = judgeMemory(watch, options, violations);
  if (signalAt !== undefined) {
    judgeStop(stopEvents, signalAt, options.shutdownTimeoutMs, violations);
    // One "closing N connection(s) still open" line per server: one, or one per worker ("worker 2: closing ...").
    const closing = records.filter((r) => /^(worker \d+: )?closing \d+ connection/.test(r.message ?? ""));
    report.stop = {
      how: (options.stopper ?? SIGTERM_STOPPER).name,
      graceMs: options.shutdownTimeoutMs,
      exitedAfterMs: watch.exitedAfterMs ?? -1,
      exitCode: report.server.exitCode,
      okAfterSignal: clients.reduce((n, c) => n + c.okTimes.filter((at) => at > signalAt).length, 0),
      cut: stopEvents.filter((e) => e.ending === "cut").length,
      refused: stopEvents.filter((e) => e.ending === "refused").length,
      closedAtGraceEnd: closing.reduce((n, r) => n + Number(r.properties.count ?? 0), 0),
    };
  }
  const stopper = options.stopper ?? SIGTERM_STOPPER;
  if (stopper.judge && exitCode !== "hung") {
    const judged = await stopper.judge(watch.server);
    violations.push(...judged.violations);
    report.stopCheck = judged.summary;
  }
}

/**
 * A side server (the idle kinds', the byte-limit and the age-limit ones): it exits 0 on SIGTERM, its log holds no
 * warning or error, and a closing line for every connection it served (the close checks read them).
 */
async function judgeSideServer(
  server: SwarmServer,
  name: string,
  options: SwarmOptions,
  violations: string[],
): Promise<SideServerReport> {
  server.signal("SIGTERM");
  const exitCode = await server.exited(options.shutdownTimeoutMs + HANG_GUARD_MS).catch(() => null);
  if (exitCode !== 0) violations.push(`${name} exited with ${exitCode ?? "nothing (hung)"} on SIGTERM`);
  const { records, unexpected } = judgeLog(server, violations, `${name}'s log`);
  const stopped = records.find((r) => r.message?.startsWith("stopped:"));
  const count = (key: string) => stopped?.properties[key] as number | undefined;
  const closingLines = records.filter((r) => /^(worker \d+: )?closed /.test(r.message ?? "")).length;
  if (stopped && closingLines !== count("accepted")) {
    violations.push(`${name} served ${count("accepted")} connections but logged ${closingLines} closing lines`);
  }
  return {
    exitCode,
    accepted: count("accepted"),
    closedIdle: count("closedIdle"),
    closedSendTimeout: count("closedSendTimeout"),
    closedMaxBytes: count("closedMaxBytes"),
    closedMaxDuration: count("closedMaxDuration"),
    closingLines,
    unexpected,
  };
}

/** A byte count with IEC binary prefixes (powers of 1024, as memory is read): `1.5 GiB`, `12.0 MiB`, `640 B`. */
export function formatBytesIEC(bytes: number): string {
  if (bytes < 0) return `-${formatBytesIEC(-bytes)}`;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Kibibytes as `12.3 MiB`. */
export function formatKiB(kiB: number): string {
  return formatBytesIEC(kiB * 1024);
}
