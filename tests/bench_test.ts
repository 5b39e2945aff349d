// The benchmark's smoke run (`deno task bench --smoke`: every server and measurement once, briefly; it checks that
// the benchmark works, with no performance thresholds), its command line (`--help`, and a smoke run never writing
// over the committed results), and the read-buffer sizing policy of the default copy.

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { MAX_BUFFER, MIN_BUFFER, nextBufferSize } from "../lib/echo.ts";
import { cannotRun, ROOT, within } from "./helpers.ts";
import { clientCpus, mergeHistograms, percentileOf, placement, serverCpuList } from "../bench/load.ts";
import { readTask, scaleCounts } from "../bench/run.ts";

async function hasCompiler(): Promise<boolean> {
  try {
    return (await new Deno.Command("sh", { args: ["-c", "command -v cc"], stdout: "null" }).output()).success;
  } catch {
    return false;
  }
}

/** The bench task's own command line (after `deno`), as `deno task bench` runs it. */
const BENCH_ARGS = denoJson.tasks.bench.split(/\s+/).slice(1);

const NO_BENCH = Deno.build.os !== "linux" || !(await hasCompiler())
  ? "the benchmark needs Linux and a C compiler (cc) for its load client (.ci/run installs gcc)"
  : undefined;

Deno.test({
  name: "bench --smoke runs every server and measurement and writes the JSON and the charts",
  ignore: cannotRun("the benchmark's smoke run", NO_BENCH),
}, async (t) => {
  const out = await Deno.makeTempDir({ prefix: "echosrv-bench-" });
  try {
    const args = BENCH_ARGS;
    const run = await within(
      240_000,
      "the smoke run",
      new Deno.Command(Deno.execPath(), {
        args: [...args, "--smoke", "--out", out],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output(),
    );
    const stdout = new TextDecoder().decode(run.stdout);
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, `${stdout}\n${stderr}`);
    const results = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
    const ids = results.servers.map((s: { id: string }) => s.id);
    for (const id of ["c-epoll", "echosrv", "echosrv-metrics", "echosrv-limits", "echosrv-pipe"]) {
      assert.ok(ids.includes(id), id);
    }
    for (const test of ["bulk", "pp1", "pp50", "connect", "memory"]) {
      for (const id of ids) {
        const samples = results.samples[test][id];
        assert.equal(samples.length, 1, `${test} ${id}`);
        assert.equal(samples[0].ok, true, `${test} ${id}: ${samples[0].error}`);
      }
    }
    await t.step("the metrics row was scraped while it ran, and every scrape read the metrics", () => {
      const tally = results.method.scrapes["echosrv-metrics"];
      assert.ok(tally.ok > 0, JSON.stringify(tally));
      assert.equal(tally.failed, 0, JSON.stringify(tally));
      assert.match(stdout, /echosrv --metrics .*: \/metrics read \d+ times/);
    });
    await t.step("the features are compared with the defaults, and held to the same targets", () => {
      assert.match(stdout, /^\| echosrv --metrics .* \/ defaults \|/m);
      assert.match(stdout, /^\| echosrv --allow \+ limits \/ defaults \|/m);
      assert.match(
        stdout,
        /^\| target \| echosrv \(defaults.* \| echosrv --metrics .* \| echosrv --allow \+ limits \|$/m,
      );
    });
    await t.step("the table names the machine and shows every server", () => {
      assert.match(stdout, /^Machine: .+ cores/m);
      for (const s of results.servers) assert.ok(stdout.includes(`| ${s.label} |`), s.label);
    });
    const svg = await Deno.readTextFile(`${out}/results.svg`);
    assert.match(svg, /^<svg /);
    assert.ok(svg.includes("echosrv (defaults"), "the chart has the default's bar");

    const latency = JSON.parse(await Deno.readTextFile(`${out}/results-latency.json`));
    await t.step("latency under load: every row at 50, 400 and 1000 connections, the first second apart", () => {
      const rows = latency.servers.map((s: { id: string }) => s.id);
      // The C anchor, the Deno references (bare loop with and without the setting, node:net) and echosrv with the
      // setting and without it (Deno's default, 1024), so the benefit shows.
      for (const id of ["c-epoll", "deno-bare", "deno-bare-set", "deno-node", "echosrv", "echosrv-no-setting"]) {
        assert.ok(rows.includes(id), id);
      }
      assert.deepEqual(latency.conns, [50, 400, 1000]);
      for (const conns of latency.conns) {
        for (const id of rows) {
          const [sample] = latency.samples[conns][id];
          assert.equal(sample.ok, true, `${conns} ${id}: ${sample.error}`);
          assert.ok(sample.round_trips > 0 && sample.p50_us <= sample.p99_us && sample.p99_us <= sample.p999_us);
          assert.ok(sample.burst.round_trips > 0 && sample.burst.p999_us <= sample.burst.max_us, `${conns} ${id}`);
          assert.ok(sample.client_busy.length >= 1, "how busy each load process was");
          assert.ok(latency.curves[conns][id].steady.length > 1, `${conns} ${id} has a percentile curve`);
        }
      }
      const echosrv = latency.servers.find((s: { id: string }) => s.id === "echosrv-no-setting");
      assert.match(echosrv.label, /without the setting \(1024\)/);
      for (const conns of [50, 400, 1000]) assert.match(stdout, new RegExp(`^\\*\\*${conns} connections\\*\\*$`, "m"));
      assert.match(stdout, /^\| echosrv without the setting \(1024\) \| [\d.]+k? \|/m);
      assert.match(stdout, /^\| echosrv \(defaults.* \/ C \| [\d.]+ \|/m, "the ratios against C");
      assert.match(stdout, /^\| 1000 conns, first second: p999 <= 3x C \| [\d.]+ (holds|MISSED) \|$/m);
      const plot = Deno.readTextFileSync(`${out}/results-latency.svg`);
      assert.match(plot, /^<svg /);
      assert.match(plot, /latency by percentile/);
      assert.match(plot, /99\.9%/, "the percentile axis is in nines");
      assert.ok(plot.includes(`${latency.machine.cores} cores`), "the plot names the machine");
      assert.ok(plot.includes(latency.date.slice(0, 10)), "the plot is dated");
    });
    await t.step("scaling: echosrv --workers N against the C server with N threads", () => {
      const scaling = JSON.parse(Deno.readTextFileSync(`${out}/results-scaling.json`));
      assert.equal(scaling.workers[0], 1);
      assert.ok(scaling.workers.length >= 2, "1 and at least 2 workers (every machine here has 2 cores or more)");
      for (const n of scaling.workers) {
        for (const id of ["echosrv", "c-epoll"]) {
          assert.equal(scaling.samples[n][id][0].ok, true, `${n} ${id}: ${scaling.samples[n][id][0].error}`);
        }
      }
      assert.match(stdout, /^\| 2 \| [\d.]+k? \(/m);
      const plot = Deno.readTextFileSync(`${out}/results-scaling.svg`);
      assert.match(plot, /--workers scaling/);
      assert.ok(plot.includes(`${scaling.machine.cores} cores`), "the plot names the machine");
    });
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test({
  name: "bench --help exits 0 with the usage; a smoke run refuses to write over the committed results",
  ignore: cannotRun(
    "the benchmark's runs",
    Deno.build.os === "windows" ? "the benchmark needs Linux (cc, taskset, /proc)" : undefined,
  ),
  async fn() {
    const help = await new Deno.Command(Deno.execPath(), {
      args: [...BENCH_ARGS, "--help"],
      cwd: ROOT,
      stdout: "piped",
    })
      .output();
    assert.equal(help.code, 0);
    assert.match(new TextDecoder().decode(help.stdout), /^usage: deno task bench/);
    const bad = await new Deno.Command(Deno.execPath(), {
      args: [...BENCH_ARGS, "--no-such-option"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(bad.code, 2, "an unknown option is a usage error");
    const committed = `${ROOT}bench/results.json`;
    const before = await Deno.stat(committed);
    const smoke = await new Deno.Command(Deno.execPath(), {
      args: [...BENCH_ARGS, "--smoke", "--out", "bench"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(smoke.code, 2);
    assert.match(new TextDecoder().decode(smoke.stderr), /--smoke does not write to bench\//);
    assert.equal((await Deno.stat(committed)).mtime?.getTime(), before.mtime?.getTime(), "results.json untouched");
  },
});

Deno.test("bench placement: pinned apart on 4+ cores, enough load processes on the cores the server leaves", () => {
  const big = placement(16, "auto", true);
  assert.equal(big.pinned, true);
  assert.equal(serverCpuList(1), "0");
  assert.equal(serverCpuList(8), "0-7");
  // One server core: at least 2 load processes, one per 125 connections, each on its own core after the server's.
  assert.deepEqual(clientCpus(big, 1, 50), [1, 2]);
  assert.deepEqual(clientCpus(big, 1, 1000), [1, 2, 3, 4, 5, 6, 7, 8]);
  // 8 workers on cores 0-7: 12 wanted, the 8 spare cores get one each.
  assert.deepEqual(clientCpus(big, 8, 400), [8, 9, 10, 11, 12, 13, 14, 15]);
  assert.deepEqual(clientCpus(big, 1, 400, 3), [1, 2, 3], "--clients 3");
  assert.deepEqual(scaleCounts(big), [1, 2, 4, 8], "up to half the cores: the load needs the rest");
  assert.deepEqual(scaleCounts(placement(6, "auto", true)), [1, 2, 3]);
  // 2 cores: not pinned unless asked, and then one load process, sharing the machine with the server.
  const small = placement(2, "auto", true);
  assert.equal(small.pinned, false);
  assert.deepEqual(clientCpus(small, 1, 1000), [undefined]);
  assert.deepEqual(scaleCounts(small), [1, 2]);
  assert.equal(placement(2, true, true).pinned, true, "--pin");
  assert.equal(placement(16, false, true).pinned, false, "--no-pin");
  assert.equal(placement(16, "auto", false).pinned, false, "no taskset");
});

Deno.test("bench: the start task's variables reach echosrv's environment; histograms merge bucket by bucket", () => {
  assert.deepEqual(readTask("deno run --allow-net main.ts"), { env: {}, args: ["run", "--allow-net", "main.ts"] });
  assert.deepEqual(readTask("DENO_TOKIO_MAX_IO_EVENTS_PER_TICK=64 deno run main.ts"), {
    env: { DENO_TOKIO_MAX_IO_EVENTS_PER_TICK: "64" },
    args: ["run", "main.ts"],
  });
  assert.deepEqual(readTask("env A=1 B='x' deno task"), { env: { A: "1", B: "x" }, args: ["task"] });
  assert.throws(() => readTask("node main.js"), /does not run deno/);
  // The task as it is now runs deno (whatever variables it sets before).
  assert.ok(readTask(denoJson.tasks.start).args.includes("main.ts"));
  const merged = mergeHistograms([[[10, 2], [30, 1]], [[10, 1], [20, 5]]]);
  assert.deepEqual(merged, [[10, 3], [20, 5], [30, 1]]);
  assert.equal(percentileOf(merged, 0.5), 20);
  assert.equal(percentileOf(merged, 0.99), 30);
  assert.equal(percentileOf(merged, 0), 10);
});

Deno.test("the read buffer starts small, grows on full reads, and shrinks back when the traffic does", () => {
  let size = MIN_BUFFER;
  const sizes = [size];
  while (size < MAX_BUFFER) sizes.push(size = nextBufferSize(size, size)); // a bulk stream: every read full
  assert.deepEqual(sizes, [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144]);
  assert.equal(nextBufferSize(MAX_BUFFER, MAX_BUFFER), MAX_BUFFER, "never above the maximum");
  assert.equal(nextBufferSize(MAX_BUFFER, 100_000), MAX_BUFFER, "a big partial read keeps the size");
  assert.equal(nextBufferSize(MAX_BUFFER, 64), MIN_BUFFER, "a 64-byte read after bulk: back to the minimum");
  assert.equal(nextBufferSize(MAX_BUFFER, 3000), 8192, "a smaller burst: twice its size");
  assert.equal(nextBufferSize(MIN_BUFFER, 64), MIN_BUFFER, "ping-pong of 64 bytes stays at the minimum");
  assert.equal(nextBufferSize(MIN_BUFFER, 1), MIN_BUFFER, "never below the minimum");
});
