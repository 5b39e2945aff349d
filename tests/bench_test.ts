// The benchmark's smoke run (`deno task bench --smoke`: every server and measurement once, briefly; it checks that
// the benchmark works, with no performance thresholds) and the read-buffer sizing policy of the default copy.

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { MAX_BUFFER, MIN_BUFFER, nextBufferSize } from "../lib/echo.ts";
import { ROOT, within } from "./helpers.ts";

async function hasCompiler(): Promise<boolean> {
  try {
    return (await new Deno.Command("sh", { args: ["-c", "command -v cc"], stdout: "null" }).output()).success;
  } catch {
    return false;
  }
}

Deno.test("bench --smoke runs every server and measurement and writes the JSON and the chart", async (t) => {
  if (Deno.build.os !== "linux" || !(await hasCompiler())) {
    console.log("skipped: the benchmark needs Linux and a C compiler (cc) for its load client (.ci/run installs gcc)");
    return;
  }
  const out = await Deno.makeTempDir({ prefix: "echosrv-bench-" });
  try {
    // The bench task's own command line, as `deno task bench --smoke` runs it.
    const [, ...args] = denoJson.tasks.bench.split(/\s+/);
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
    for (const id of ["c-epoll", "echosrv", "echosrv-metrics", "echosrv-limits", "echosrv-pipe", "echosrv-w2"]) {
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
  } finally {
    await Deno.remove(out, { recursive: true });
  }
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
