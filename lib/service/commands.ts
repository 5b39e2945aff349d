// commands: carries out `echosrv service ...` (read by lib/options.ts into a lib/service/request.ts ServiceRequest)
// with the manager of this system: validates what is to be baked into the service, builds the plan, prints it
// (--dry-run) or checks that the service manager is there, that this is root/Administrator and that nothing is in
// the way, then runs it. Every failure is one clear message and exit 1, with whatever a failed install had done
// undone.

import { isAbsolute, resolve } from "node:path";
import { parseCommandLine } from "../options.ts";
import type { ServiceRequest } from "./request.ts";
import { listenWords, type ServiceDefinition, type ServiceManager } from "./contract.ts";
import { ServiceError } from "./error.ts";
import { launcherOfThisProcess, transientDenoNote } from "./launcher.ts";
import { describePlan, executePlan, type Plan } from "./plan.ts";
import { LaunchdManager } from "./launchd.ts";
import { SystemdManager } from "./systemd.ts";
import { WindowsManager } from "./windows.ts";
import { testLibraries } from "./win32.ts";

/** Where a command writes. */
export interface CommandOutput {
  /** Writes what a command reports (standard output). */
  out(text: string): void;
  /** Writes errors and notes (standard error). */
  err(text: string): void;
}

const encoder = new TextEncoder();
const stdio: CommandOutput = {
  out: (text) => void Deno.stdout.writeSync(encoder.encode(text)),
  err: (text) => void Deno.stderr.writeSync(encoder.encode(text)),
};

/** Exit codes of `echosrv service status`, after the LSB convention `systemctl status` follows. */
export const STATUS_EXIT = { running: 0, notRunning: 3, notInstalled: 4 } as const;

/**
 * The service manager of a system.
 *
 * @param os the system
 * @returns its manager (on Linux and macOS, the Windows one when the tests name a stand-in advapi32: win32.ts)
 * @throws {ServiceError} where echosrv knows no service manager
 */
export function managerFor(os: typeof Deno.build.os): ServiceManager {
  const standIn = testLibraries();
  if (standIn) return new WindowsManager({ libraries: standIn });
  switch (os) {
    case "windows":
      return new WindowsManager();
    case "linux":
      return new SystemdManager();
    case "darwin":
      return new LaunchdManager();
    default:
      throw new ServiceError(`echosrv cannot install services on ${os}; it knows Windows, Linux (systemd) and macOS`);
  }
}

/** Replaces a relative `--log-file` value with an absolute one: the service does not start in this directory. */
export function absoluteLogFileArgs(args: string[], cwd: string): string[] {
  const out = [...args];
  for (let i = 0; i < out.length; i++) {
    if (out[i] === "--") break;
    if (out[i] === "--log-file" && i + 1 < out.length && !isAbsolute(out[i + 1])) {
      out[i + 1] = resolve(cwd, out[i + 1]);
    } else if (out[i].startsWith("--log-file=") && !isAbsolute(out[i].slice(11))) {
      out[i] = `--log-file=${resolve(cwd, out[i].slice(11))}`;
    }
  }
  return out;
}

/**
 * Parses the server options as the service will: this shell's ECHOSRV_* variables are set aside while parsing,
 * because the service will not have them.
 */
function parseServerArgs(args: string[], io: CommandOutput): ReturnType<typeof parseCommandLine> {
  const hidden: [string, string][] = [];
  for (const [key, value] of Object.entries(Deno.env.toObject())) {
    if (key.startsWith("ECHOSRV_")) {
      hidden.push([key, value]);
      Deno.env.delete(key);
    }
  }
  try {
    return parseCommandLine(args, io);
  } finally {
    for (const [key, value] of hidden) Deno.env.set(key, value);
    if (hidden.length > 0) {
      io.err(
        `echosrv: note: ${hidden.map(([k]) => k).join(", ")} ${hidden.length > 1 ? "are" : "is"} set in this shell ` +
          "but will not be in the service's environment; put options after -- instead\n",
      );
    }
  }
}

/** Builds the service definition of an install request, or returns the usage exit code (message printed). */
function defineService(request: ServiceRequest, io: CommandOutput): ServiceDefinition | number {
  const serverArgs = absoluteLogFileArgs(request.serverArgs, Deno.cwd());
  const what = parseServerArgs(serverArgs, {
    out: () => {}, // --help or --version: refused below, not printed
    err: (text) =>
      io.err(text.replace("(run `echosrv --help` for the options)", "(run `echosrv --help` for the server options)")),
  });
  if (what.kind === "exit" && what.code === 0) {
    io.err("echosrv: error: --help and --version cannot be baked into a service; give server options after --\n");
    return 2;
  }
  if (what.kind === "exit") return what.code;
  if (what.kind !== "run") {
    io.err("echosrv: error: after -- come the server's options (as for `echosrv run`), not another command\n");
    return 2;
  }
  return {
    name: request.name,
    displayName: request.displayName ?? `${request.name} TCP echo server`,
    description: request.description ??
      `TCP echo server ${listenWords(what.config.server.hosts, what.config.server.port)}: every byte received is ` +
        "sent back. The modern port of Microsoft's WSK echosrv sample.",
    start: request.start,
    ...(request.account !== undefined ? { account: request.account } : {}),
    launcher: launcherOfThisProcess(),
    serverArgs,
    config: what.config,
  };
}

/** Refuses early, with a clear message, when a change needs root and this is not root (Linux, macOS). */
function requireRoot(action: string): void {
  if (Deno.build.os === "windows") return; // the SCM answers "access denied" (5), which is explained then
  let uid: number | null = null;
  try {
    if (Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "granted") uid = Deno.uid();
  } catch {
    uid = null;
  }
  if (uid !== null && uid !== 0) {
    throw new ServiceError(
      `\`echosrv service ${action}\` changes the system's services and must run as root (use sudo)`,
    );
  }
}

function planFor(manager: ServiceManager, request: ServiceRequest, definition?: ServiceDefinition): Plan {
  switch (request.action) {
    case "install": {
      const plan = manager.installPlan(definition!);
      const transient = transientDenoNote(definition!.launcher);
      return transient ? { ...plan, notes: [transient, ...(plan.notes ?? [])] } : plan;
    }
    case "uninstall":
      return manager.uninstallPlan(request.name);
    default:
      return manager.controlPlan(request.action as "start" | "stop" | "restart", request.name);
  }
}

/**
 * Carries out `echosrv service ...`.
 *
 * @param request what was asked
 * @param io where to write (standard output and error by default)
 * @param manager the service manager (this system's by default)
 * @returns the exit code: 0 done, 1 failed (message printed), 2 usage error; status: 0 running, 3 not running,
 *   4 not installed
 */
export async function runServiceCommand(
  request: ServiceRequest,
  io: CommandOutput = stdio,
  manager?: ServiceManager,
): Promise<number> {
  try {
    manager ??= managerFor(Deno.build.os);
    if (request.action === "status") {
      await manager.available();
      const status = await manager.status(request.name);
      io.out(`${request.name}: ${status.state}${status.pid ? ` (pid ${status.pid})` : ""}\n`);
      if (status.detail) io.out(`${status.detail}\n`);
      if (!status.installed) return STATUS_EXIT.notInstalled;
      return status.state === "running" ? STATUS_EXIT.running : STATUS_EXIT.notRunning;
    }

    let definition: ServiceDefinition | undefined;
    if (request.action === "install") {
      const problem = manager.startModeProblem(request.start);
      if (problem) {
        io.err(`echosrv: error: ${problem}\n`);
        return 2;
      }
      const defined = defineService(request, io);
      if (typeof defined === "number") return defined;
      definition = defined;
    }
    const plan = planFor(manager, request, definition);
    if (request.dryRun) {
      io.out(describePlan(plan, (argv) => manager!.formatCommand(argv)));
      await manager.available().catch((error: Error) =>
        io.err(`echosrv: note: here a real run would fail: ${error.message}\n`)
      );
      return 0;
    }

    await manager.available();
    if (!(manager instanceof WindowsManager)) requireRoot(request.action);
    const installed = await manager.installed(request.name);
    if (request.action === "install" && installed) {
      throw new ServiceError(
        `a service named ${request.name} is already installed; remove it first (echosrv service uninstall --name ` +
          `${request.name}) or choose another --name; nothing was changed`,
      );
    }
    if (request.action !== "install" && !installed) {
      throw new ServiceError(`no service named ${request.name} is installed (${manager.system})`);
    }
    await executePlan(plan, (line) => io.out(`${line}\n`), (argv) => manager!.formatCommand(argv));
    io.out(`${plan.summary}: done\n`);
    for (const note of plan.notes ?? []) io.out(`note: ${note}\n`);
    return 0;
  } catch (error) {
    if (!(error instanceof ServiceError)) throw error;
    io.err(`echosrv: ${error.message}\n`);
    return 1;
  }
}
