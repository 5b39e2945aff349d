// The single executable: `deno task compile` builds it, and the binary itself is run as a user runs it (version,
// echo over IPv4 and IPv6 on loopback, stop by signal, the service unit it would install). `deno compile` needs a
// runtime base binary (denort) that it downloads from Deno's own site; where that cannot be reached the tests are
// skipped with that reason printed. DENORT_BIN (a local denort of the same Deno version) makes them run offline.

import assert from "node:assert/strict";
import { join } from "node:path";
import { isBaseBinaryDownloadFailure } from "../scripts/compile.ts";
import { VERSION } from "../lib/version.ts";
import { echoSession, plannedFile, pseudoRandomBytes, ROOT, sameBytes, ServerProcess, within } from "./helpers.ts";

const decoder = new TextDecoder();

/** Builds the executable with the `compile` task; returns it, or why there is none. */
async function compile(): Promise<{ binary: string; dir: string } | { skip: string } | { failure: string }> {
  const dir = await Deno.makeTempDir({ prefix: "echosrv-compile-" });
  const binary = join(dir, Deno.build.os === "windows" ? "echosrv.exe" : "echosrv");
  const out = await within(
    300_000,
    "deno task compile",
    new Deno.Command(Deno.execPath(), {
      args: ["task", "compile", "--output", binary],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output(),
  );
  const said = decoder.decode(out.stdout) + decoder.decode(out.stderr);
  if (out.code === 0) return { binary, dir };
  await Deno.remove(dir, { recursive: true });
  if (isBaseBinaryDownloadFailure(said)) {
    const reason = /error sending request for url \(([^)]+)\)/.exec(said)?.[1] ?? "Deno's download site";
    return {
      skip: `deno compile could not download its runtime base binary (denort) from ${reason}; set DENORT_BIN to a ` +
        `local denort of Deno ${Deno.version.deno} to run these tests offline`,
    };
  }
  return { failure: said };
}

const built = await compile();
if ("skip" in built) console.log(`SKIPPED compile_test.ts: ${built.skip}`);
const binary = "binary" in built ? built.binary : "";
// The executable is about 100 MB: remove it when this file's tests are done.
if ("dir" in built) globalThis.addEventListener("unload", () => Deno.removeSync(built.dir, { recursive: true }));

Deno.test({
  name: "deno task compile succeeds (or fails only for want of the runtime base binary)",
  fn() {
    assert.ok(!("failure" in built), `deno task compile failed:\n${"failure" in built ? built.failure : ""}`);
  },
});

Deno.test({
  name: "the compiled echosrv prints its version",
  ignore: !binary,
  async fn() {
    const out = await new Deno.Command(binary, { args: ["--version"], stdout: "piped", stderr: "piped" }).output();
    assert.equal(out.code, 0);
    assert.equal(decoder.decode(out.stdout).trim(), VERSION);
  },
});

Deno.test({
  name: "the compiled echosrv echoes over IPv4 and IPv6 on loopback and stops on SIGTERM with exit 0",
  ignore: !binary || Deno.build.os === "windows",
  async fn() {
    const child = new Deno.Command(binary, {
      args: ["--port", "0", "-H", "127.0.0.1", "-H", "::1", "--log-format", "json"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    await using server = new ServerProcess(child);
    const ready = await server.waitFor((r) => r.message.startsWith("echoing on port"), "the compiled server");
    const port = ready.properties.port as number;
    const data = pseudoRandomBytes(512 * 1024, 51);
    assert.equal(sameBytes(await echoSession("127.0.0.1", port, data), data), true, "IPv4");
    assert.equal(sameBytes(await echoSession("::1", port, data), data), true, "IPv6");
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});

Deno.test({
  name: "the compiled echosrv installs itself: the unit's ExecStart is the executable, with the baked options",
  ignore: !binary || Deno.build.os !== "linux",
  async fn() {
    const out = await new Deno.Command(binary, {
      args: ["service", "install", "--dry-run", "--", "--port", "40007"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, decoder.decode(out.stderr));
    const unit = plannedFile(decoder.decode(out.stdout), "/etc/systemd/system/echosrv.service");
    assert.match(unit, new RegExp(`^ExecStart=${binary} --port 40007 --log-file /var/log/echosrv/echosrv\\.log$`, "m"));
    assert.doesNotMatch(unit, /DENO_DIR/, "a compiled service needs no Deno cache");
  },
});
