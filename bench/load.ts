// load: the latency-under-load measurement of the benchmark. It places the server and its load clients on the
// machine's cores (pinned apart with `taskset` when there are at least 4, so a client never takes the server's
// core), runs as many bench/loadgen.c processes in `latency` mode as the server's cores need so the client is not
// the limit, starts them together, and merges what they measured: their latency histograms (so the percentiles are
// those of every round trip, not an average of percentiles), their round trips, and how busy each of them was.

/** Where the server and the load clients run. */
export interface Placement {
  /** True when the server and the clients are pinned to separate cores (machines with at least 4). */
  pinned: boolean;
  /** The machine's cores. */
  cores: number;
}

/** The smallest machine on which the server and the clients get cores of their own. */
export const MIN_CORES_TO_PIN = 4;

/** One single-threaded loadgen drives about 200k 64-byte round trips/s; this many connections per process at most. */
const CONNS_PER_CLIENT = 125;
/** Load processes per server core: a little more than one, so no client is ever the limit. */
const CLIENTS_PER_SERVER_CORE = 1.5;

/**
 * Where things run on this machine: pinned apart when it has {@link MIN_CORES_TO_PIN} cores or more and `taskset` is
 * there (`pin` "auto"), always when `taskset` is there (`pin` true: `--pin`, to try the pinned set-up on a small
 * machine), or never (`pin` false: `--no-pin`).
 *
 * @param cores the machine's cores (navigator.hardwareConcurrency)
 * @param pin "auto", true or false
 * @param hasTaskset whether `taskset` (util-linux) can be run
 */
export function placement(cores: number, pin: boolean | "auto", hasTaskset: boolean): Placement {
  return { pinned: hasTaskset && cores >= 2 && (pin === true || (pin === "auto" && cores >= MIN_CORES_TO_PIN)), cores };
}

/** The cores a server with `serverCores` cores gets: 0 .. serverCores-1, as `taskset -c` reads them. */
export function serverCpuList(serverCores: number): string {
  return serverCores <= 1 ? "0" : `0-${serverCores - 1}`;
}

/**
 * How many load processes a measurement needs, and the core of each (undefined when not pinned).
 *
 * Pinned: about 1.5 processes per server core and at least one per {@link CONNS_PER_CLIENT} connections, on the cores
 * the server leaves free, one process per core. Not pinned (a small machine, where the clients share the cores with
 * the server anyway): one process, since a second would only compete with the server for the same cores.
 *
 * @param where the placement
 * @param serverCores the cores the server is pinned to
 * @param conns the connections of the measurement
 * @param forced a number of processes asked for on the command line (`--clients`)
 * @returns one entry per process: its core, or undefined
 */
export function clientCpus(
  where: Placement,
  serverCores: number,
  conns: number,
  forced?: number,
): (number | undefined)[] {
  if (!where.pinned) return Array(Math.max(1, Math.min(forced ?? 1, conns))).fill(undefined);
  const spare = Math.max(1, where.cores - serverCores);
  const wanted = forced ??
    Math.max(Math.ceil(serverCores * CLIENTS_PER_SERVER_CORE), Math.ceil(conns / CONNS_PER_CLIENT));
  const count = Math.max(1, Math.min(wanted, spare, conns));
  return Array.from({ length: count }, (_, i) => serverCores + (i % spare));
}

/** A latency histogram as loadgen prints it: [lowest value of the bucket in microseconds, count] pairs. */
export type Histogram = Array<[number, number]>;

/** One phase of a latency measurement (the first second with connection set-up, or the measured window). */
export interface PhaseFigures {
  round_trips: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  max_us: number;
  /** Messages whose reply never came (counted in the percentiles at the age they reached). */
  unanswered: number;
}

/** What one latency measurement (all its load processes together) found. */
export interface LatencySample extends PhaseFigures {
  ok: boolean;
  error?: string;
  conns: number;
  round_trips_per_s: number;
  /** Connections that got no reply to any message sent in the measured window. */
  starved_conns: number;
  /** The fewest and the most round trips one connection made in the measured window. */
  conn_rt_min: number;
  conn_rt_max: number;
  /** Each load process's CPU time over wall time in the window (1 = one core, all the time). */
  client_busy: number[];
  server_busy?: number;
  server_system?: number;
  machine_busy?: number;
  /** Other work on the machine in the window, in cores: the machine's busy time less the clients' and the server's. */
  others?: number;
  /** Measurements thrown away and taken again because other work disturbed them. */
  retries?: number;
  /** The first `burst` seconds: every connection opened at once, the set-up counted in each first round trip. */
  burst: PhaseFigures & {
    seconds: number;
    connect_max_us: number;
    first_echo_max_us: number;
    never_echoed: number;
  };
  /** The merged histograms (kept in memory for the percentile plot; not written per sample). */
  hist?: Histogram;
  burstHist?: Histogram;
}

/** The shape of one loadgen process's line in latency mode. */
interface LoadgenLatency extends Omit<LatencySample, "client_busy" | "burst" | "hist"> {
  client_busy: number;
  hist: Histogram;
  burst: LatencySample["burst"] & { hist: Histogram };
}

/** Adds histograms bucket by bucket. */
export function mergeHistograms(parts: Histogram[]): Histogram {
  const sum = new Map<number, number>();
  for (const part of parts) for (const [value, count] of part) sum.set(value, (sum.get(value) ?? 0) + count);
  return [...sum.entries()].sort((a, b) => a[0] - b[0]);
}

/**
 * The value at percentile `p` (0..1) of a histogram: the lowest value of the bucket that holds the round trip of
 * that rank, as loadgen computes it.
 */
export function percentileOf(hist: Histogram, p: number): number {
  const total = hist.reduce((n, [, c]) => n + c, 0);
  if (total === 0) return NaN;
  const rank = Math.min(Math.floor(p * total), total - 1);
  let seen = 0;
  for (const [value, count] of hist) {
    seen += count;
    if (seen > rank) return value;
  }
  return hist[hist.length - 1][0];
}

function phaseFigures(hist: Histogram, unanswered: number, max: number): PhaseFigures {
  return {
    round_trips: hist.reduce((n, [, c]) => n + c, 0) - unanswered,
    p50_us: percentileOf(hist, 0.5),
    p99_us: percentileOf(hist, 0.99),
    p999_us: percentileOf(hist, 0.999),
    max_us: max,
    unanswered,
  };
}

/** What a latency measurement needs to know. */
export interface LatencyRun {
  loadgen: string;
  port: number;
  serverPid: number;
  conns: number;
  seconds: number;
  warmup: number;
  burst: number;
  /** The core of each load process (undefined entries: not pinned). */
  cpus: (number | undefined)[];
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/**
 * Runs the load processes of one latency measurement together (they open their connections at the same moment)
 * and merges their results. A process that fails makes the sample failed, with its reason.
 */
export async function measureLatency(run: LatencyRun): Promise<LatencySample> {
  const startAt = Date.now() + 300; // time for every process to start and wait at the line
  const shares = run.cpus.map((_, i) =>
    Math.floor(run.conns / run.cpus.length) + (i < run.conns % run.cpus.length ? 1 : 0)
  );
  const outputs = await Promise.all(run.cpus.map((cpu, i) => {
    const args = ["latency", `${run.port}`, `${run.seconds}`, `${shares[i]}`];
    const command = cpu === undefined ? run.loadgen : "taskset";
    return new Deno.Command(command, {
      args: cpu === undefined ? args : ["-c", `${cpu}`, run.loadgen, ...args],
      stdout: "piped",
      stderr: "piped",
      env: {
        LOADGEN_WARMUP: `${run.warmup}`,
        LOADGEN_BURST: `${run.burst}`,
        LOADGEN_START_AT: `${startAt}`,
        LOADGEN_SERVER_PID: `${run.serverPid}`,
      },
    }).output();
  }));
  const lines: LoadgenLatency[] = [];
  for (const out of outputs) {
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
    let line: LoadgenLatency | { ok: false; error: string };
    try {
      line = JSON.parse(text);
    } catch {
      line = { ok: false, error: `loadgen exited ${out.code}: ${new TextDecoder().decode(out.stderr).trim()}` };
    }
    if (!line.ok) return failedSample(run.conns, (line as { error: string }).error);
    lines.push(line as LoadgenLatency);
  }
  const hist = mergeHistograms(lines.map((l) => l.hist));
  const burstHist = mergeHistograms(lines.map((l) => l.burst.hist));
  const first = lines[0];
  const clientBusy = lines.map((l) => l.client_busy);
  const known = (x: number | undefined) => x !== undefined && x >= 0 ? x : undefined;
  const serverBusy = known(first.server_busy), machineBusy = known(first.machine_busy);
  return {
    ok: true,
    conns: run.conns,
    ...phaseFigures(hist, sum(lines.map((l) => l.unanswered)), Math.max(...lines.map((l) => l.max_us))),
    round_trips_per_s: sum(lines.map((l) => l.round_trips_per_s)),
    starved_conns: sum(lines.map((l) => l.starved_conns)),
    conn_rt_min: Math.min(...lines.map((l) => l.conn_rt_min)),
    conn_rt_max: Math.max(...lines.map((l) => l.conn_rt_max)),
    client_busy: clientBusy,
    server_busy: serverBusy,
    server_system: known(first.server_system),
    machine_busy: machineBusy,
    others: machineBusy === undefined || serverBusy === undefined
      ? undefined
      : Math.max(0, machineBusy - serverBusy - sum(clientBusy)),
    burst: {
      seconds: first.burst.seconds,
      ...phaseFigures(
        burstHist,
        sum(lines.map((l) => l.burst.unanswered)),
        Math.max(...lines.map((l) => l.burst.max_us)),
      ),
      connect_max_us: Math.max(...lines.map((l) => l.burst.connect_max_us)),
      first_echo_max_us: Math.max(...lines.map((l) => l.burst.first_echo_max_us)),
      never_echoed: sum(lines.map((l) => l.burst.never_echoed)),
    },
    hist,
    burstHist,
  };
}

function failedSample(conns: number, error: string): LatencySample {
  const none = { round_trips: 0, p50_us: NaN, p99_us: NaN, p999_us: NaN, max_us: NaN, unanswered: 0 };
  return {
    ok: false,
    error,
    conns,
    ...none,
    round_trips_per_s: NaN,
    starved_conns: 0,
    conn_rt_min: 0,
    conn_rt_max: 0,
    client_busy: [],
    burst: { ...none, seconds: 0, connect_max_us: NaN, first_echo_max_us: NaN, never_echoed: 0 },
  };
}
