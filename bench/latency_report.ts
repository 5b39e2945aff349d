// latency_report: what the benchmark says about latency under load and about `--workers` scaling (bench/load.ts
// measures them): Markdown tables of medians over the interleaved rounds with ratios against the C epoll server, the
// targets of issue 15, a percentile plot in the shape HDR histograms made familiar (latency against percentile on
// a "nines" axis, one panel per connection count, after the warm-up and in the first second apart), and a scaling
// plot (round trips/s against the worker count, echosrv and the C server with as many threads).

import type { LatencySample } from "./load.ts";
import { percentileOf } from "./load.ts";
import type { BenchResults, ServerInfo } from "./report.ts";
import { stats } from "./report.ts";

/** A percentile curve: [percentile (0..1), latency in microseconds] points, the last one the maximum. */
export type Curve = Array<[number, number]>;

/** Everything bench/results-latency.json holds. */
export interface LatencyResults {
  date: string;
  machine: BenchResults["machine"];
  method: Record<string, unknown>;
  servers: ServerInfo[];
  /** The connection counts measured. */
  conns: number[];
  /** By connection count, then server id: one sample per round. */
  samples: Record<string, Record<string, LatencySample[]>>;
  /** By connection count, then server id: the percentile curves of all rounds' round trips together. */
  curves: Record<string, Record<string, { steady: Curve; burst: Curve }>>;
}

/** Everything bench/results-scaling.json holds. */
export interface ScalingResults {
  date: string;
  machine: BenchResults["machine"];
  method: Record<string, unknown>;
  /** The worker (and C thread) counts measured. */
  workers: number[];
  /** By worker count, then "echosrv" or "c-epoll": one sample per round. */
  samples: Record<string, Record<string, LatencySample[]>>;
}

/**
 * The percentile curve of a histogram, at points evenly spaced on the "nines" axis (-log10(1 - p), so 90%, 99%,
 * 99.9% ... are equally far apart) down to a single round trip, ending with the maximum.
 */
export function curveOf(hist: Array<[number, number]>): Curve {
  const total = hist.reduce((n, [, c]) => n + c, 0);
  if (total === 0) return [];
  const curve: Curve = [];
  const last = Math.log10(total);
  for (let x = 0; x < last; x += 0.05) {
    const p = 1 - 10 ** -x;
    curve.push([Number(p.toFixed(8)), percentileOf(hist, p)]);
  }
  curve.push([1, hist[hist.length - 1][0]]);
  return curve;
}

/**
 * JSON with two-space indentation, except that arrays of numbers (a curve's points, the load processes' CPU use) stay
 * on one line: the latency results hold thousands of them.
 */
export function compactJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(
    /\[\s*(-?[\d.e+-]+|null)((?:,\s*(?:-?[\d.e+-]+|null))*)\s*\]/g,
    (_, first: string, rest: string) => `[${first}${rest.replace(/,\s*/g, ", ")}]`,
  ) + "\n";
}

function row(cells: string[]): string {
  return `| ${cells.join(" | ")} |`;
}

function ms(us: number): string {
  if (!Number.isFinite(us)) return "-";
  const v = us / 1000;
  return v >= 100 ? `${Math.round(v)}` : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function rate(v: number): string {
  if (!Number.isFinite(v)) return "-";
  return v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : `${Math.round(v)}`;
}

type Field = (s: LatencySample) => number;

const FIELDS = {
  rate: (s: LatencySample) => s.round_trips_per_s,
  p50: (s: LatencySample) => s.p50_us,
  p99: (s: LatencySample) => s.p99_us,
  p999: (s: LatencySample) => s.p999_us,
  max: (s: LatencySample) => s.max_us,
  burstP50: (s: LatencySample) => s.burst.p50_us,
  burstP99: (s: LatencySample) => s.burst.p99_us,
  burstP999: (s: LatencySample) => s.burst.p999_us,
  burstMax: (s: LatencySample) => s.burst.max_us,
  cpu: (s: LatencySample) => (s.server_busy ?? NaN) / s.round_trips_per_s * 1e6,
} satisfies Record<string, Field>;

function okOf(samples: LatencySample[] | undefined): LatencySample[] {
  return (samples ?? []).filter((s) => s.ok);
}

function medianOf(samples: LatencySample[] | undefined, field: Field): number {
  return stats(okOf(samples).map(field)).median;
}

/** The median of per-round ratios a/b (rounds are interleaved, so a round's pair shared its conditions). */
export function latencyRatio(
  a: LatencySample[] | undefined,
  b: LatencySample[] | undefined,
  field: Field,
): number | undefined {
  const per: number[] = [];
  for (let i = 0; i < Math.min(a?.length ?? 0, b?.length ?? 0); i++) {
    if (a![i].ok && b![i].ok) per.push(field(a![i]) / field(b![i]));
  }
  const { median } = stats(per);
  return Number.isFinite(median) ? median : undefined;
}

function fixed(v: number | undefined): string {
  return v === undefined ? "-" : v >= 100 ? `${Math.round(v)}` : v.toFixed(2);
}

function withRange(samples: LatencySample[] | undefined, field: Field): string {
  const { median, min, max } = stats(okOf(samples).map(field));
  if (!Number.isFinite(median)) return "-";
  return min === max ? ms(median) : `${ms(median)} (${ms(min)}-${ms(max)})`;
}

/** How busy the load processes were: the busiest one's median, and their number. */
function clientsCell(samples: LatencySample[] | undefined): string {
  const ok = okOf(samples);
  if (ok.length === 0) return "-";
  const busiest = stats(ok.map((s) => Math.max(...s.client_busy))).median;
  const others = stats(ok.map((s) => s.others ?? NaN)).median;
  return `${ok[0].client_busy.length} x, busiest ${Math.round(busiest * 100)}%; others ${
    Number.isFinite(others) ? `${Math.round(others * 100)}%` : "?"
  }`;
}

/** The targets of issue 15 for echosrv, with the measured ratios. */
export function latencyTargets(
  results: LatencyResults,
  id = "echosrv",
): Array<{ what: string; value: number | undefined; holds?: boolean }> {
  const out: Array<{ what: string; value: number | undefined; holds?: boolean }> = [];
  const add = (what: string, value: number | undefined, holds: (v: number) => boolean) =>
    out.push({ what, value, holds: value === undefined ? undefined : holds(value) });
  const at = (conns: number, server: string) => results.samples[conns]?.[server];
  const withC = results.servers.some((s) => s.id === "c-epoll");
  for (const conns of results.conns.filter((c) => c >= 400 && withC)) {
    add(`${conns} conns: p99 <= 2x C`, latencyRatio(at(conns, id), at(conns, "c-epoll"), FIELDS.p99), (v) => v <= 2);
    add(`${conns} conns: p999 <= 3x C`, latencyRatio(at(conns, id), at(conns, "c-epoll"), FIELDS.p999), (v) => v <= 3);
    add(
      `${conns} conns, first second: p99 <= 2x C`,
      latencyRatio(at(conns, id), at(conns, "c-epoll"), FIELDS.burstP99),
      (v) => v <= 2,
    );
    add(
      `${conns} conns, first second: p999 <= 3x C`,
      latencyRatio(at(conns, id), at(conns, "c-epoll"), FIELDS.burstP999),
      (v) => v <= 3,
    );
    add(
      `${conns} conns: round trips/s >= 0.70x C`,
      latencyRatio(at(conns, id), at(conns, "c-epoll"), FIELDS.rate),
      (v) => v >= 0.7,
    );
  }
  if (results.conns.includes(50) && results.servers.some((s) => s.id === "echosrv-no-setting")) {
    add(
      "50 conns: round trips/s >= 0.95x without the setting",
      latencyRatio(at(50, id), at(50, "echosrv-no-setting"), FIELDS.rate),
      (v) => v >= 0.95,
    );
    add(
      "50 conns: p99 <= 1.10x without the setting",
      latencyRatio(at(50, id), at(50, "echosrv-no-setting"), FIELDS.p99),
      (v) => v <= 1.1,
    );
  }
  return out;
}

/** The latency part as Markdown: per connection count, the medians, the first second, the ratios; the targets. */
export function renderLatencyTable(results: LatencyResults): string {
  const m = results.method;
  const lines: string[] = [];
  lines.push(
    `Latency under load: 64-byte ping-pong, one message in flight per connection; ${m.rounds} interleaved ` +
      `round(s); in each, every connection is opened at once, the first ${m.burst} s (connection set-up ` +
      `included in each first round trip) is reported apart, then ${m.warmup} s of warm-up and ${m.seconds} s ` +
      `measured. Medians of the rounds (min-max). Milliseconds. ${m.placement}. ` +
      `${
        (m.ioEvents as { value: number; source: string }).value
      } is echosrv's ${"DENO_TOKIO_MAX_IO_EVENTS_PER_TICK"}, ` +
      `from ${(m.ioEvents as { value: number; source: string }).source}.`,
  );
  for (const conns of results.conns) {
    const at = results.samples[conns] ?? {};
    lines.push("");
    lines.push(`**${conns} connections**`);
    lines.push("");
    lines.push(row([
      "server",
      "round trips/s",
      "p50",
      "p99",
      "p999",
      "max",
      "starved conns",
      "first second: p50 / p99 / p999 / max",
      "server CPU us per round trip",
      "load processes",
    ]));
    lines.push(row(Array(10).fill("---")));
    for (const s of results.servers) {
      const samples = at[s.id];
      if (!samples) continue;
      const ok = okOf(samples);
      const starved = stats(ok.map((x) => x.starved_conns)).median;
      lines.push(row([
        s.label,
        rate(medianOf(samples, FIELDS.rate)),
        ms(medianOf(samples, FIELDS.p50)),
        withRange(samples, FIELDS.p99),
        withRange(samples, FIELDS.p999),
        ms(medianOf(samples, FIELDS.max)),
        Number.isFinite(starved) ? `${starved}` : "-",
        [FIELDS.burstP50, FIELDS.burstP99, FIELDS.burstP999, FIELDS.burstMax].map((f) => ms(medianOf(samples, f)))
          .join(" / "),
        medianOf(samples, FIELDS.cpu).toFixed(2),
        clientsCell(samples),
      ]));
    }
  }
  if (results.servers.some((s) => s.id === "c-epoll")) {
    lines.push("");
    lines.push(
      "Against the C epoll server (medians of per-round ratios; rate above 1 is better, latency below 1 is better):",
    );
    lines.push("");
    const heads = results.conns.flatMap((c) => [`${c}: rate`, `${c}: p99`, `${c}: p999`, `${c}, 1st s: p999`]);
    lines.push(row(["", ...heads]));
    lines.push(row(Array(heads.length + 1).fill("---")));
    for (const s of results.servers) {
      if (s.id === "c-epoll") continue;
      lines.push(row([
        `${s.label} / C`,
        ...results.conns.flatMap((c) => {
          const a = results.samples[c]?.[s.id], b = results.samples[c]?.["c-epoll"];
          return [FIELDS.rate, FIELDS.p99, FIELDS.p999, FIELDS.burstP999].map((f) => fixed(latencyRatio(a, b, f)));
        }),
      ]));
    }
  }
  const settings = results.servers.filter((s) => s.id.startsWith("echosrv") && s.id !== "echosrv-no-setting");
  if (results.servers.some((s) => s.id === "echosrv-no-setting") && settings.length > 0) {
    lines.push("");
    lines.push(
      "What the setting changes: echosrv with it against echosrv without it (Deno's default, 1024), medians of " +
        "per-round ratios (rate above 1 is better; CPU per round trip and latency below 1 are better):",
    );
    lines.push("");
    const heads = results.conns.flatMap((c) => [`${c}: rate`, `${c}: CPU/rt`, `${c}: p99`, `${c}: p999`]);
    lines.push(row(["", ...heads]));
    lines.push(row(Array(heads.length + 1).fill("---")));
    for (const s of settings) {
      lines.push(row([
        `${s.label} / without`,
        ...results.conns.flatMap((c) => {
          const a = results.samples[c]?.[s.id], b = results.samples[c]?.["echosrv-no-setting"];
          return [FIELDS.rate, FIELDS.cpu, FIELDS.p99, FIELDS.p999].map((f) => fixed(latencyRatio(a, b, f)));
        }),
      ]));
    }
  }
  const goals = latencyTargets(results);
  if (goals.length > 0 && results.servers.some((s) => s.id === "echosrv")) {
    lines.push("");
    lines.push("Targets (issue 15, for echosrv on one worker):");
    lines.push("");
    lines.push(row(["target", "echosrv"]));
    lines.push(row(["---", "---"]));
    for (const g of goals) {
      lines.push(
        row([g.what, g.value === undefined ? "not measured" : `${fixed(g.value)} ${g.holds ? "holds" : "MISSED"}`]),
      );
    }
  }
  return lines.join("\n");
}

/** The scaling part as Markdown. */
export function renderScalingTable(results: ScalingResults): string {
  const m = results.method;
  const lines: string[] = [];
  lines.push(
    `Scaling: ${m.conns} connections of 64-byte ping-pong, ${m.rounds} interleaved round(s) of ${m.seconds} s ` +
      `after ${Number(m.burst) + Number(m.warmup)} s (connection burst and warm-up); ${m.placement}. echosrv ` +
      "--workers N against the C epoll server with N threads, each with its own SO_REUSEPORT listener. Medians " +
      "(min-max).",
  );
  lines.push("");
  lines.push(row([
    "N",
    "echosrv round trips/s",
    "C round trips/s",
    "echosrv / C",
    "echosrv speed-up",
    "C speed-up",
    "echosrv p99 ms",
    "C p99 ms",
    "server CPU us per round trip (echosrv / C)",
    "load processes (echosrv run)",
  ]));
  lines.push(row(Array(10).fill("---")));
  const one = results.samples[results.workers[0]] ?? {};
  for (const n of results.workers) {
    const at = results.samples[n] ?? {};
    const e = at["echosrv"], c = at["c-epoll"];
    const range = (samples: LatencySample[] | undefined) => {
      const { median, min, max } = stats(okOf(samples).map(FIELDS.rate));
      return Number.isFinite(median) ? `${rate(median)} (${rate(min)}-${rate(max)})` : "-";
    };
    const speedUp = (samples: LatencySample[] | undefined, base: LatencySample[] | undefined) => {
      const v = medianOf(samples, FIELDS.rate) / medianOf(base, FIELDS.rate);
      return Number.isFinite(v) ? `${v.toFixed(2)}x` : "-";
    };
    lines.push(row([
      `${n}`,
      range(e),
      range(c),
      fixed(latencyRatio(e, c, FIELDS.rate)),
      speedUp(e, one["echosrv"]),
      speedUp(c, one["c-epoll"]),
      ms(medianOf(e, FIELDS.p99)),
      ms(medianOf(c, FIELDS.p99)),
      `${medianOf(e, FIELDS.cpu).toFixed(2)} / ${medianOf(c, FIELDS.cpu).toFixed(2)}`,
      clientsCell(e),
    ]));
  }
  return lines.join("\n");
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A colour per server, stable across the plots. */
function colourOf(id: string, index: number): string {
  const fixedColours: Record<string, string> = {
    "c-epoll": "#000000",
    node: "#3c873a",
    "deno-node": "#8fbf3f",
    "deno-bare": "#c08a2f",
    "deno-bare-set": "#e6b450",
    echosrv: "#1f5fbf",
    "echosrv-no-setting": "#d62728",
  };
  const spare = ["#9467bd", "#17becf", "#e377c2", "#7f7f7f", "#bcbd22", "#8c564b"];
  return fixedColours[id] ?? spare[index % spare.length];
}

function machineLine(results: { machine: BenchResults["machine"]; date: string; method: Record<string, unknown> }) {
  const m = results.machine;
  return `${m.cpu}, ${m.cores} cores, ${m.kernel}, Deno ${m.deno}; ${results.date.slice(0, 16).replace("T", " ")} UTC` +
    `${results.method.smoke ? " (smoke run: too short to mean anything)" : ""}`;
}

/**
 * The percentile plot: one panel per connection count and phase (after the warm-up; the first second with the
 * connection set-up), latency on a log scale against percentile on a "nines" axis, one line per server.
 */
export function renderLatencySvg(results: LatencyResults): string {
  const panelW = 430, panelH = 250, left = 70, top = 90, gapX = 60, gapY = 70, legendH = 22;
  const servers = results.servers.filter((s) => results.conns.some((c) => results.curves[c]?.[s.id]));
  const rows = results.conns.length;
  const width = left + 2 * panelW + gapX + 20;
  const legendRows = Math.ceil(servers.length / 2);
  const height = top + rows * (panelH + gapY) + legendRows * legendH + 20;
  const all = results.conns.flatMap((c) =>
    servers.flatMap((s) => {
      const curve = results.curves[c]?.[s.id];
      return curve ? [...curve.steady, ...curve.burst].map(([, us]) => us) : [];
    })
  ).filter((us) => us > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.max(1, Math.min(...all)))),
    hi = 10 ** Math.ceil(Math.log10(Math.max(...all, 10)));
  const maxNines = Math.max(
    3,
    ...results.conns.flatMap((c) =>
      servers.flatMap((s) => {
        const curve = results.curves[c]?.[s.id];
        return curve
          ? [curve.steady, curve.burst].map((k) => (k.length > 1 ? -Math.log10(1 - k[k.length - 2][0]) : 0))
          : [];
      })
    ),
  );
  const xMax = Math.ceil(maxNines) + 1; // the maximum is drawn one "nine" after the last whole one
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="11">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(
    `<text x="10" y="20" font-size="15" font-weight="bold">echosrv benchmark: latency by percentile under load ` +
      `(64-byte ping-pong, all rounds together)</text>`,
  );
  out.push(`<text x="10" y="38" fill="#555">${escape(machineLine(results))}</text>`);
  out.push(
    `<text x="10" y="54" fill="#555">${
      escape(
        `${results.method.placement}. Left: after ${results.method.warmup} s of warm-up; right: the first ` +
          `${results.method.burst} s, connection set-up included. Lower is better.`,
      )
    }</text>`,
  );
  const yOf = (us: number, y0: number) =>
    y0 + panelH - (Math.log10(Math.max(us, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * panelH;
  results.conns.forEach((conns, r) => {
    (["steady", "burst"] as const).forEach((phase, col) => {
      const x0 = left + col * (panelW + gapX), y0 = top + r * (panelH + gapY);
      const xOf = (p: number) => x0 + Math.min(p >= 1 ? xMax : -Math.log10(1 - p), xMax) / xMax * panelW;
      out.push(
        `<text x="${x0}" y="${y0 - 8}" font-weight="bold">${conns} connections, ${
          phase === "steady" ? "after warm-up" : `first ${results.method.burst} s with set-up`
        }</text>`,
      );
      out.push(`<rect x="${x0}" y="${y0}" width="${panelW}" height="${panelH}" fill="none" stroke="#999"/>`);
      for (let d = Math.log10(lo); d <= Math.log10(hi); d++) {
        const y = yOf(10 ** d, y0);
        const label = 10 ** d >= 1000 ? `${10 ** d / 1000} ms` : `${10 ** d} us`;
        out.push(`<path d="M${x0} ${y.toFixed(1)}H${x0 + panelW}" stroke="#eee"/>`);
        out.push(`<text x="${x0 - 4}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#555">${label}</text>`);
      }
      for (let nines = 0; nines <= Math.ceil(maxNines); nines++) {
        const x = x0 + nines / xMax * panelW;
        const label = nines === 0 ? "0%" : `${(100 - 100 * 10 ** -nines).toFixed(Math.max(0, nines - 2))}%`;
        out.push(`<path d="M${x.toFixed(1)} ${y0}V${y0 + panelH}" stroke="#eee"/>`);
        out.push(`<text x="${x.toFixed(1)}" y="${y0 + panelH + 14}" text-anchor="middle" fill="#555">${label}</text>`);
      }
      out.push(
        `<text x="${x0 + panelW}" y="${y0 + panelH + 14}" text-anchor="end" fill="#555">max</text>`,
      );
      servers.forEach((s, i) => {
        const curve = results.curves[conns]?.[s.id]?.[phase];
        if (!curve || curve.length === 0) return;
        const d = curve.map(([p, us], k) => `${k === 0 ? "M" : "L"}${xOf(p).toFixed(1)} ${yOf(us, y0).toFixed(1)}`)
          .join("");
        const width = s.id === "echosrv" || s.id === "c-epoll" ? 2.2 : 1.3;
        out.push(`<path d="${d}" fill="none" stroke="${colourOf(s.id, i)}" stroke-width="${width}"/>`);
      });
    });
  });
  const legendTop = top + rows * (panelH + gapY) - 20;
  servers.forEach((s, i) => {
    const x = left + (i % 2) * (panelW + gapX), y = legendTop + Math.floor(i / 2) * legendH;
    out.push(`<path d="M${x} ${y}h24" stroke="${colourOf(s.id, i)}" stroke-width="3"/>`);
    out.push(`<text x="${x + 30}" y="${y + 4}">${escape(s.label)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** The scaling plot: round trips/s against the worker count, echosrv and the C server, with each run's min-max. */
export function renderScalingSvg(results: ScalingResults): string {
  const width = 900, height = 430, left = 80, top = 70, plotW = 700, plotH = 290;
  const series = [
    { id: "c-epoll", label: "C epoll, N threads, SO_REUSEPORT", colour: "#000000" },
    { id: "echosrv", label: "echosrv --workers N", colour: "#1f5fbf" },
  ];
  const values = results.workers.flatMap((n) =>
    series.flatMap((s) => okOf(results.samples[n]?.[s.id]).map(FIELDS.rate))
  );
  const top_ = Math.max(...values, 1) * 1.1;
  const step = 10 ** Math.floor(Math.log10(top_ / 2)) * (top_ / 10 ** Math.floor(Math.log10(top_)) > 5 ? 2 : 1);
  const yMax = Math.ceil(top_ / step) * step;
  const xOf = (i: number) =>
    left + (results.workers.length === 1 ? plotW / 2 : i / (results.workers.length - 1) * plotW);
  const yOf = (v: number) => top + plotH - v / yMax * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="11">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(
    `<text x="10" y="20" font-size="15" font-weight="bold">echosrv benchmark: --workers scaling, ${results.method.conns} ` +
      `connections of 64-byte ping-pong</text>`,
  );
  out.push(`<text x="10" y="38" fill="#555">${escape(machineLine(results))}</text>`);
  out.push(`<text x="10" y="54" fill="#555">${escape(`${results.method.placement}. Medians, bars min-max.`)}</text>`);
  out.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
  for (let v = 0; v <= yMax; v += step) {
    const y = yOf(v);
    out.push(`<path d="M${left} ${y.toFixed(1)}H${left + plotW}" stroke="#eee"/>`);
    out.push(`<text x="${left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#555">${rate(v)}</text>`);
  }
  results.workers.forEach((n, i) => {
    out.push(
      `<text x="${xOf(i).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle" fill="#555">${n}</text>`,
    );
  });
  out.push(
    `<text x="${left + plotW / 2}" y="${top + plotH + 34}" text-anchor="middle">N (echosrv workers; C threads)</text>`,
  );
  out.push(
    `<text x="16" y="${top + plotH / 2}" transform="rotate(-90 16 ${top + plotH / 2})" text-anchor="middle">` +
      "round trips/s</text>",
  );
  series.forEach((s, k) => {
    const points = results.workers.map((n, i) => {
      const { median, min, max } = stats(okOf(results.samples[n]?.[s.id]).map(FIELDS.rate));
      return { x: xOf(i), median, min, max };
    }).filter((p) => Number.isFinite(p.median));
    if (points.length === 0) return;
    out.push(
      `<path d="${points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)} ${yOf(p.median).toFixed(1)}`).join("")}" ` +
        `fill="none" stroke="${s.colour}" stroke-width="2"/>`,
    );
    for (const p of points) {
      out.push(`<circle cx="${p.x.toFixed(1)}" cy="${yOf(p.median).toFixed(1)}" r="3.5" fill="${s.colour}"/>`);
      out.push(
        `<path d="M${p.x.toFixed(1)} ${yOf(p.min).toFixed(1)}V${yOf(p.max).toFixed(1)}" stroke="${s.colour}"/>`,
      );
      out.push(
        `<text x="${(p.x + 6).toFixed(1)}" y="${(yOf(p.median) + (k ? 14 : -6)).toFixed(1)}" fill="${s.colour}">${
          rate(p.median)
        }</text>`,
      );
    }
  });
  // The legend, under the plot.
  series.forEach((s, k) => {
    const x = left + k * 280, y = height - 14;
    out.push(`<path d="M${x} ${y - 4}h24" stroke="${s.colour}" stroke-width="3"/>`);
    out.push(`<text x="${x + 30}" y="${y}">${escape(s.label)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
