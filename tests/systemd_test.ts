// echosrv under systemd: the units `echosrv service install` writes pass `systemd-analyze verify` without a word
// (quoting included: paths with spaces, `%`, `$` and quotes), and on a machine where systemd is not running,
// install, status, uninstall, start and stop fail clearly (exit 1) and change nothing.

import assert from "node:assert/strict";
import { join } from "node:path";
import type { ServiceDefinition } from "../lib/service/contract.ts";
import { ServiceError } from "../lib/service/error.ts";
import { systemdUnit } from "../lib/service/systemd.ts";
import type { RunConfig } from "../lib/config.ts";
import { parseCommandLine } from "../lib/options.ts";
import { cannotRun, plannedFile, runServiceTask, within } from "./helpers.ts";

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(argv: string[], env: Record<string, string> = {}, ms = 60_000): Promise<Output> {
  const [program, ...args] = argv;
  const out = await within(
    ms,
    argv.join(" "),
    new Deno.Command(program, { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).output(),
  );
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function has(program: string): Promise<boolean> {
  try {
    return (await run(["sh", "-c", `command -v ${program}`])).code === 0;
  } catch {
    return false;
  }
}

const hasAnalyze = await has("systemd-analyze");
if (!hasAnalyze) console.log("SKIPPED unit verification: systemd-analyze is not installed (apt-get install systemd)");

/** Runs `systemd-analyze verify` on a unit text saved as `<name>.service`; returns everything it said. */
async function verifyUnit(name: string, unit: string): Promise<Output> {
  const dir = await Deno.makeTempDir({ prefix: "echosrv-verify-" });
  try {
    const path = join(dir, `${name}.service`);
    await Deno.writeTextFile(path, unit);
    return await run(["systemd-analyze", "verify", path]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function config(args: string[]): RunConfig {
  const what = parseCommandLine(args, { out: () => {}, err: () => {} });
  assert.equal(what.kind, "run");
  return (what as { config: RunConfig }).config;
}

Deno.test({
  name: "the unit of `service install --dry-run` passes systemd-analyze verify with nothing to say",
  ignore: !hasAnalyze,
  async fn() {
    for (
      const serverArgs of [
        ["--port", "40007", "--max-connections", "5000"],
        ["--port", "7", "-H", "127.0.0.1", "--shutdown-timeout", "1h", "--log-file", "/srv/echo logs/echo.log"],
      ]
    ) {
      const name = "echosrv-verify";
      const { code, stdout, stderr } = await runServiceTask([
        "install",
        "--dry-run",
        "--name",
        name,
        "--",
        ...serverArgs,
      ]);
      assert.equal(code, 0, stderr);
      const unit = plannedFile(stdout, `/etc/systemd/system/${name}.service`);
      // The ExecStart binary is real: this Deno, running main.ts from source.
      assert.match(unit, new RegExp(`^ExecStart=${Deno.execPath().replaceAll("/", "\\/")} run `, "m"));
      const verdict = await verifyUnit(name, unit);
      assert.equal(verdict.code, 0, verdict.stderr);
      assert.equal(verdict.stdout + verdict.stderr, "", `systemd-analyze verify has nothing to say:\n${unit}`);
      for (const line of ["Restart=on-failure", "After=network-online.target", "Wants=network-online.target"]) {
        assert.ok(unit.includes(`\n${line}\n`), line);
      }
      for (const line of ["DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"]) {
        assert.ok(unit.includes(`\n${line}\n`), line);
      }
      assert.match(unit, /^ProtectHome=(yes|read-only)$/m);
      assert.match(unit, /^LogsDirectory=echosrv-verify$/m);
    }
  },
});

Deno.test({
  name: "ExecStart quoting: a program path with spaces, % and $ verifies (systemd finds the file); quotes are refused",
  ignore: !hasAnalyze,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "echosrv-quoting-" });
    try {
      // A folder whose name has the characters ExecStart= treats specially and allows in a program: space, %, $.
      const folder = join(dir, "echo %n $HOME y");
      await Deno.mkdir(folder);
      const executable = join(folder, "echo srv");
      await Deno.copyFile("/bin/true", executable);
      await Deno.chmod(executable, 0o755);
      const serverArgs = ["--port", "80", "--log-file", `/var/log/echo srv/%i $X "q" \\.log`];
      const definition: ServiceDefinition = {
        name: "echosrv-quoting",
        displayName: 'echo 100% "quoted"',
        description: "a % b",
        start: "auto",
        launcher: { kind: "compiled", executable },
        serverArgs,
        config: config(serverArgs),
      };
      const unit = systemdUnit(definition);
      const verdict = await verifyUnit("echosrv-quoting", unit);
      assert.equal(verdict.stdout + verdict.stderr, "", `nothing to say:\n${unit}`);
      assert.match(unit, /^AmbientCapabilities=CAP_NET_BIND_SERVICE$/m, "port 80 needs the one capability");
      assert.match(unit, /^Description=echo 100%% "quoted"$/m);
      // With %n unescaped systemd would look for ".../echosrv-quoting..." and report the binary missing.
      const broken = unit.replace(/%%n/, "%n");
      assert.match((await verifyUnit("echosrv-quoting", broken)).stderr, /not executable|No such file/);
      // systemd refuses quotes and backslashes in a program's path: say so instead of writing a dead unit.
      assert.throws(
        () => systemdUnit({ ...definition, launcher: { kind: "compiled", executable: `/opt/a "b"/echosrv` } }),
        (error: Error) =>
          error instanceof ServiceError && /cannot run a program whose path contains a quote/.test(error.message),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** `systemd-analyze security --offline` (systemd 250 and later) of a unit text; its exposure, or why not. */
async function exposure(name: string, unit: string): Promise<{ level: number; said: string } | { why: string }> {
  const dir = await Deno.makeTempDir({ prefix: "echosrv-security-" });
  try {
    const path = join(dir, `${name}.service`);
    await Deno.writeTextFile(path, unit);
    const out = await run(["systemd-analyze", "security", "--offline=true", "--no-pager", path]);
    const level = /Overall exposure level for \S+: ([\d.]+)/.exec(out.stdout)?.[1];
    if (level === undefined) return { why: `systemd-analyze security --offline gave no level: ${out.stderr.trim()}` };
    return { level: Number(level), said: out.stdout };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Why `systemd-analyze security --offline` cannot score a unit here (it came with systemd 250), or undefined. */
const NO_OFFLINE_SCORE = !hasAnalyze
  ? "systemd-analyze is not installed (apt-get install systemd)"
  : await (async () => {
    const probe = await exposure("echosrv-probe", "[Service]\nExecStart=/bin/true\n");
    return "why" in probe ? `${probe.why} (systemd 250 or later has --offline)` : undefined;
  })();

Deno.test({
  name: "the unit's sandbox scores an exposure of at most 2.0 in systemd-analyze security (any port, any account)",
  ignore: cannotRun("the unit's exposure score", NO_OFFLINE_SCORE),
  async fn() {
    for (
      const args of [
        ["--", "--port", "40007"],
        ["--", "--port", "7"],
        ["--account", "echo", "--", "--port", "40007", "--log-file", "/srv/echo/echo.log"],
      ]
    ) {
      const { code, stdout, stderr } = await runServiceTask(["install", "--dry-run", "--name", "echosrv-sec", ...args]);
      assert.equal(code, 0, stderr);
      const scored = await exposure("echosrv-sec", plannedFile(stdout, "/etc/systemd/system/echosrv-sec.service"));
      assert.ok(!("why" in scored), `${args.join(" ")}: ${"why" in scored ? scored.why : ""}`);
      assert.ok(scored.level <= 2.0, `${args.join(" ")}: exposure ${scored.level}\n${scored.said}`);
    }
  },
});

const systemdRunning = (() => {
  try {
    return Deno.statSync("/run/systemd/system").isDirectory;
  } catch {
    return false;
  }
})();
if (systemdRunning) console.log("SKIPPED the no-systemd test: systemd is running on this machine");

Deno.test({
  name: "without a running systemd, install, status, uninstall, start, stop fail clearly (exit 1) and change nothing",
  ignore: systemdRunning || Deno.build.os !== "linux",
  async fn() {
    const name = `echosrv-absent-${Deno.pid}`;
    for (const args of [["install", "--", "--port", "40007"], ["status"], ["uninstall"], ["start"], ["stop"]]) {
      const { code, stdout, stderr } = await runServiceTask([args[0], "--name", name, ...args.slice(1)]);
      assert.equal(code, 1, `${args[0]}: exit 1\n${stdout}${stderr}`);
      assert.match(stderr, /^echosrv: systemd is not running on this machine/, args[0]);
      assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
      assert.equal(stdout, "", "nothing was done");
    }
    await assert.rejects(Deno.stat(`/etc/systemd/system/${name}.service`), Deno.errors.NotFound);
  },
});
