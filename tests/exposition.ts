// exposition: what the tests know of the Prometheus text format (0.0.4). A strict reader of a /metrics page into
// families (HELP, TYPE, samples; a line it cannot read is an error, not skipped), and the naming rules of
// https://prometheus.io/docs/practices/naming/ and https://prometheus.io/docs/practices/histograms/ written as
// checks, so a test fails on a name that parses but breaks a convention (the unit after `_total`, a counter
// without `_total`, a non-base unit), which promtool alone does not catch.

/** One sample line. */
export interface ExpositionSample {
  /** The series name as written (a histogram's carry `_bucket`, `_sum`, `_count`). */
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One metric family: its HELP, TYPE and samples. */
export interface Family {
  name: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  help: string;
  samples: ExpositionSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;

function parseValue(text: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  const value = Number(text);
  if (text.trim() === "" || Number.isNaN(value)) throw new Error(`"${text}" is not a sample value`);
  return value;
}

function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  if (!text) return labels;
  const pair = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)/y;
  let at = 0;
  while (at < text.length) {
    pair.lastIndex = at;
    const match = pair.exec(text);
    if (!match) throw new Error(`cannot read the labels {${text}} at "${text.slice(at)}"`);
    if (match[1] in labels) throw new Error(`label ${match[1]} repeated in {${text}}`);
    labels[match[1]] = match[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    at = pair.lastIndex;
  }
  return labels;
}

/** The family a sample belongs to: its own name, or a histogram's base name. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  if (families.has(name)) return families.get(name);
  const base = name.replace(/_(bucket|sum|count)$/, "");
  const family = families.get(base);
  return family && (family.type === "histogram" || family.type === "summary") ? family : undefined;
}

/**
 * Reads a /metrics page strictly.
 *
 * @param text the body
 * @returns the families, in order
 * @throws {Error} on any line that is not HELP, TYPE, a sample of a declared family, or blank
 */
export function parseExposition(text: string): Family[] {
  const families = new Map<string, Family>();
  const lines = text.split("\n");
  if (lines.at(-1) !== "") throw new Error("the page does not end with a line feed");
  for (const line of lines.slice(0, -1)) {
    if (line === "") continue;
    const help = /^# HELP (\S+) (.*)$/.exec(line);
    if (help) {
      if (families.has(help[1])) throw new Error(`HELP for ${help[1]} written twice`);
      families.set(help[1], { name: help[1], type: "untyped", help: help[2], samples: [] });
      continue;
    }
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      const family = families.get(type[1]);
      if (!family || family.samples.length > 0) throw new Error(`TYPE ${type[1]} without HELP just before it`);
      family.type = type[2] as Family["type"];
      continue;
    }
    if (line.startsWith("#")) throw new Error(`unexpected comment: ${line}`);
    const sample = SAMPLE.exec(line);
    if (!sample) throw new Error(`cannot read the line: ${line}`);
    const family = familyOf(sample[1], families);
    if (!family) throw new Error(`sample ${sample[1]} of no declared family`);
    family.samples.push({ name: sample[1], labels: parseLabels(sample[2]), value: parseValue(sample[3]) });
  }
  return [...families.values()];
}

/** The series names a page exposes (a histogram's `_bucket`, `_sum` and `_count` included), for PromQL checks. */
export function seriesNames(families: Family[]): Set<string> {
  return new Set(families.flatMap((f) => f.samples.map((s) => s.name)));
}

/** Units that are not base units, with the base unit to use instead. */
const NON_BASE_UNITS: Record<string, string> = {
  milliseconds: "seconds",
  microseconds: "seconds",
  nanoseconds: "seconds",
  ms: "seconds",
  us: "seconds",
  minutes: "seconds",
  hours: "seconds",
  days: "seconds",
  kilobytes: "bytes",
  megabytes: "bytes",
  gigabytes: "bytes",
  kib: "bytes",
  mib: "bytes",
  bits: "bytes",
  percent: "ratio",
};

/** Base units that go last in a name (before `_total` in a counter). */
const UNITS = ["seconds", "bytes", "ratio", "volts", "amperes", "joules", "grams", "meters", "celsius"];

/**
 * Checks families against Prometheus's naming and histogram conventions.
 *
 * @param families the parsed page
 * @param prefixes the allowed application prefixes (`echosrv_`) besides the standard `process_`
 * @returns one message per broken rule; empty when all hold
 */
export function namingViolations(families: Family[], prefixes: string[] = ["echosrv_"]): string[] {
  const problems: string[] = [];
  for (const { name, type, help, samples } of families) {
    const say = (what: string) => problems.push(`${name}: ${what}`);
    if (!NAME.test(name) || !/^[a-z][a-z0-9_]*$/.test(name) || name.includes("__")) {
      say("not lower snake_case (colons are for recording rules)");
    }
    if (![...prefixes, "process_"].some((p) => name.startsWith(p))) say(`no application prefix (${prefixes})`);
    if (help.trim() === "") say("empty HELP");
    if (type === "untyped") say("no TYPE");
    if (type === "counter" && !name.endsWith("_total")) say("a counter's name must end in _total");
    if (type !== "counter" && name.endsWith("_total")) say("only counters end in _total");
    if (/_(bucket|sum|count)$/.test(name)) say("_bucket, _sum and _count are reserved for histogram series");
    if (name.endsWith("_info") && (type !== "gauge" || samples.some((s) => s.value !== 1))) {
      say("an _info metric is a gauge whose value is 1");
    }
    if (name.includes("_by_")) say("label names do not belong in the metric name");
    const words = name.split("_");
    for (const word of words) {
      if (word in NON_BASE_UNITS) say(`"${word}" is not a base unit: use ${NON_BASE_UNITS[word]}`);
    }
    const stem = name.replace(/_total$/, "");
    for (const unit of UNITS) {
      if (words.includes(unit) && !stem.endsWith(`_${unit}`)) {
        say(`the unit "${unit}" goes last${type === "counter" ? ", just before _total" : ""}`);
      }
    }
    for (const sample of samples) {
      for (const [label, value] of Object.entries(sample.labels)) {
        if (!/^[a-z][a-z0-9_]*$/.test(label)) say(`label ${label} is not lower snake_case`);
        if (label === "le" && type !== "histogram") say("le is reserved for histogram buckets");
        if (label === "quantile" && type !== "summary") say("quantile is reserved for summaries");
        if (value === "") say(`label ${label} is empty`);
      }
    }
    if (type === "histogram") problems.push(...histogramViolations(name, samples));
  }
  return problems;
}

/** A histogram's own rules: increasing `le`, cumulative counts, `+Inf` equal to `_count`, a `_sum`. */
function histogramViolations(name: string, samples: ExpositionSample[]): string[] {
  const problems: string[] = [];
  const buckets = samples.filter((s) => s.name === `${name}_bucket`);
  const count = samples.find((s) => s.name === `${name}_count`);
  if (!samples.some((s) => s.name === `${name}_sum`)) problems.push(`${name}: no _sum`);
  if (!count) problems.push(`${name}: no _count`);
  const bounds = buckets.map((b) => parseValue(b.labels.le ?? ""));
  for (let i = 1; i < buckets.length; i++) {
    if (!(bounds[i] > bounds[i - 1])) problems.push(`${name}: le bounds do not increase at ${bounds[i]}`);
    if (buckets[i].value < buckets[i - 1].value) problems.push(`${name}: bucket ${bounds[i]} is not cumulative`);
  }
  if (bounds.at(-1) !== Infinity) problems.push(`${name}: the last bucket is not le="+Inf"`);
  if (count && buckets.at(-1)?.value !== count.value) problems.push(`${name}: the +Inf bucket differs from _count`);
  if (bounds.some((b) => b < 0) || bounds.length < 2) problems.push(`${name}: odd bucket bounds ${bounds}`);
  return problems;
}
