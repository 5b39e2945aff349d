// echosrv under a real, running systemd: a Debian bookworm root file system (made once with debootstrap and kept in
// /var/cache/echosrv-systemd-test) is copied and booted with systemd-nspawn in its own network namespace (loopback
// only), with this Deno, a copy of the project and its DENO_DIR inside. There, as root, the real `deno task service`
// installs echosrv from source; status, echo over IPv4 and IPv6, the journal, the log file, a second install,
// stop, start, restart, uninstall and an install onto a port already in use are checked as a user sees them (exit
// codes, status text, echoed bytes, journal lines). The container is powered off and its copy removed whatever
// happens. Skipped, with the reason printed, when not root on Linux, when systemd-nspawn or debootstrap is missing,
// or when the root file system cannot be built. Every wait is bounded. ECHOSRV_SYSTEMD_CACHE moves the cache,
// ECHOSRV_DEBIAN_MIRROR names another Debian mirror.

import assert from "node:assert/strict";
import { join } from "node:path";
import { VERSION } from "../lib/version.ts";
import { pseudoRandomBytes, ROOT, sameBytes, sleep, within } from "./helpers.ts";

/** Where the root file system is kept between runs (outside the repository). */
const CACHE = Deno.env.get("ECHOSRV_SYSTEMD_CACHE") || "/var/cache/echosrv-systemd-test";
/** The packages the container needs besides the minimal base: systemd as PID 1, D-Bus, and python3 for a client. */
const PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3-minimal", "iproute2"];
/** The cached root file system; its name changes with the package list, so a new list builds a new one. */
const ROOTFS = join(CACHE, `rootfs-bookworm-${PACKAGES.length}-v1`);
const MIRROR = Deno.env.get("ECHOSRV_DEBIAN_MIRROR") || "http://deb.debian.org/debian";
/** The port the service listens on inside the container's own network namespace (odd, below 32768). */
const PORT = 17007;
/** Where the project, DENO_DIR and this Deno appear inside the container. */
const PROJECT = "/opt/echosrv";
const DENO_DIR = "/opt/echosrv-deno";
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const decoder = new TextDecoder();

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion, killed after `ms`; returns what it printed. */
async function run(argv: string[], options: { ms?: number; env?: Record<string, string>; stdin?: Uint8Array } = {}) {
  const [program, ...args] = argv;
  const child = new Deno.Command(program, {
    args,
    env: options.env,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, options.ms ?? 60_000);
  try {
    if (options.stdin) {
      const writer = child.stdin.getWriter();
      await writer.write(options.stdin).catch(() => {});
      await writer.close().catch(() => {});
    }
    const out = await child.output();
    return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr), raw: out.stdout };
  } finally {
    clearTimeout(timer);
  }
}

async function has(program: string): Promise<boolean> {
  try {
    return (await run(["sh", "-c", `command -v ${program}`], { ms: 10_000 })).code === 0;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Makes the cached root file system with debootstrap unless it is there; returns why not when it cannot. */
async function ensureRootfs(): Promise<string | undefined> {
  if (await exists(join(ROOTFS, "usr/lib/systemd/systemd"))) return undefined;
  await Deno.mkdir(CACHE, { recursive: true });
  const partial = `${ROOTFS}.partial-${Deno.pid}`;
  console.log(`systemd_machine_test: building ${ROOTFS} with debootstrap from ${MIRROR} (once; kept for next runs)`);
  try {
    const made = await run([
      ...["timeout", "--kill-after=10", "600", "debootstrap", "--variant=minbase"],
      `--include=${PACKAGES.join(",")}`,
      ...["bookworm", partial, MIRROR],
    ], { ms: 620_000 });
    if (made.code !== 0 || !(await exists(join(partial, "usr/lib/systemd/systemd")))) {
      const said = (made.stdout + made.stderr).trim().split("\n").slice(-5).join("\n");
      return `debootstrap could not build a Debian bookworm root file system from ${MIRROR} (exit ${made.code}): ` +
        `${said} (set ECHOSRV_DEBIAN_MIRROR to a reachable mirror)`;
    }
    await Deno.rename(partial, ROOTFS).catch(async (error) => {
      // Another run finished first: use its copy.
      if (!(await exists(ROOTFS))) throw error;
    });
    return undefined;
  } finally {
    await Deno.remove(partial, { recursive: true }).catch(() => {});
  }
}

/** Why this machine cannot run the test, or undefined when it can. */
async function whyNotHere(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return "systemd is Linux only";
  const uid = await run(["id", "-u"], { ms: 10_000 }).catch(() => undefined);
  if (uid?.stdout.trim() !== "0") return "booting a systemd container with systemd-nspawn needs root";
  const missing = [];
  for (const [tool, pkg] of [["systemd-nspawn", "systemd-container"], ["debootstrap", "debootstrap"]]) {
    if (!(await has(tool))) missing.push(`${tool} (apt-get install ${pkg})`);
  }
  for (const tool of ["nsenter", "timeout", "ps"]) if (!(await has(tool))) missing.push(tool);
  if (missing.length > 0) return `missing ${missing.join(" and ")}`;
  return await ensureRootfs();
}

const whyNot = await whyNotHere();
if (whyNot) console.log(`SKIPPED systemd_machine_test.ts: ${whyNot}`);

/** The container's PID 1: the child of systemd-nspawn that runs systemd (not its short-lived helper child). */
async function containerInit(nspawn: number): Promise<number | undefined> {
  const out = await run(["ps", "-o", "pid=,comm=", "--ppid", String(nspawn)], { ms: 10_000 });
  const line = out.stdout.split("\n").map((l) => l.trim().split(/\s+/)).find(([, comm]) => comm === "systemd");
  return line ? Number(line[0]) : undefined;
}

/** A booted container: a copy of the cached root file system run by systemd-nspawn, commands run in it by nsenter. */
class Machine {
  #console = "";
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<unknown>;
  #exited = false;
  #leader = 0;

  constructor(readonly dir: string) {
    this.#child = new Deno.Command("systemd-nspawn", {
      args: [
        ...["--quiet", "--boot", "--register=no", "--keep-unit", "--private-network", "--console=pipe"],
        ...["--machine=echosrv-test", `--directory=${join(dir, "rootfs")}`],
        `--bind-ro=${Deno.execPath()}:/usr/local/bin/deno`,
        `--bind=${join(dir, "project")}:${PROJECT}`,
        `--bind=${join(dir, "deno-dir")}:${DENO_DIR}`,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const keep = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) this.#console = (this.#console + decoder.decode(chunk)).slice(-20_000);
    };
    this.#done = Promise.all([keep(this.#child.stdout), keep(this.#child.stderr), this.#child.status])
      .finally(() => this.#exited = true);
  }

  /** What the container printed on its console (the last part). */
  get console(): string {
    return this.#console;
  }

  /** Waits until the container's systemd has finished booting (running or degraded). */
  async booted(ms = 90_000): Promise<void> {
    const deadline = Date.now() + ms;
    let last = "no systemd process under systemd-nspawn yet";
    for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
      if (this.#exited) throw new Error(`systemd-nspawn exited while booting:\n${this.#console}`);
      this.#leader = await containerInit(this.#child.pid) ?? 0;
      if (this.#leader !== 0) {
        const out = await this.sh(["systemctl", "is-system-running"], { ms: 10_000 });
        last = `systemctl is-system-running: ${out.stdout.trim()} ${out.stderr.trim()}`;
        if (/^(running|degraded)$/.test(out.stdout.trim())) return;
      }
      await sleep(250);
    }
    throw new Error(`the container did not finish booting in ${ms} ms (${last}):\n${this.#console}`);
  }

  /** Runs a command inside the container as root, in the project, with a clean environment. */
  sh(argv: string[], options: { ms?: number; stdin?: Uint8Array } = {}) {
    return run([
      ...["nsenter", `--target=${this.#leader}`, "--all", "--"],
      ...["/usr/bin/env", "-i", `--chdir=${PROJECT}`, `PATH=${PATH}`, "HOME=/root", "NO_COLOR=1"],
      ...[`DENO_DIR=${DENO_DIR}`, "DENO_NO_UPDATE_CHECK=1", ...argv],
    ], options);
  }

  /** `deno task service <args>` inside the container. */
  service(args: string[]): Promise<Output> {
    return this.sh(["deno", "task", "--quiet", "service", ...args], { ms: 90_000 });
  }

  /** Powers the container off (systemd-nspawn turns SIGTERM into a clean shutdown), killing it if that hangs. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // already gone
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // already gone
        }
        resolve();
      }, 30_000);
    });
    await Promise.race([this.#done, killed]);
    clearTimeout(timer);
    await within(30_000, "systemd-nspawn to exit", this.#done);
  }
}

/** Removes the folders of earlier runs that were killed before their cleanup (their process is gone). */
async function removeStaleRuns(): Promise<void> {
  for await (const entry of Deno.readDir(CACHE)) {
    const pid = /^run-(\d+)$/.exec(entry.name)?.[1];
    if (pid === undefined) continue;
    const alive = (await run(["ps", "-p", pid], { ms: 10_000 })).code === 0 && pid !== String(Deno.pid);
    if (!alive) await Deno.remove(join(CACHE, entry.name), { recursive: true }).catch(() => {});
  }
}

/** Fills `dir` with the copy the container boots and the files it is given (the caller removes it afterwards). */
async function prepareRun(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const copy = await run(["cp", "-a", "--reflink=auto", ROOTFS, join(dir, "rootfs")], { ms: 300_000 });
  assert.equal(copy.code, 0, `copying the root file system: ${copy.stderr}`);
  // What the service runs from source: main.ts, lib/ and the configuration, readable by every user (DynamicUser).
  for (const sub of ["project", "deno-dir"]) {
    await Deno.mkdir(join(dir, sub));
    await Deno.chmod(join(dir, sub), 0o755);
  }
  const project = await run(
    ["cp", "-r", ...["main.ts", "deno.json", "deno.lock", "lib"].map((f) => join(ROOT, f)), join(dir, "project")],
    { ms: 60_000 },
  );
  assert.equal(project.code, 0, `copying the project: ${project.stderr}`);
  // DENO_DIR: the npm packages of this machine's cache, completed by `deno cache` (offline when they are all there).
  const info = await run([Deno.execPath(), "info", "--json"], { ms: 60_000, env: { NO_COLOR: "1" } });
  const hostDenoDir = (JSON.parse(info.stdout) as { denoDir?: string }).denoDir;
  if (hostDenoDir && await exists(join(hostDenoDir, "npm"))) {
    await run(["cp", "-r", join(hostDenoDir, "npm"), join(dir, "deno-dir", "npm")], { ms: 120_000 });
  }
  const cached = await run(
    [Deno.execPath(), "cache", "--config", join(dir, "project", "deno.json"), join(dir, "project", "main.ts")],
    { ms: 300_000, env: { DENO_DIR: join(dir, "deno-dir"), NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" } },
  );
  assert.equal(cached.code, 0, `deno cache main.ts: ${cached.stderr}`);
  await run(["chmod", "-R", "a+rX", join(dir, "project"), join(dir, "deno-dir")], { ms: 60_000 });
}

/** Python inside the container: connect to HOST:PORT, send standard input, half-close, print what came back. */
const ECHO_CLIENT = [
  "import socket, sys",
  "host, port = sys.argv[1], int(sys.argv[2])",
  "s = socket.create_connection((host, port), timeout=20)",
  "s.sendall(sys.stdin.buffer.read())",
  "s.shutdown(socket.SHUT_WR)",
  "while True:",
  "    chunk = s.recv(65536)",
  "    if not chunk: break",
  "    sys.stdout.buffer.write(chunk)",
].join("\n");

async function echoThrough(machine: Machine, host: string, data: Uint8Array) {
  const out = await machine.sh(["python3", "-c", ECHO_CLIENT, host, String(PORT)], { stdin: data, ms: 60_000 });
  return { ...out, bytes: out.raw };
}

function said(out: Output): string {
  return `exit ${out.code}\n--- stdout\n${out.stdout}\n--- stderr\n${out.stderr}`;
}

Deno.test({
  name: "under a real systemd (nspawn container): install, status, echo, stop, start, restart, uninstall",
  ignore: whyNot !== undefined,
  async fn(t) {
    await removeStaleRuns();
    const dir = join(CACHE, `run-${Deno.pid}`);
    try {
      await prepareRun(dir);
      await using machine = new Machine(dir);
      await machine.booted();
      const version = (await machine.sh(["systemctl", "--version"])).stdout.split("\n")[0];
      console.log(`  container booted: ${version}`);

      await t.step("status before install: exit 4, not installed", async () => {
        const out = await machine.service(["status"]);
        assert.equal(out.code, 4, said(out));
        assert.match(out.stdout, /^echosrv: not installed$/m);
      });

      await t.step("install: exit 0, the service enabled and started", async () => {
        const out = await machine.service(["install", "--", "--port", String(PORT)]);
        assert.equal(out.code, 0, said(out));
        assert.match(out.stdout, /^install echosrv\.service \(enabled at boot, started now\): done$/m);
        assert.equal((await machine.sh(["systemctl", "is-enabled", "echosrv"])).stdout.trim(), "enabled");
      });

      let firstPid = 0;
      await t.step("status: exit 0, running with a pid", async () => {
        const out = await machine.service(["status"]);
        assert.equal(out.code, 0, said(out));
        firstPid = Number(/^echosrv: running \(pid (\d+)\)$/m.exec(out.stdout)?.[1] ?? 0);
        assert.ok(firstPid > 0, said(out));
      });

      await t.step("the bytes sent come back over 127.0.0.1 and ::1", async () => {
        for (const [i, host] of ["127.0.0.1", "::1"].entries()) {
          const data = pseudoRandomBytes(200_000, 17 + i);
          const out = await echoThrough(machine, host, data);
          assert.equal(out.code, 0, `${host}: ${out.stderr}`);
          assert.equal(
            sameBytes(out.bytes, data),
            true,
            `${host}: ${out.bytes.length} bytes came back of ${data.length}`,
          );
        }
      });

      await t.step("journalctl -u echosrv and /var/log/echosrv/echosrv.log have the startup lines", async () => {
        const journal = await machine.sh(["journalctl", "-u", "echosrv", "--no-pager"]);
        assert.match(journal.stdout, /Started echosrv\.service/);
        assert.ok(journal.stdout.includes(`echosrv ${VERSION} starting`), journal.stdout);
        assert.match(journal.stdout, new RegExp(`echoing on port ${PORT} `));
        const log = await machine.sh(["cat", "/var/log/echosrv/echosrv.log"]);
        assert.equal(log.code, 0, log.stderr);
        assert.match(log.stdout, new RegExp(`echoing on port ${PORT} `));
      });

      await t.step(
        "the sandbox: systemd-analyze security scores it 2.0 at most; no root, no capabilities",
        async () => {
          const out = await machine.sh(["systemd-analyze", "security", "--no-pager", "echosrv.service"]);
          const level = Number(/Overall exposure level for echosrv\.service: ([\d.]+)/.exec(out.stdout)?.[1]);
          assert.ok(level <= 2.0, `exposure ${level}, above 2.0:\n${out.stdout}${out.stderr}`);
          console.log(`  systemd-analyze security echosrv.service: exposure ${level}`);
          const status = (await machine.sh(["cat", `/proc/${firstPid}/status`])).stdout;
          assert.notEqual(
            /^Uid:\s+(\d+)/m.exec(status)?.[1] ?? "0",
            "0",
            `runs as a dynamic user, not root:\n${status}`,
          );
          assert.match(status, /^CapEff:\s+0+$/m, "no effective capabilities");
          assert.match(status, /^NoNewPrivs:\s+1$/m);
          assert.match(status, /^Seccomp:\s+2$/m, "a system-call filter");
        },
      );

      await t.step("MemoryDenyWriteExecute= is rightly left out: Deno (V8's JIT) cannot run under it", async () => {
        const run = (mdwe: string) =>
          machine.sh([
            ...["systemd-run", "--wait", "--pipe", "--quiet", "-p", `MemoryDenyWriteExecute=${mdwe}`],
            ...["-p", "DynamicUser=yes", "-E", "DENO_DIR=/tmp/deno", "-p", "PrivateTmp=yes"],
            ...["/usr/local/bin/deno", "eval", "console.log(6 * 7)"],
          ], { ms: 60_000 });
        const without = await run("no");
        assert.equal(without.stdout.trim(), "42", `the same command without it works: ${said(without)}`);
        const withIt = await run("yes");
        assert.notEqual(withIt.code, 0, `deno ran under MemoryDenyWriteExecute=yes: ${said(withIt)}`);
        assert.doesNotMatch(withIt.stdout, /42/);
      });

      await t.step("installing twice: exit 1, clear message, the installed unit unchanged", async () => {
        const before = (await machine.sh(["cat", "/etc/systemd/system/echosrv.service"])).stdout;
        const out = await machine.service(["install", "--", "--port", String(PORT + 2)]);
        assert.equal(out.code, 1, said(out));
        assert.match(out.stderr, /^echosrv: a service named echosrv is already installed; .*nothing was changed$/m);
        assert.doesNotMatch(out.stderr, /\n\s+at /, "no stack trace");
        assert.equal((await machine.sh(["cat", "/etc/systemd/system/echosrv.service"])).stdout, before);
        assert.equal((await machine.service(["status"])).code, 0, "still running");
      });

      await t.step("stop: exit 0; status exit 3, stopped; connections refused", async () => {
        const out = await machine.service(["stop"]);
        assert.equal(out.code, 0, said(out));
        const status = await machine.service(["status"]);
        assert.equal(status.code, 3, said(status));
        assert.match(status.stdout, /^echosrv: stopped$/m);
        const echo = await echoThrough(machine, "127.0.0.1", Uint8Array.of(1, 2, 3));
        assert.notEqual(echo.code, 0);
        assert.match(echo.stderr, /ConnectionRefusedError/);
      });

      await t.step("start: exit 0; status exit 0; echo works again", async () => {
        const out = await machine.service(["start"]);
        assert.equal(out.code, 0, said(out));
        assert.equal((await machine.service(["status"])).code, 0);
        const data = pseudoRandomBytes(4096, 3);
        assert.equal(sameBytes((await echoThrough(machine, "::1", data)).bytes, data), true);
      });

      await t.step("restart: exit 0; running under a new pid; echo works", async () => {
        const before = Number(/\(pid (\d+)\)/.exec((await machine.service(["status"])).stdout)?.[1] ?? 0);
        const out = await machine.service(["restart"]);
        assert.equal(out.code, 0, said(out));
        const status = await machine.service(["status"]);
        assert.equal(status.code, 0, said(status));
        const after = Number(/\(pid (\d+)\)/.exec(status.stdout)?.[1] ?? 0);
        assert.ok(after > 0 && after !== before, `pid ${before} then ${after}`);
        const data = pseudoRandomBytes(4096, 4);
        assert.equal(sameBytes((await echoThrough(machine, "127.0.0.1", data)).bytes, data), true);
      });

      await t.step("uninstall: exit 0; status exit 4; the unit gone, the log kept; again: exit 1", async () => {
        const out = await machine.service(["uninstall"]);
        assert.equal(out.code, 0, said(out));
        const status = await machine.service(["status"]);
        assert.equal(status.code, 4, said(status));
        assert.match(status.stdout, /^echosrv: not installed$/m);
        assert.notEqual((await machine.sh(["test", "-e", "/etc/systemd/system/echosrv.service"])).code, 0);
        assert.equal((await machine.sh(["test", "-s", "/var/log/echosrv/echosrv.log"])).code, 0);
        const again = await machine.service(["uninstall"]);
        assert.equal(again.code, 1, said(again));
        assert.match(again.stderr, /^echosrv: no service named echosrv is installed \(systemd\)$/m);
      });

      await t.step("a port below 1024 (7): CAP_NET_BIND_SERVICE only, served, 2.0 at most; uninstall", async () => {
        const out = await machine.service(["install", "--name", "echosrv-low", "--", "--port", "7"]);
        assert.equal(out.code, 0, said(out));
        const unit = (await machine.sh(["cat", "/etc/systemd/system/echosrv-low.service"])).stdout;
        assert.match(unit, /^AmbientCapabilities=CAP_NET_BIND_SERVICE$/m);
        const data = pseudoRandomBytes(4096, 7);
        const echo = await machine.sh(["python3", "-c", ECHO_CLIENT, "::1", "7"], { stdin: data, ms: 60_000 });
        assert.equal(sameBytes(echo.raw, data), true, `echo on port 7: ${echo.stderr}`);
        const security = await machine.sh(["systemd-analyze", "security", "--no-pager", "echosrv-low.service"]);
        const level = Number(/Overall exposure level for echosrv-low\.service: ([\d.]+)/.exec(security.stdout)?.[1]);
        assert.ok(level <= 2.0, `exposure ${level}, above 2.0:\n${security.stdout}`);
        console.log(`  systemd-analyze security echosrv-low.service (port 7): exposure ${level}`);
        const pid = /\(pid (\d+)\)/.exec((await machine.service(["status", "--name", "echosrv-low"])).stdout)?.[1];
        const status = (await machine.sh(["cat", `/proc/${pid}/status`])).stdout;
        assert.match(status, /^CapEff:\s+0+400$/m, "CAP_NET_BIND_SERVICE (bit 10) and nothing else");
        assert.equal((await machine.service(["uninstall", "--name", "echosrv-low"])).code, 0);
      });

      await t.step("install onto a port in use: exit 1 with the server's reason; nothing left installed", async () => {
        const squatter = await machine.sh([
          ...["systemd-run", "--unit=squatter", "python3", "-c"],
          `import socket, time\ns = socket.socket(socket.AF_INET6)\ns.bind(("::", ${PORT}))\ns.listen()\n` +
          "time.sleep(600)",
        ]);
        assert.equal(squatter.code, 0, said(squatter));
        for (let i = 0; i < 100; i++) {
          if ((await machine.sh(["ss", "-Htln", `sport = :${PORT}`])).stdout.trim() !== "") break;
          await sleep(100);
        }
        const out = await machine.service(["install", "--", "--port", String(PORT)]);
        assert.equal(out.code, 1, said(out));
        assert.match(out.stderr, /^echosrv: echosrv\.service did not stay up: /m);
        assert.match(out.stderr, new RegExp(`port ${PORT} on \\[::\\] is already in use`), "the server's own reason");
        assert.match(out.stdout, /^undone: removed \/etc\/systemd\/system\/echosrv\.service$/m);
        const status = await machine.service(["status"]);
        assert.equal(status.code, 4, said(status));
        assert.match((await machine.sh(["systemctl", "show", "-p", "LoadState", "echosrv"])).stdout, /=not-found/);
      });

      await t.step(
        "start onto a port in use: exit 1; status exit 3, restarting, with the reason; uninstall",
        async () => {
          const installed = await machine.service(["install", "--start", "manual", "--", "--port", String(PORT)]);
          assert.equal(installed.code, 0, said(installed));
          const start = await machine.service(["start"]);
          assert.equal(start.code, 1, said(start));
          assert.match(
            start.stderr,
            new RegExp(`port ${PORT} on \\[::\\] is already in use`),
            "the server's own reason",
          );
          // systemd keeps restarting it (Restart=on-failure): status says so, and why, rather than "starting".
          const status = await machine.service(["status"]);
          assert.equal(status.code, 3, said(status));
          assert.match(status.stdout, /^echosrv: exited with an error, restarting$/m);
          assert.match(status.stdout, new RegExp(`port ${PORT} on \\[::\\] is already in use`));
          const uninstalled = await machine.service(["uninstall"]);
          assert.equal(uninstalled.code, 0, said(uninstalled));
          assert.equal((await machine.service(["status"])).code, 4);
          await machine.sh(["systemctl", "stop", "squatter"]);
        },
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
