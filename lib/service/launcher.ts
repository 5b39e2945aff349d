// launcher: how a service's process is started, so that it runs the same program as the command that installed it:
// the compiled executable itself, or Deno running this main.ts with this deno.json and the server's flags
// (lib/runtime.ts), all as absolute paths; and the permissions baked into the compiled executable.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { serverFlags } from "../runtime.ts";

/** How the service's process is launched: the compiled executable, or Deno running main.ts. */
export type Launcher =
  | { kind: "compiled"; executable: string }
  | { kind: "source"; deno: string; config: string; main: string; denoDir?: string };

/**
 * The permissions `echosrv` itself needs on `os`, baked into the compiled executable: the server's own, plus
 * (Linux, macOS) running the service manager's tool and reading the user id to say "run as root" up front. On
 * Windows `service ...` calls the SCM's API through FFI, which the service's own permissions already allow.
 * `--allow-ffi` stays unscoped on Windows on purpose: a scoped FFI permission makes Deno resolve "advapi32.dll"
 * against the working directory instead of letting Windows load its system DLL (both are KnownDLLs, always taken
 * from System32).
 *
 * @param os the target system
 * @returns the `deno compile` permission flags
 */
export function executablePermissions(os: typeof Deno.build.os): string[] {
  switch (os) {
    case "windows":
      return serverFlags(os);
    case "darwin":
      return [...serverFlags(os), "--allow-run=launchctl", "--allow-sys=uid"];
    default:
      return [...serverFlags(os), "--allow-run=systemctl", "--allow-sys=uid"];
  }
}

/**
 * How this process was launched, so the service runs the same program: the executable itself when compiled,
 * otherwise `deno run` of this main.ts with this deno.json, all as absolute paths.
 *
 * @returns the launcher of this process
 */
export function launcherOfThisProcess(): Launcher {
  if (Deno.build.standalone) return { kind: "compiled", executable: Deno.execPath() };
  const main = fileURLToPath(Deno.mainModule);
  const denoDir = denoDirOfThisProcess();
  return {
    kind: "source",
    deno: Deno.execPath(),
    config: join(dirname(main), "deno.json"),
    main,
    ...(denoDir ? { denoDir } : {}),
  };
}

/** Where this Deno keeps its cache (and so the npm packages echosrv needs): $DENO_DIR or the OS's default. */
function denoDirOfThisProcess(): string | undefined {
  const env = (name: string) => Deno.env.get(name) || undefined;
  const explicit = env("DENO_DIR");
  if (explicit) return explicit;
  switch (Deno.build.os) {
    case "windows": {
      const local = env("LOCALAPPDATA");
      return local ? join(local, "deno") : undefined;
    }
    case "darwin": {
      const home = env("HOME");
      return home ? join(home, "Library", "Caches", "deno") : undefined;
    }
    default: {
      const cache = env("XDG_CACHE_HOME") ?? (env("HOME") ? join(env("HOME")!, ".cache") : undefined);
      return cache ? join(cache, "deno") : undefined;
    }
  }
}

/**
 * Says why a service launched from source by this Deno would stop working when npm cleans its cache: the Deno that
 * `npx -y deno@...` runs lives in npm's npx cache (`~/.npm/_npx/HASH/...`, `%LocalAppData%\npm-cache\_npx\HASH\...`),
 * which `npm cache clean` or a new npx version deletes, and the service's command line names it.
 *
 * @param launcher how the service's process would be launched
 * @returns a note for the install plan, or undefined when the Deno is not npx's cached copy (or the service runs the
 *   compiled executable)
 */
export function transientDenoNote(launcher: Launcher): string | undefined {
  if (launcher.kind !== "source" || !/[\\/]_npx[\\/]/.test(launcher.deno)) return undefined;
  return `the service would run npx's cached copy of Deno (${launcher.deno}), which npm deletes when it cleans its ` +
    "cache, and the service would then no longer start: install Deno where it stays (npm install -g " +
    `deno@${Deno.version.deno}, or Deno's own installer) and run \`deno task service install\` with it, or install ` +
    "the compiled executable (deno task compile)";
}

/**
 * The service's command line on `os`: the program and the arguments that come before the server options.
 *
 * @param launcher how the process is launched
 * @param os the system the service runs on
 * @returns argv, program first
 */
export function launchArgs(launcher: Launcher, os: typeof Deno.build.os): string[] {
  if (launcher.kind === "compiled") return [launcher.executable];
  return [launcher.deno, "run", ...serverFlags(os), "--config", launcher.config, launcher.main];
}
