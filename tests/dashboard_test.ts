// deploy/grafana-dashboard.json against the server itself: every metric name in every PromQL query of the dashboard
// (panels and variables) must be one a running echosrv really exposes, every family echosrv exposes must be on the
// dashboard, the queries must be PromQL that Prometheus's own parser accepts (promtool check rules, where promtool
// is present), and the JSON must hold together as Grafana reads it (unique panel ids, a 24-column grid, every
// variable it uses defined). No Grafana is needed (none is packaged for Debian).

import assert from "node:assert/strict";
import { parseExposition, seriesNames } from "./exposition.ts";
import { echoSession, hasCommand, metricsPortOf, ROOT, SIGTERM_EXIT_CODE, spawnServer, within } from "./helpers.ts";

const DASHBOARD = `${ROOT}deploy/grafana-dashboard.json`;
const PROMTOOL = Deno.env.get("PROMTOOL") ?? "promtool";
const havePromtool = await hasCommand(PROMTOOL, ["--version"]);

/** Metrics that exist only where Deno may read /proc (Linux under --allow-all): see lib/process_metrics.ts. */
const PROC_ONLY = ["process_open_fds", "process_max_fds", "process_virtual_memory_bytes"];

interface Target {
  expr: string;
  refId: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid?: string };
  targets?: Target[];
}
interface Dashboard {
  title: string;
  uid: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: string | { query: string } }> };
}

function loadDashboard(): Dashboard {
  return JSON.parse(Deno.readTextFileSync(DASHBOARD));
}

/** PromQL words that are not metric names: keywords, and operators that take no parentheses. */
const KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "offset",
  "inf",
  "nan",
  "start",
  "end",
]);

/**
 * The metric names a PromQL expression selects (https://prometheus.io/docs/prometheus/latest/querying/basics/):
 * what is left once strings, label matchers, ranges, grouping clauses, Grafana's variables and numbers are taken
 * out, and words followed by `(` (functions and aggregations) and keywords are skipped.
 *
 * @param expr the expression, with Grafana variables in it
 * @returns the names, in order of appearance, without repeats
 */
export function metricNamesIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\$\{[^}]*\}|\$[A-Za-z_]\w*/g, " ")
    .replace(/(?<![A-Za-z_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?/g, " ");
  const names: string[] = [];
  for (const match of bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = bare.slice(match.index! + match[0].length).trimStart();
    if (after.startsWith("(") || KEYWORDS.has(match[0].toLowerCase())) continue;
    if (!names.includes(match[0])) names.push(match[0]);
  }
  return names;
}

/** Every PromQL expression of the dashboard: panel targets, and the metric of each `label_values(...)` variable. */
function expressionsOf(dashboard: Dashboard): Array<{ where: string; expr: string }> {
  const found: Array<{ where: string; expr: string }> = [];
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) found.push({ where: `panel "${panel.title}"`, expr: target.expr });
  }
  for (const variable of dashboard.templating.list.filter((v) => v.type === "query")) {
    const query = typeof variable.query === "string" ? variable.query : variable.query.query;
    const inner = /^label_values\((.*),\s*\w+\)$/.exec(query);
    found.push({ where: `variable $${variable.name}`, expr: inner ? inner[1] : query });
  }
  return found;
}

/** The names the dashboard asks for that the page does not have, each with where it is asked. */
function unknownMetrics(dashboard: Dashboard, exposed: Set<string>): string[] {
  return expressionsOf(dashboard).flatMap(({ where, expr }) =>
    metricNamesIn(expr).filter((name) => !exposed.has(name)).map((name) => `${where}: ${name} in ${expr}`)
  );
}

Deno.test("metricNamesIn finds the metrics of a PromQL expression and nothing else", () => {
  assert.deepEqual(
    metricNamesIn(
      'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job=~"$job", le!="x{y}"}[$__rate_interval])))',
    ),
    ["a_seconds_bucket"],
  );
  assert.deepEqual(
    metricNamesIn("sum(rate(a_total[5m] offset 1h)) by (instance) / on (instance) group_left b_info * 8 + 1e3"),
    ["a_total", "b_info"],
  );
  assert.deepEqual(metricNamesIn('time() - min(process_start_time_seconds{instance=~"$instance"})'), [
    "process_start_time_seconds",
  ]);
  assert.deepEqual(metricNamesIn("x_total and ignoring(reason) y_total or vector(0)"), ["x_total", "y_total"]);
  assert.deepEqual(metricNamesIn("max by (version) (c_info) > bool 0"), ["c_info"]);
});

Deno.test("a dashboard that names a metric echosrv does not expose fails the check (it can fail)", () => {
  const dashboard = loadDashboard();
  const exposed = new Set(expressionsOf(dashboard).flatMap(({ expr }) => metricNamesIn(expr)));
  assert.deepEqual(unknownMetrics(dashboard, exposed), []);
  dashboard.panels.find((p) => p.targets)!.targets![0].expr = "rate(echosrv_bytes_echoed_total[5m])";
  assert.match(unknownMetrics(dashboard, exposed).join("\n"), /echosrv_bytes_echoed_total/);
});

Deno.test("deploy/grafana-dashboard.json: every metric it queries is one a running echosrv exposes, and it shows every echosrv family", async () => {
  // --allow-all on Linux, so that the /proc metrics exist too; --udp, so the UDP families have their series.
  const linux = Deno.build.os === "linux";
  await using server = await spawnServer(
    ["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--udp"],
    linux ? { runArgs: ["run", "--allow-all", "--unstable-net", "main.ts"] } : {},
  );
  const port = await metricsPortOf(server);
  await echoSession("127.0.0.1", server.port, new Uint8Array(100));
  const response = await within(10_000, "GET /metrics", fetch(`http://127.0.0.1:${port}/metrics`));
  const families = parseExposition(await response.text());
  const exposed = seriesNames(families);
  if (!linux) { for (const name of PROC_ONLY) exposed.add(name); // documented as Linux-only
   }
  const dashboard = loadDashboard();
  assert.deepEqual(unknownMetrics(dashboard, exposed), [], "names the server does not expose");
  const used = new Set(expressionsOf(dashboard).flatMap(({ expr }) => metricNamesIn(expr)));
  const unused = families.map((f) => f.name).filter((name) =>
    ![...used].some((u) => u === name || u === `${name}_bucket` || u === `${name}_sum` || u === `${name}_count`)
  );
  assert.deepEqual(unused, [], "families with no panel");
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("deploy/grafana-dashboard.json holds together: ids, grid, data source, variables, refIds", () => {
  const dashboard = loadDashboard();
  assert.equal(dashboard.uid, "echosrv");
  assert.ok(dashboard.schemaVersion >= 36, "a schema current Grafana reads without migrating");
  const ids = dashboard.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
  const variables = new Set(dashboard.templating.list.map((v) => v.name));
  for (const panel of dashboard.panels) {
    const { x, w, h } = panel.gridPos;
    assert.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0, `${panel.title}: inside the 24-column grid`);
    if (panel.type === "row") continue;
    assert.equal(panel.datasource?.uid, "${datasource}", `${panel.title}: the data source variable`);
    const refIds = (panel.targets ?? []).map((t) => t.refId);
    assert.ok(refIds.length > 0, `${panel.title}: has a query`);
    assert.equal(new Set(refIds).size, refIds.length, `${panel.title}: refIds are unique`);
  }
  const text = Deno.readTextFileSync(DASHBOARD);
  for (const [, name] of text.matchAll(/\$\{?([A-Za-z_]\w*)/g)) {
    assert.ok(name.startsWith("__") || variables.has(name), `$${name} is a defined variable`);
  }
});

Deno.test({
  name: "deploy/grafana-dashboard.json: every query is PromQL that Prometheus parses (promtool check rules)",
  ignore: !havePromtool,
  fn: async () => {
    // Grafana fills in the variables before Prometheus sees a query; do the same with plausible values.
    const rules = expressionsOf(loadDashboard()).map(({ expr }, i) => ({
      record: `dashboard:query_${i}`,
      expr: expr.replaceAll("$__rate_interval", "5m").replace(/\$\{?[A-Za-z_]\w*\}?/g, ".*"),
    }));
    const dir = await Deno.makeTempDir({ prefix: "echosrv-dashboard-" });
    try {
      // YAML is a superset of JSON, so the rule file can be written as JSON.
      await Deno.writeTextFile(`${dir}/rules.yml`, JSON.stringify({ groups: [{ name: "dashboard", rules }] }));
      const out = await within(
        30_000,
        "promtool check rules",
        new Deno.Command(PROMTOOL, { args: ["check", "rules", `${dir}/rules.yml`], stdout: "piped", stderr: "piped" })
          .output(),
      );
      const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, said);
      assert.match(said, new RegExp(`SUCCESS: ${rules.length} rules found`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
if (!havePromtool) console.log("dashboard PromQL syntax test skipped: promtool not found (CI unpacks it; see .ci/run)");
