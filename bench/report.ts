// report: what the benchmark (bench/run.ts) says about its samples. Medians with the min-max of the rounds, the
// ratios against the C anchor and the Node.js baseline (each the median of per-round ratios, since rounds are
// interleaved and a round's servers share its conditions), what the operations features cost against echosrv's
// defaults, the project's targets, a Markdown table for the terminal and the README, and an SVG chart.

/** The measurements, by their short names. */
export type TestId = "bulk" | "pp1" | "pp50" | "connect" | "memory";

/** One loadgen result (its JSON line) plus what the orchestrator measured around it. */
export interface Sample {
  ok: boolean;
  error?: string;
  bytes_per_s?: number;
  round_trips_per_s?: number;
  connections_per_s?: number;
  p50_us?: number;
  p99_us?: number;
  /** The load client's CPU time over wall time in the measured window (1 = one core, all the time). */
  client_busy?: number;
  /** The server's CPU time (all threads) over wall time in the same window. */
  server_busy?: number;
  /** The system (kernel) part of `server_busy`: its system calls and TCP work charged to it. */
  server_system?: number;
  /** Cores the whole machine kept busy in the same window: client, server and any other work sharing it. */
  machine_busy?: number;
  kib_per_conn?: number;
  rss_before_kib?: number;
  rss_after_kib?: number;
  conns?: number;
}

/** A server in the table. */
export interface ServerInfo {
  id: string;
  label: string;
  /** True for echosrv with its defaults: the row the targets are about. */
  echosrv?: boolean;
  /** For echosrv with operations features on: what is on. Compared with the defaults row, and held to its targets. */
  feature?: string;
}

/** Everything bench/results.json holds. */
export interface BenchResults {
  date: string;
  machine: {
    cpu: string;
    cores: number;
    kernel: string;
    deno: string;
    node?: string;
    cc?: string;
    loadavgBefore: string;
    loadavgAfter?: string;
  };
  method: Record<string, unknown>;
  servers: ServerInfo[];
  samples: Partial<Record<TestId, Record<string, Sample[]>>>;
}

const METRIC: Record<TestId, keyof Sample> = {
  bulk: "bytes_per_s",
  pp1: "round_trips_per_s",
  pp50: "round_trips_per_s",
  connect: "connections_per_s",
  memory: "kib_per_conn",
};

const TITLE: Record<TestId, string> = {
  bulk: "bulk, 1 connection (GB/s)",
  pp1: "64 B ping-pong, 1 connection (round trips/s)",
  pp50: "64 B ping-pong, 50 connections (round trips/s)",
  connect: "new connections/s (connect, echo 64 B, close)",
  memory: "memory per idle connection (KiB, 5000 open)",
};

/** Median, min and max of a list of numbers (NaN when empty). */
export function stats(values: number[]): { median: number; min: number; max: number } {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return { median: NaN, min: NaN, max: NaN };
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1] };
}

function okSamples(results: BenchResults, test: TestId, id: string): Sample[] {
  return results.samples[test]?.[id]?.filter((s) => s.ok) ?? [];
}

/** The median (min-max) of one field of one server's samples in one test. */
export function summary(results: BenchResults, test: TestId, id: string, field: keyof Sample = METRIC[test]) {
  return stats(okSamples(results, test, id).map((s) => s[field] as number));
}

/**
 * The ratio of server `a` to server `b` on one field: the median of the per-round ratios (samples are paired by
 * round). Undefined when either has no sample.
 */
export function ratio(
  results: BenchResults,
  test: TestId,
  a: string,
  b: string,
  field: keyof Sample = METRIC[test],
): number | undefined {
  const as = results.samples[test]?.[a] ?? [];
  const bs = results.samples[test]?.[b] ?? [];
  const per: number[] = [];
  for (let i = 0; i < Math.min(as.length, bs.length); i++) {
    if (as[i].ok && bs[i].ok) per.push((as[i][field] as number) / (bs[i][field] as number));
  }
  const { median } = stats(per);
  return Number.isFinite(median) ? median : undefined;
}

function format(test: TestId, value: number): string {
  if (!Number.isFinite(value)) return "-";
  if (test === "bulk") return (value / 1e9).toFixed(2);
  if (test === "memory") return value.toFixed(1);
  return value >= 10_000 ? `${(value / 1000).toFixed(1)}k` : `${Math.round(value)}`;
}

function cell(results: BenchResults, test: TestId, id: string): string {
  const { median, min, max } = summary(results, test, id);
  if (!Number.isFinite(median)) return "-";
  return min === max ? format(test, median) : `${format(test, median)} (${format(test, min)}-${format(test, max)})`;
}

function latencyCell(results: BenchResults, test: TestId, id: string): string {
  const p50 = summary(results, test, id, "p50_us").median;
  const p99 = summary(results, test, id, "p99_us");
  if (!Number.isFinite(p50)) return "-";
  return `${Math.round(p50)} / ${Math.round(p99.median)} (${Math.round(p99.min)}-${Math.round(p99.max)})`;
}

function busyCell(results: BenchResults, id: string, field: "client_busy" | "server_busy" | "others"): string {
  const tests: TestId[] = ["bulk", "pp1", "pp50", "connect"];
  return tests.map((t) => {
    const values = okSamples(results, t, id).map((s) =>
      field === "others" ? Math.max(0, s.machine_busy! - s.client_busy! - s.server_busy!) : s[field]!
    );
    const { median } = stats(values);
    return Number.isFinite(median) ? `${Math.round(median * 100)}%` : "-";
  }).join(" / ");
}

/**
 * The columns of the two tables of server CPU time per operation, in order: the test, the scale of its unit (ns per
 * byte for bulk, us per round trip or connection for the others) and the digits shown. Both tables use these.
 */
const PER_OP_COLUMNS: Array<[test: TestId, scale: number, digits: number]> = [
  ["bulk", 1e9, 2],
  ["pp1", 1e6, 1],
  ["pp50", 1e6, 2],
  ["connect", 1e6, 1],
];

/** The server's CPU time per unit of work (byte, round trip, connection), scaled, as median (min-max). */
function perOpCell(results: BenchResults, test: TestId, id: string, scale: number, digits: number): string {
  const values = okSamples(results, test, id)
    .filter((s) => s.server_busy !== undefined && s.server_busy >= 0)
    .map((s) => (s.server_busy! / (s[METRIC[test]] as number)) * scale);
  const { median, min, max } = stats(values);
  if (!Number.isFinite(median)) return "-";
  return `${median.toFixed(digits)} (${min.toFixed(digits)}-${max.toFixed(digits)})`;
}

/**
 * The server's CPU time per unit of work split into user space (the server program: for Deno, V8, the runtime and
 * the JavaScript) and kernel (system time: system calls and the TCP work charged to the server), as medians.
 */
function splitCell(results: BenchResults, test: TestId, id: string, scale: number, digits: number): string {
  const samples = okSamples(results, test, id).filter((s) =>
    s.server_busy !== undefined && s.server_system !== undefined && s.server_system >= 0
  );
  const rate = (s: Sample) => s[METRIC[test]] as number;
  const user = stats(samples.map((s) => ((s.server_busy! - s.server_system!) / rate(s)) * scale)).median;
  const kernel = stats(samples.map((s) => (s.server_system! / rate(s)) * scale)).median;
  if (!Number.isFinite(user)) return "-";
  return `${user.toFixed(digits)} + ${kernel.toFixed(digits)}`;
}

function row(cells: string[]): string {
  return `| ${cells.join(" | ")} |`;
}

/**
 * The project's targets (issue 4) for one echosrv row, each with the measured ratio and whether it holds. They are
 * stated for echosrv's defaults; issue 5 asks the same of echosrv with its operations features on.
 *
 * @param results the run
 * @param id the echosrv row (its defaults by default)
 * @returns one entry per target whose baseline was measured
 */
export function targets(
  results: BenchResults,
  id = "echosrv",
): Array<{ what: string; value: number | undefined; holds?: boolean }> {
  const out: Array<{ what: string; value: number | undefined; holds?: boolean }> = [];
  const add = (what: string, value: number | undefined, holds: (v: number) => boolean) =>
    out.push({ what, value, holds: value === undefined ? undefined : holds(value) });
  const has = (id: string) => results.servers.some((s) => s.id === id);
  if (has("c-epoll")) {
    add("bulk throughput >= 0.95x C", ratio(results, "bulk", id, "c-epoll"), (v) => v >= 0.95);
    add("ping-pong 1 conn rate >= 0.95x C", ratio(results, "pp1", id, "c-epoll"), (v) => v >= 0.95);
    add("ping-pong 50 conns rate >= 0.95x C", ratio(results, "pp50", id, "c-epoll"), (v) => v >= 0.95);
    add("connection rate >= 0.95x C", ratio(results, "connect", id, "c-epoll"), (v) => v >= 0.95);
    add("ping-pong 1 conn p99 <= 1.2x C", ratio(results, "pp1", id, "c-epoll", "p99_us"), (v) => v <= 1.2);
    add("ping-pong 50 conns p99 <= 1.2x C", ratio(results, "pp50", id, "c-epoll", "p99_us"), (v) => v <= 1.2);
  }
  if (has("node")) {
    add("ping-pong 50 conns rate >= 1.3x Node.js", ratio(results, "pp50", id, "node"), (v) => v >= 1.3);
    add("memory per idle conn <= Node.js", ratio(results, "memory", id, "node"), (v) => v <= 1);
  }
  return out;
}

/**
 * The server's CPU time per unit of work of server `a` over that of `b`, the median of the per-round ratios: what
 * a feature costs, independent of how fast the client was (above 1 = costlier).
 */
export function cpuRatio(results: BenchResults, test: TestId, a: string, b: string): number | undefined {
  const as = results.samples[test]?.[a] ?? [];
  const bs = results.samples[test]?.[b] ?? [];
  const perOp = (s: Sample) => s.server_busy! / (s[METRIC[test]] as number);
  const per: number[] = [];
  for (let i = 0; i < Math.min(as.length, bs.length); i++) {
    const x = as[i], y = bs[i];
    if (x.ok && y.ok && x.server_busy !== undefined && y.server_busy !== undefined) per.push(perOp(x) / perOp(y));
  }
  const { median } = stats(per);
  return Number.isFinite(median) ? median : undefined;
}

/** The whole report as Markdown: machine, medians (min-max), CPU use, ratios, targets. */
export function renderTable(results: BenchResults): string {
  const { machine: m, method } = results;
  const lines: string[] = [];
  lines.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.kernel}; Deno ${m.deno}, Node.js ${m.node ?? "-"}, ${m.cc ?? "no cc"}.`,
  );
  const priority = [
    method.nice ? `nice ${method.nice}` : "",
    typeof method.autogroup === "string" && !/ nice 0$/.test(method.autogroup) ? `${method.autogroup}` : "",
  ].filter(Boolean).join(", ");
  lines.push(
    `Load average before/after: ${m.loadavgBefore} / ${m.loadavgAfter ?? "?"}${
      priority ? ` (benchmark run at ${priority})` : ""
    }. ${method.rounds} interleaved ` +
      `round(s) of ${method.seconds} s per test and server (after ${method.warmup} s warm-up), ` +
      `${method.memoryRounds} fresh-server memory round(s) with ${method.idleConnections} idle connections. ` +
      "Medians, with the min-max of the rounds in parentheses.",
  );
  const restarts = (method.restarts ?? []) as Array<{ server: string; round: number; test: string; how: string }>;
  const scraped = (method.scrapes ?? {}) as Record<string, { ok: number; failed: number }>;
  for (const [id, tally] of Object.entries(scraped)) {
    const label = results.servers.find((s) => s.id === id)?.label ?? id;
    lines.push(
      `${label}: /metrics read ${tally.ok + tally.failed} times, every ${method.scrapeIntervalMs ?? 1000} ms ` +
        `while it ran (${tally.failed} failed).`,
    );
  }
  for (const r of restarts) {
    lines.push(
      `Note: ${r.server} ended during the run (before ${r.test} of round ${r.round}; ${r.how.split("\n")[0]}) ` +
        "and was started again.",
    );
  }
  lines.push("");
  lines.push(row([
    "server",
    "bulk GB/s",
    "ping-pong 1 conn, rt/s",
    "p50 / p99 us",
    "ping-pong 50 conns, rt/s",
    "p50 / p99 us",
    "new conns/s",
    "KiB per idle conn",
  ]));
  lines.push(row(Array(8).fill("---")));
  for (const s of results.servers) {
    lines.push(row([
      s.label,
      cell(results, "bulk", s.id),
      cell(results, "pp1", s.id),
      latencyCell(results, "pp1", s.id),
      cell(results, "pp50", s.id),
      latencyCell(results, "pp50", s.id),
      cell(results, "connect", s.id),
      cell(results, "memory", s.id),
    ]));
  }
  lines.push("");
  lines.push("CPU use in the measured window (1 core = 100%), bulk / ping-pong 1 / ping-pong 50 / connections:");
  lines.push("");
  lines.push(row(["server", "load client (bench/loadgen.c)", "server (all threads)", "other work on the machine"]));
  lines.push(row(["---", "---", "---", "---"]));
  for (const s of results.servers) {
    lines.push(row([
      s.label,
      busyCell(results, s.id, "client_busy"),
      busyCell(results, s.id, "server_busy"),
      busyCell(results, s.id, "others"),
    ]));
  }
  lines.push("");
  lines.push(
    "Server CPU time per operation (median; the server's CPU time in the window over the work done, so it does not " +
      "depend on how fast the client was):",
  );
  lines.push("");
  lines.push(
    row([
      "server",
      "bulk, ns per byte",
      "ping-pong 1 conn, us per round trip",
      "ping-pong 50, us per round trip",
      "us per connection",
    ]),
  );
  lines.push(row(["---", "---", "---", "---", "---"]));
  for (const s of results.servers) {
    lines.push(
      row([s.label, ...PER_OP_COLUMNS.map(([test, scale, digits]) => perOpCell(results, test, s.id, scale, digits))]),
    );
  }
  lines.push("");
  lines.push(
    "The same split into user space + kernel (median of each; user space is the server program, for Deno V8, the " +
      "runtime and the JavaScript; kernel is the system time charged to the server, its system calls and TCP work):",
  );
  lines.push("");
  lines.push(row(["server", "bulk, ns per byte", "ping-pong 1 conn, us", "ping-pong 50, us", "us per connection"]));
  lines.push(row(["---", "---", "---", "---", "---"]));
  for (const s of results.servers) {
    lines.push(
      row([s.label, ...PER_OP_COLUMNS.map(([test, scale, digits]) => splitCell(results, test, s.id, scale, digits))]),
    );
  }
  const baselines = [["c-epoll", "C"], ["node", "Node.js"]].filter(([id]) => results.servers.some((s) => s.id === id));
  if (baselines.length > 0) {
    lines.push("");
    lines.push(
      "Ratios (median of per-round ratios; above 1 is better, except p99 and memory where below 1 is better):",
    );
    lines.push("");
    lines.push(row(["", "bulk", "pp 1 rate", "pp 1 p99", "pp 50 rate", "pp 50 p99", "conns/s", "memory"]));
    lines.push(row(Array(8).fill("---")));
    for (const s of results.servers) {
      for (const [base, name] of baselines) {
        if (s.id === base || (base === "node" && s.id === "c-epoll")) continue;
        const r = (t: TestId, f?: keyof Sample) => {
          const v = ratio(results, t, s.id, base, f);
          return v === undefined ? "-" : v.toFixed(2);
        };
        lines.push(row([
          `${s.label} / ${name}`,
          r("bulk"),
          r("pp1"),
          r("pp1", "p99_us"),
          r("pp50"),
          r("pp50", "p99_us"),
          r("connect"),
          // The C server keeps no per-connection user memory, so a ratio to it says nothing.
          base === "c-epoll" ? "-" : r("memory"),
        ]));
      }
    }
  }
  const features = results.servers.filter((s) => s.feature);
  // The operations features' cost, and what several workers give, are both told against the defaults row.
  const compared = results.servers.filter((s) => s.feature || /^echosrv-w\d+$/.test(s.id));
  if (compared.length > 0 && results.servers.some((s) => s.id === "echosrv")) {
    lines.push("");
    lines.push(
      "Against echosrv's defaults in the same rounds (medians of per-round ratios): what the operations features " +
        "cost, and what --workers gives. Server CPU time per operation (above 1 = costlier; steadier than the " +
        "rates), then the rates (above 1 = faster) and memory per idle connection (above 1 = more):",
    );
    lines.push("");
    lines.push(row([
      "",
      "bulk CPU/byte",
      "pp 1 CPU/rt",
      "pp 50 CPU/rt",
      "CPU/conn",
      "bulk rate",
      "pp 1 rate",
      "pp 50 rate",
      "conns/s",
      "memory",
    ]));
    lines.push(row(Array(10).fill("---")));
    const fixed = (v: number | undefined) => v === undefined ? "-" : v.toFixed(2);
    for (const s of compared) {
      lines.push(row([
        `${s.label} / defaults`,
        ...(["bulk", "pp1", "pp50", "connect"] as TestId[]).map((t) => fixed(cpuRatio(results, t, s.id, "echosrv"))),
        ...(["bulk", "pp1", "pp50", "connect", "memory"] as TestId[]).map((t) =>
          fixed(ratio(results, t, s.id, "echosrv"))
        ),
      ]));
    }
    if (features.length > 0) lines.push("");
    for (const s of features) lines.push(`- ${s.label}: ${s.feature}`);
  }
  const rows = results.servers.filter((s) => s.echosrv || s.feature);
  const goals = rows.map((s) => targets(results, s.id));
  if (goals[0]?.length > 0) {
    lines.push("");
    lines.push("Targets (issue 4: for echosrv's defaults; issue 5: the same with the operations features on):");
    lines.push("");
    lines.push(row(["target", ...rows.map((s) => s.label)]));
    lines.push(row(Array(rows.length + 1).fill("---")));
    goals[0].forEach((goal, i) => {
      lines.push(row([
        goal.what,
        ...goals.map((g) => {
          const { value, holds } = g[i];
          return value === undefined ? "not measured" : `${value.toFixed(2)} ${holds ? "holds" : "MISSED"}`;
        }),
      ]));
    });
  }
  return lines.join("\n");
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function colour(s: ServerInfo): string {
  if (s.id === "c-epoll") return "#7f7f7f";
  if (s.id === "node") return "#3c873a";
  if (s.echosrv) return "#1f5fbf";
  if (s.feature) return "#4f86d9";
  return s.id.startsWith("echosrv") ? "#7fa7e0" : "#c08a2f";
}

/** A chart: one panel per test, one bar per server (median), a whisker for the min-max of the rounds. */
export function renderSvg(results: BenchResults): string {
  const tests = (Object.keys(TITLE) as TestId[]).filter((t) => results.samples[t]);
  const labelWidth = 250, barWidth = 560, width = labelWidth + barWidth + 110;
  const barHeight = 16, gap = 6, panelTop = 26;
  const panelHeight = panelTop + results.servers.length * (barHeight + gap) + 14;
  const header = 44;
  const height = header + tests.length * panelHeight + 24;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  const m = results.machine;
  out.push(
    `<text x="10" y="20" font-size="15" font-weight="bold">echosrv benchmark: medians of ${results.method.rounds} interleaved rounds, whiskers min-max</text>`,
  );
  out.push(
    `<text x="10" y="36" fill="#555">${
      escape(`${m.cpu}, ${m.cores} cores, ${m.kernel}, Deno ${m.deno}, Node.js ${m.node ?? "-"}; ${results.date}`)
    }</text>`,
  );
  tests.forEach((test, p) => {
    const top = header + p * panelHeight;
    out.push(
      `<text x="10" y="${top + 18}" font-weight="bold">${escape(TITLE[test])}${
        test === "memory" ? " (shorter is better)" : ""
      }</text>`,
    );
    const all = results.servers.map((s) => summary(results, test, s.id));
    const scale = Math.max(...all.map((a) => (Number.isFinite(a.max) ? a.max : 0)), 1e-9);
    results.servers.forEach((s, i) => {
      const y = top + panelTop + i * (barHeight + gap);
      const { median, min, max } = all[i];
      out.push(`<text x="${labelWidth - 8}" y="${y + 12}" text-anchor="end">${escape(s.label)}</text>`);
      if (!Number.isFinite(median)) {
        out.push(`<text x="${labelWidth + 4}" y="${y + 12}" fill="#999">not measured</text>`);
        return;
      }
      const w = (median / scale) * barWidth;
      out.push(
        `<rect x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${barHeight}" fill="${colour(s)}"/>`,
      );
      const x1 = labelWidth + (min / scale) * barWidth, x2 = labelWidth + (max / scale) * barWidth;
      const cy = y + barHeight / 2;
      out.push(
        `<path d="M${x1.toFixed(1)} ${cy}H${x2.toFixed(1)}M${x1.toFixed(1)} ${cy - 4}V${cy + 4}M${x2.toFixed(1)} ${
          cy - 4
        }V${cy + 4}" stroke="black" stroke-width="1"/>`,
      );
      out.push(
        `<text x="${(labelWidth + Math.max(w, x2 - labelWidth) + 6).toFixed(1)}" y="${y + 12}">${
          format(test, median)
        }</text>`,
      );
    });
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
