// contract: what echosrv's service support is made of, shared by every platform (the shape of Go's
// kardianos/service). A ServiceProgram is what a service manager runs (start must not wait for the end, stop must
// return at once); a ServiceManager registers, starts, stops and reports on a service, one module per platform
// (systemd.ts, launchd.ts, windows.ts), through a Plan (plan.ts: the files it would write and the commands it would
// run, which `--dry-run` prints and executePlan carries out, undoing what it did if a step fails) and a Launcher
// (launcher.ts: how the service's process starts). Each platform owns its run loop: the SCM's is scm.ts, the
// console's console.ts.

/**
 * echosrv's service support: one contract, one module per platform.
 *
 * @example Install echosrv as a systemd service with baked options, showing first what will be done
 * ```ts
 * import type { ServiceDefinition } from "./contract.ts";
 * import { launcherOfThisProcess } from "./launcher.ts";
 * import { describePlan, executePlan } from "./plan.ts";
 * import { SystemdManager } from "./systemd.ts";
 * import { parseCommandLine } from "../options.ts";
 *
 * const serverArgs = ["--port", "40007", "--max-connections", "5000"];
 * const parsed = parseCommandLine(serverArgs);
 * if (parsed.kind !== "run") throw new Error("not server options");
 * const definition: ServiceDefinition = {
 *   name: "echosrv",
 *   displayName: "echosrv TCP echo server",
 *   description: "TCP echo server on port 40007",
 *   start: "auto",
 *   launcher: launcherOfThisProcess(),
 *   serverArgs,
 *   config: parsed.config,
 * };
 * const manager = new SystemdManager();
 * const plan = manager.installPlan(definition);
 * console.log(describePlan(plan)); // what `echosrv service install --dry-run` prints
 * await manager.available(); // throws ServiceError where systemd is not running
 * await executePlan(plan, console.log); // needs root; undoes what it did if a step fails
 * ```
 *
 * @module
 */

import { DEFAULT_HOSTS, type RunConfig } from "../config.ts";
import type { Launcher } from "./launcher.ts";
import type { Plan } from "./plan.ts";

/** A running service, as its program hands it to the service manager's code. */
export interface RunningService {
  /** Begins a graceful stop and returns at once; `shutdown` means the machine is going down (less time). */
  stop(reason: "stop" | "shutdown"): void;
  /** Stops at once, or cuts a graceful stop short: a deliberate second stop request in a console (the SCM has none). */
  stopNow(): void;
  /** Resolves with the exit code once the service has stopped (after {@link stop}, or by itself on a failure). */
  readonly finished: Promise<number>;
}

/** What a service manager runs. */
export interface ServiceProgram {
  /**
   * Starts the service and resolves once it serves, or with a non-zero exit code when it cannot start. Must not
   * wait for the service to end.
   *
   * @param startParameters arguments given to this start only (`sc start NAME a b` on Windows)
   * @param serviceName the name the service manager knows it by
   */
  start(startParameters: string[], serviceName: string): Promise<number | RunningService>;
}

/**
 * When the service starts: at boot (and now, on install), at boot after the other automatic services (Windows'
 * delayed auto-start, which systemd and launchd do not have: they refuse it, see
 * {@link ServiceManager.startModeProblem}), or only when asked.
 */
export type StartMode = "auto" | "delayed" | "manual";

/** Everything a manager needs to register a service. */
export interface ServiceDefinition {
  /** The service's name (unit, label, SCM key): letters, digits, `-`, `_`, `.`. */
  name: string;
  /** The name people see (SCM display name, systemd Description=). */
  displayName: string;
  /** A sentence on what it is. */
  description: string;
  /** Boot start or manual start. */
  start: StartMode;
  /**
   * The account it runs as, as `--account` gave it; undefined for each manager's least-privileged default (Windows:
   * its virtual account NT SERVICE\NAME; systemd: a dynamic user; launchd: the user _NAME).
   */
  account?: string;
  /** What runs. */
  launcher: Launcher;
  /** The server options baked into the service's command line, already validated. */
  serverArgs: string[];
  /** What those options configure (limits, port, log file): the unit's settings follow from it. */
  config: RunConfig;
}

/**
 * The file descriptors a service may open, for the managers that set a limit (systemd's LimitNOFILE, launchd's
 * NumberOfFiles): the connection cap plus room for listeners, logs and the runtime.
 *
 * @param maxConnections `--max-connections` (0 = no limit)
 * @returns the descriptor limit
 */
export function fileLimit(maxConnections: number): number {
  return maxConnections === 0 ? 1_048_576 : Math.max(65_536, maxConnections + 1024);
}

/**
 * How long a manager waits for the service to stop before it kills it: `--shutdown-timeout` plus 5 s, so that a
 * graceful stop is never cut short.
 *
 * @param config the service's configuration
 * @returns the wait in whole seconds
 */
export function stopGraceSeconds(config: RunConfig): number {
  return Math.ceil(config.server.shutdownTimeoutMs / 1000) + 5;
}

/**
 * Where the server listens, in words for a description: "on port 40007 (IPv4 and IPv6)" for the default hosts,
 * otherwise the hosts themselves ("on port 7 of 127.0.0.1 and ::1").
 *
 * @param hosts the `--host` values (DEFAULT_HOSTS when none was given)
 * @param port the port
 */
export function listenWords(hosts: readonly string[], port: number): string {
  const same = hosts.length === DEFAULT_HOSTS.length && DEFAULT_HOSTS.every((h) => hosts.includes(h));
  if (same) return `on port ${port} (IPv4 and IPv6)`;
  const list = hosts.length === 1 ? hosts[0] : `${hosts.slice(0, -1).join(", ")} and ${hosts.at(-1)}`;
  return `on port ${port} of ${list}`;
}

/** What a manager reports about a service. */
export interface ServiceStatus {
  /** False when no service of that name is registered. */
  installed: boolean;
  /** running, stopped, starting, stopping, or what the manager said when it is none of those. */
  state: string;
  /** The process id while running, when the manager tells it. */
  pid?: number;
  /** The manager's own words, for people. */
  detail: string;
}

/** Every platform's manager offers this. */
export interface ServiceManager {
  /** The service manager's name as people know it: systemd, launchd, the Windows SCM. */
  readonly system: string;
  /** Formats a command as it would be typed on this platform (for --dry-run and messages). */
  formatCommand(argv: string[]): string;
  /**
   * Why this manager has no start of this kind, with what to use instead (a usage error, exit 2, before anything
   * is planned); undefined when it has one.
   */
  startModeProblem(mode: StartMode): string | undefined;
  /** Throws {@link ServiceError} when the service manager is missing or not running here. */
  available(): Promise<void>;
  /** Whether a service of this name is registered. */
  installed(name: string): Promise<boolean>;
  /** Register the service (and start it now when it starts at boot). */
  installPlan(definition: ServiceDefinition): Plan;
  /** Stop it and remove the registration. */
  uninstallPlan(name: string): Plan;
  /** Start, stop or restart it. */
  controlPlan(action: "start" | "stop" | "restart", name: string): Plan;
  /** Ask the manager how it is. */
  status(name: string): Promise<ServiceStatus>;
}
