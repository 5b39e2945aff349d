// wine: Windows, as far as Wine 10 goes, for the tests on Linux. A Debian trixie root file system with Debian's
// Wine 10 and Deno's own Windows build (deno.exe, from the npm package @deno/win32-x64 of this Deno's version) in
// it, and a Wine prefix booted once, is made with debootstrap and kept in /var/cache/echosrv-wine (outside the
// repository; ECHOSRV_WINE_CACHE moves it, ECHOSRV_DEBIAN_MIRROR names another mirror). Each run mounts an overlay
// of it (so runs never change the cache or one another), with /proc, /sys, /dev and a folder of the run's own at
// /opt/run (a copy of the project, a DENO_DIR filled by this Deno, the logs), in a private mount namespace that
// vanishes with the run; commands run there with nsenter and chroot. The chroot shares the host's network, so
// clients on the host reach services under Wine on loopback. Wine's services.exe, and every service it starts,
// inherit the first Wine process's standard error: the run sends it to /opt/run/services.err with Wine's eventlog
// channel on, which is how the Event Log is read back here (Wine's ReportEventW writes to that channel, and keeps
// no log). Everything a run starts is killed and its folder removed when it is disposed.

import { join } from "node:path";
import { ROOT, sleep, within } from "./helpers.ts";

/** Where the root file system is kept between runs. */
export const WINE_CACHE = Deno.env.get("ECHOSRV_WINE_CACHE") || "/var/cache/echosrv-wine";
const MIRROR = Deno.env.get("ECHOSRV_DEBIAN_MIRROR") || "http://deb.debian.org/debian";
/** Deno's Windows build of this very version. */
export const DENO_VERSION = Deno.version.deno;
/** The cached root file system; its name changes with what goes into it. */
const ROOTFS = join(WINE_CACHE, `rootfs-trixie-wine-deno-${DENO_VERSION}-v1`);
/** Written last when the cache is built: a root file system without it is incomplete. */
const READY = ".echosrv-ready";
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** deno.exe and the run's folder, as Windows programs see them (Wine's Z: drive is the root file system). */
export const DENO_EXE = "Z:\\opt\\deno\\deno.exe";
export const RUN = "Z:\\opt\\run";

const decoder = new TextDecoder();

/** What a command printed and how it ended. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion, killed after `ms`. */
async function run(
  argv: string[],
  options: { ms?: number; env?: Record<string, string>; cwd?: string } = {},
): Promise<Output> {
  const [program, ...args] = argv;
  const child = new Deno.Command(program, {
    args,
    env: options.env,
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, options.ms ?? 120_000);
  try {
    const out = await child.output();
    return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

async function has(program: string): Promise<boolean> {
  return (await run(["sh", "-c", `command -v ${program}`], { ms: 10_000 }).catch(() => undefined))?.code === 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

function tail(out: Output, lines = 6): string {
  return (out.stdout + out.stderr).trim().split("\n").slice(-lines).join("\n");
}

/**
 * Runs a shell script inside a root file system under construction (its own mount namespace: /proc, /sys, /dev
 * and a tmpfs on /dev/shm mounted, gone when it ends).
 */
function inRootfs(root: string, script: string, ms: number): Promise<Output> {
  return run([
    ...["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"],
    `set -e; R="$1"; mount -t proc proc "$R/proc"; mount -t sysfs sysfs "$R/sys"; mount --rbind /dev "$R/dev"; ` +
    `mount -t tmpfs tmpfs "$R/dev/shm"; exec chroot "$R" /usr/bin/env -i PATH=${PATH} HOME=/root ` +
    `DEBIAN_FRONTEND=noninteractive WINEPREFIX=/root/.wine WINEDEBUG=-all sh -c "$2"`,
    "sh",
    root,
    script,
  ], { ms });
}

/** Builds the cached root file system unless it is there; returns why not when it cannot. */
async function ensureRootfs(): Promise<string | undefined> {
  if (await exists(join(ROOTFS, READY))) return undefined;
  await Deno.mkdir(WINE_CACHE, { recursive: true });
  const partial = `${ROOTFS}.partial-${Deno.pid}`;
  const started = performance.now();
  console.log(`wine: building ${ROOTFS} (Debian trixie from ${MIRROR}, Wine 10, deno.exe ${DENO_VERSION}; once)`);
  try {
    const made = await run([
      ...["timeout", "--kill-after=10", "600", "debootstrap", "--variant=minbase", "trixie", partial, MIRROR],
    ], { ms: 620_000 });
    if (made.code !== 0) {
      return `debootstrap could not build a Debian trixie root file system from ${MIRROR} (exit ${made.code}): ` +
        `${tail(made)} (set ECHOSRV_DEBIAN_MIRROR to a reachable mirror)`;
    }
    const wine = await inRootfs(
      partial,
      "apt-get update -qq && apt-get install -y -qq --no-install-recommends wine wine64 >/dev/null",
      900_000,
    );
    if (wine.code !== 0) return `apt-get could not install Wine in the trixie root file system: ${tail(wine)}`;
    // deno.exe: the npm package @deno/win32-x64 of this version, fetched by npm (its integrity checked by npm).
    const pack = await Deno.makeTempDir({ prefix: "echosrv-deno-win-" });
    try {
      const packed = await run(["npm", "pack", "--silent", `@deno/win32-x64@${DENO_VERSION}`], {
        cwd: pack,
        ms: 300_000,
      });
      const tarball = packed.stdout.trim().split("\n").at(-1) ?? "";
      if (packed.code !== 0 || !tarball.endsWith(".tgz")) {
        return `npm could not fetch @deno/win32-x64@${DENO_VERSION}: ${tail(packed)}`;
      }
      await Deno.mkdir(join(partial, "opt/deno"), { recursive: true });
      const unpacked = await run(
        ["tar", "-xzf", join(pack, tarball), "-C", join(partial, "opt/deno"), "--strip-components=1"],
        { ms: 120_000 },
      );
      if (unpacked.code !== 0 || !(await exists(join(partial, "opt/deno/deno.exe")))) {
        return `cannot unpack ${tarball}: ${tail(unpacked)}`;
      }
    } finally {
      await Deno.remove(pack, { recursive: true }).catch(() => {});
    }
    await Deno.mkdir(join(partial, "opt/run"), { recursive: true });
    // The prefix, booted once. Services get the environment stored in the registry, not their caller's: DENO_DIR
    // (the run's, at /opt/run/deno-dir) goes there, or a service's deno would find no npm packages.
    const environment = "HKLM\\System\\CurrentControlSet\\Control\\Session Manager\\Environment";
    const booted = await inRootfs(
      partial,
      "wineboot -i >/dev/null 2>&1 </dev/null && " +
        `wine reg add '${environment}' /v DENO_DIR /d 'Z:\\opt\\run\\deno-dir' /f >/dev/null 2>&1 && ` +
        `wine reg add '${environment}' /v DENO_NO_UPDATE_CHECK /d 1 /f >/dev/null 2>&1 && ` +
        `wine reg add '${environment}' /v NO_COLOR /d 1 /f >/dev/null 2>&1 && ` +
        "wine /opt/deno/deno.exe --version && wineserver -w",
      300_000,
    );
    if (booted.code !== 0 || !booted.stdout.includes(`deno ${DENO_VERSION}`)) {
      return `Wine could not boot a prefix and run deno.exe --version: ${tail(booted)}`;
    }
    await Deno.writeTextFile(join(partial, READY), `${booted.stdout.split("\n")[0]}\n`);
    await Deno.rename(partial, ROOTFS).catch(async (error) => {
      if (!(await exists(join(ROOTFS, READY)))) throw error; // another run finished first: use its copy
    });
    console.log(`wine: ${ROOTFS} built in ${Math.round((performance.now() - started) / 1000)} s`);
    return undefined;
  } finally {
    await Deno.remove(partial, { recursive: true }).catch(() => {});
  }
}

let ready: Promise<string | undefined> | undefined;

/**
 * Why Wine cannot be used here, or undefined when it can (the cache is built on the first call).
 *
 * @returns the reason, for a test's `ignore` and its printed SKIPPED line
 */
export function whyNoWine(): Promise<string | undefined> {
  ready ??= (async () => {
    if (Deno.build.os !== "linux") return "Wine is run on Linux here";
    const uid = await run(["id", "-u"], { ms: 10_000 }).catch(() => undefined);
    if (uid?.stdout.trim() !== "0") {
      return "preparing the Wine root file system (debootstrap, chroot, mounts) needs root";
    }
    const missing = [];
    for (const [tool, pkg] of [["debootstrap", "debootstrap"], ["npm", "npm"]]) {
      if (!(await has(tool))) missing.push(`${tool} (apt-get install ${pkg})`);
    }
    for (const tool of ["unshare", "nsenter", "chroot", "mount", "timeout", "tar"]) {
      if (!(await has(tool))) missing.push(tool);
    }
    if (missing.length > 0) return `missing ${missing.join(", ")}`;
    return await ensureRootfs();
  })();
  return ready;
}

/** Kills what killed earlier runs left (processes rooted in their folders) and removes their folders. */
async function removeStaleRuns(): Promise<void> {
  for await (const entry of Deno.readDir(WINE_CACHE)) {
    const pid = /^run-(\d+)-\d+$/.exec(entry.name)?.[1];
    if (pid === undefined || pid === String(Deno.pid)) continue;
    if ((await run(["kill", "-0", pid], { ms: 10_000 })).code === 0) continue; // that run is still going
    const dir = join(WINE_CACHE, entry.name);
    await run([
      "sh",
      "-c",
      'for p in /proc/[0-9]*; do case "$(readlink "$p/root" 2>/dev/null)" in "$1"/*) kill -9 "${p#/proc/}";; esac; ' +
      "done; true",
      "sh",
      dir,
    ], { ms: 30_000 });
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

let runs = 0;

/** One run: an overlay of the cached root file system, its own /opt/run, its own Wine prefix and wineserver. */
export class WineMachine implements AsyncDisposable {
  readonly #holder: Deno.ChildProcess;
  readonly #held: Promise<Deno.CommandStatus>;

  private constructor(readonly dir: string, holder: Deno.ChildProcess) {
    this.#holder = holder;
    this.#held = holder.status;
  }

  /** The host's path of the run's /opt/run (Z:\opt\run under Wine). */
  get share(): string {
    return join(this.dir, "share");
  }

  /**
   * Mounts a run and copies the project (and a DENO_DIR with its npm packages) into it; the caller boots it.
   *
   * @param cacheModules the modules whose npm packages the run's DENO_DIR must hold (main.ts at least)
   */
  static async start(cacheModules: string[] = ["main.ts"]): Promise<WineMachine> {
    await removeStaleRuns();
    const dir = join(WINE_CACHE, `run-${Deno.pid}-${++runs}`);
    for (const sub of ["upper", "work", "root", "share/project", "share/deno-dir", "share/logs"]) {
      await Deno.mkdir(join(dir, sub), { recursive: true });
    }
    try {
      const project = join(dir, "share/project");
      const parts = [
        "main.ts",
        "deno.json",
        "deno.lock",
        "lib",
        "tests",
        "support",
        "bench",
        "stress",
        "scripts",
        "deploy",
        "docs",
        "ARCHITECTURE.md",
      ];
      const copied = await run(["cp", "-r", ...parts.map((p) => join(ROOT, p)), project], { ms: 60_000 });
      if (copied.code !== 0) throw new Error(`copying the project: ${copied.stderr}`);
      await Deno.copyFile(join(ROOT, "README.md"), join(project, "README.md")).catch(() => {});
      const info = await run([Deno.execPath(), "info", "--json"], { ms: 60_000, env: { NO_COLOR: "1" } });
      const hostDenoDir = (JSON.parse(info.stdout || "{}") as { denoDir?: string }).denoDir;
      if (hostDenoDir && await exists(join(hostDenoDir, "npm"))) {
        await run(["cp", "-r", join(hostDenoDir, "npm"), join(dir, "share/deno-dir/npm")], { ms: 120_000 });
      }
      const cached = await run(
        [
          Deno.execPath(),
          "cache",
          "--config",
          join(project, "deno.json"),
          ...cacheModules.map((m) => join(project, m)),
        ],
        {
          ms: 300_000,
          env: { DENO_DIR: join(dir, "share/deno-dir"), NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", PATH },
        },
      );
      if (cached.code !== 0) throw new Error(`deno cache: ${cached.stderr}`);
    } catch (error) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
    const holder = new Deno.Command("unshare", {
      args: [
        ...["--mount", "--propagation", "private", "--", "sh", "-c"],
        'set -e; D="$1"; R="$D/root"; ' +
        `mount -t overlay overlay -o "lowerdir=$2,upperdir=$D/upper,workdir=$D/work" "$R"; ` +
        'mount -t proc proc "$R/proc"; mount -t sysfs sysfs "$R/sys"; mount --rbind /dev "$R/dev"; ' +
        'mount -t tmpfs tmpfs "$R/dev/shm"; mount --bind "$D/share" "$R/opt/run"; echo ready; exec sleep 86400',
        "sh",
        dir,
        ROOTFS,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const machine = new WineMachine(dir, holder);
    try {
      const reader = holder.stdout.getReader();
      const first = await within(30_000, "the run's mounts", reader.read());
      reader.releaseLock();
      if (!decoder.decode(first.value ?? new Uint8Array()).includes("ready")) {
        const said = await new Response(holder.stderr).text();
        throw new Error(`mounting the run failed (is overlayfs available?): ${said}`);
      }
      void holder.stdout.cancel().catch(() => {});
      void holder.stderr.cancel().catch(() => {});
    } catch (error) {
      await machine[Symbol.asyncDispose]();
      throw error;
    }
    return machine;
  }

  /**
   * Runs a command inside the run, as root, with a clean environment (Wine's debug output off).
   *
   * @param argv the command (a Linux program of the root file system, such as wine or sh)
   * @param options a time limit, more environment, a working directory inside
   */
  sh(argv: string[], options: { ms?: number; env?: Record<string, string>; cwd?: string } = {}): Promise<Output> {
    const env = Object.entries({
      PATH,
      HOME: "/root",
      WINEPREFIX: "/root/.wine",
      WINEDEBUG: "-all",
      XDG_RUNTIME_DIR: "/tmp",
      ...options.env,
    }).map(([k, v]) => `${k}=${v}`);
    return run([
      ...["nsenter", `--target=${this.#holder.pid}`, "--mount", "--", "chroot", join(this.dir, "root")],
      ...["/usr/bin/env", "-i", `--chdir=${options.cwd ?? "/opt/run/project"}`, ...env, ...argv],
    ], { ms: options.ms ?? 120_000 });
  }

  /** Runs a Windows program under Wine (`wine PROGRAM ARGS`). */
  wine(args: string[], options: { ms?: number; env?: Record<string, string> } = {}): Promise<Output> {
    return this.sh(["wine", ...args], options);
  }

  /** Runs Deno's Windows build (`deno.exe ARGS`) in the project's copy, with the run's DENO_DIR. */
  deno(args: string[], options: { ms?: number; env?: Record<string, string> } = {}): Promise<Output> {
    return this.wine([DENO_EXE, ...args], { ...options, env: { DENO_DIR: `${RUN}\\deno-dir`, ...options.env } });
  }

  /**
   * Boots the run's Wine: the wineserver and services.exe start with their output in /opt/run/services.err (never
   * in a pipe of ours, which they would hold open for ever), Wine's eventlog channel on for them and the services.
   */
  async boot(): Promise<void> {
    const out = await this.sh([
      "sh",
      "-c",
      "WINEDEBUG=-all,+eventlog wineboot >/dev/null 2>/opt/run/services.err </dev/null",
    ], { ms: 120_000 });
    if (out.code !== 0) throw new Error(`wineboot failed: ${tail(out)}`);
  }

  /** What the services wrote to Wine's eventlog channel so far (ReportEventW's strings). */
  eventLog(): string {
    try {
      return Deno.readTextFileSync(join(this.share, "services.err"));
    } catch {
      return "";
    }
  }

  /** Kills every Wine process of the run, ends its mount namespace, removes its folder. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.sh(["wineserver", "-k"], { ms: 30_000 }).catch(() => {});
    for (let i = 0; i < 50; i++) {
      const left = await run(["sh", "-c", this.#rootedHere()], { ms: 10_000 });
      if (left.stdout.trim() === "") break;
      await run(["sh", "-c", `kill -9 ${left.stdout.trim().split(/\s+/).join(" ")} 2>/dev/null; true`]);
      await sleep(100);
    }
    try {
      this.#holder.kill("SIGKILL");
    } catch {
      // already gone
    }
    await within(30_000, "the run's mount namespace to end", this.#held);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  /** A shell line listing the processes whose root is this run's (Wine's and the services'), not the holder. */
  #rootedHere(): string {
    return `for p in /proc/[0-9]*; do case "$(readlink "$p/root" 2>/dev/null)" in "${join(this.dir, "root")}") ` +
      `echo "\${p#/proc/}";; esac; done`;
  }
}
