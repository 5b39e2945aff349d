// systemd: echosrv as a systemd service on Linux. A unit in /etc/systemd/system/NAME.service runs the absolute
// binary with the baked options, restarts it on failure, waits for the network, and runs it in the sandbox systemd
// offers (a dynamic user, NoNewPrivileges, ProtectSystem=strict, ProtectHome, PrivateTmp, no capabilities but the
// one a port below 1024 needs), with its log file in LogsDirectory (/var/log/NAME). `systemctl daemon-reload` and
// `enable --now` make it live; uninstall reverses it.

// Paths in a unit are Linux paths, whatever system prints the plan (--dry-run runs anywhere).
import { posix } from "node:path";
import {
  fileLimit,
  type ServiceDefinition,
  type ServiceManager,
  type ServiceStatus,
  type StartMode,
  stopGraceSeconds,
} from "./contract.ts";
import { ServiceError } from "./error.ts";
import { launchArgs } from "./launcher.ts";
import { type Plan, runTool, shellQuote, type Step } from "./plan.ts";
import { SERVER_ENV } from "../runtime.ts";
import { VERSION } from "../version.ts";

/** Where units written by the administrator live. */
export const UNIT_DIR = "/etc/systemd/system";

/**
 * Quotes one ExecStart= argument by systemd's rules: plain words stay as they are, others go in double quotes with
 * `\` and `"` escaped; `%` (specifiers) and `$` (variables) are doubled everywhere, so they are taken literally.
 *
 * @param arg the argument
 * @returns the argument as written in the unit
 */
export function quoteSystemdArg(arg: string): string {
  if (/[\n\r]/.test(arg)) throw new ServiceError(`an argument of the service cannot contain a line break: ${arg}`);
  const literal = arg.replaceAll("%", "%%").replaceAll("$", "$$$$");
  if (literal !== "" && /^[A-Za-z0-9_@+=:,./%$-]+$/.test(literal)) return literal;
  return `"${literal.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/**
 * Writes the program of ExecStart=: systemd refuses quotes and backslashes in it outright, expands `%` specifiers
 * but no `$` variables there, and splits at spaces unless quoted.
 *
 * @param path the absolute path of the program
 * @returns the path as written in the unit
 * @throws {ServiceError} for a path systemd cannot run
 */
export function quoteSystemdProgram(path: string): string {
  if (/["'\\\n\r]/.test(path)) {
    throw new ServiceError(
      `systemd cannot run a program whose path contains a quote or a backslash (${path}); move it, for example ` +
        "to /usr/local/bin",
    );
  }
  const literal = path.replaceAll("%", "%%");
  return /\s/.test(literal) ? `"${literal}"` : literal;
}

/**
 * Writes the value of a setting such as ReadWritePaths= or Environment=: `%` doubled (specifiers), quoted when it
 * has spaces, quotes or backslashes.
 */
function quoteSystemdValue(value: string): string {
  if (/[\n\r]/.test(value)) throw new ServiceError(`a value in the unit cannot contain a line break: ${value}`);
  const literal = value.replaceAll("%", "%%");
  if (!/[\s"'\\]/.test(literal)) return literal;
  return `"${literal.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/** The service's own log file, in its LogsDirectory. */
export function defaultLogFile(name: string): string {
  return `/var/log/${name}/${name}.log`;
}

/** The service's argv: the program, the baked options, and the log file in LogsDirectory unless one is given. */
export function systemdServiceArgv(definition: ServiceDefinition): string[] {
  const argv = [...launchArgs(definition.launcher, "linux"), ...definition.serverArgs];
  return definition.config.log.file === undefined ? [...argv, "--log-file", defaultLogFile(definition.name)] : argv;
}

/** True when `path` lies under a directory that ProtectHome=yes hides. */
function underHome(path: string): boolean {
  return /^\/(home|root|run\/user)(\/|$)/.test(path);
}

/** The files the service's process must read (its dynamic user is unprivileged). */
function filesTheServiceReads(definition: ServiceDefinition): string[] {
  const l = definition.launcher;
  return l.kind === "compiled" ? [l.executable] : [l.deno, l.main, l.config, ...(l.denoDir ? [l.denoDir] : [])];
}

/**
 * The unit file.
 *
 * @param definition the service
 * @returns the unit's text
 */
export function systemdUnit(definition: ServiceDefinition): string {
  const { name, config, launcher } = definition;
  const argv = systemdServiceArgv(definition);
  const reads = filesTheServiceReads(definition);
  const port = config.server.port;
  const lowPort = port > 0 && port < 1024;
  const logFile = config.log.file ?? defaultLogFile(name);
  const extraWritable = posix.dirname(logFile) === `/var/log/${name}` ? [] : [posix.dirname(logFile)];
  // Let the stop take its course: systemd's default would kill after 90 s, whatever --shutdown-timeout says.
  const stopSeconds = stopGraceSeconds(config);
  const oneLine = (text: string) => text.replace(/[\r\n]+/g, " ").replaceAll("%", "%%");
  const lines = [
    `# ${name}.service: written by \`echosrv service install\` (echosrv ${VERSION}); remove it with`,
    `# \`echosrv service uninstall --name ${name}\`. ${oneLine(definition.description)}`,
    "[Unit]",
    `Description=${oneLine(definition.displayName)}`,
    "Wants=network-online.target",
    "After=network-online.target",
    "",
    "[Service]",
    "Type=exec",
    `ExecStart=${[quoteSystemdProgram(argv[0]), ...argv.slice(1).map(quoteSystemdArg)].join(" ")}`,
    // Read by Deno at process start, compiled executable included (lib/runtime.ts).
    ...Object.entries(SERVER_ENV).map(([name, value]) => `Environment=${quoteSystemdValue(`${name}=${value}`)}`),
    ...(launcher.kind === "source"
      ? [
        ...(launcher.denoDir ? [`Environment=${quoteSystemdValue(`DENO_DIR=${launcher.denoDir}`)}`] : []),
        "Environment=DENO_NO_UPDATE_CHECK=1",
      ]
      : []),
    "Restart=on-failure",
    "RestartSec=2s",
    `TimeoutStopSec=${stopSeconds}s`,
    `LimitNOFILE=${fileLimit(config.server.maxConnections)}`,
    // The sandbox: what `systemd-analyze security` scores, all of it that costs echosrv nothing (it listens, echoes
    // and writes one log file). MemoryDenyWriteExecute= is left out: V8's JIT compiler makes memory executable.
    ...(definition.account === undefined ? ["DynamicUser=yes"] : [`User=${quoteSystemdValue(definition.account)}`]),
    `LogsDirectory=${name}`,
    ...extraWritable.map((dir) => `ReadWritePaths=${quoteSystemdValue(dir)}`),
    "UMask=0027",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    `ProtectHome=${reads.some(underHome) || underHome(logFile) ? "read-only" : "yes"}`,
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
    // A user namespace of its own, except when a port below 1024 needs the capability in the host's namespace.
    ...(lowPort ? [] : ["PrivateUsers=yes"]),
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
    `CapabilityBoundingSet=${lowPort ? "CAP_NET_BIND_SERVICE" : ""}`,
    ...(lowPort ? ["AmbientCapabilities=CAP_NET_BIND_SERVICE"] : []),
    "",
    "[Install]",
    "WantedBy=multi-user.target",
  ];
  return lines.join("\n") + "\n";
}

/** Paths the unprivileged service user could not read (a directory on the way lacks o+x, the file o+r). */
function unreadableByOthers(path: string): string | undefined {
  if (!posix.isAbsolute(path)) return undefined;
  const parts = path.split("/").filter((p) => p !== "");
  for (let i = 1; i <= parts.length; i++) {
    const here = "/" + parts.slice(0, i).join("/");
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(here);
    } catch {
      return `${here} does not exist`;
    }
    const mode = info.mode ?? 0o777;
    if (info.isDirectory && (mode & 0o001) === 0) {
      return `${here} is not searchable by other users (mode ${(mode & 0o777).toString(8)})`;
    }
    if (i === parts.length && !info.isDirectory && (mode & 0o004) === 0) {
      return `${here} is not readable by other users (mode ${(mode & 0o777).toString(8)})`;
    }
  }
  return undefined;
}

/** What systemd says about a unit's process, as `systemctl show` prints it. */
export type UnitProperties = Record<string, string>;

/** How long the service must stay up, without a restart, for a start to count as good. */
export const STAY_UP_MS = 2_000;

/**
 * Judges a start from the unit's properties: systemd reports a Type=exec unit started as soon as the program is
 * running, and a server that cannot listen (port in use) exits a moment later and is restarted in a loop. So a
 * start is good once the same process has been running for {@link STAY_UP_MS}.
 *
 * @param props ActiveState, SubState, MainPID (and Result)
 * @param since when (ms) this MainPID was first seen running, or undefined
 * @param now the time now (ms)
 * @returns "up", "wait" (with the MainPID to remember), or why it failed
 */
export function judgeStart(
  props: UnitProperties,
  since: { pid: string; at: number } | undefined,
  now: number,
): { verdict: "up" } | { verdict: "wait"; since?: { pid: string; at: number } } | { verdict: "failed"; why: string } {
  if (props.ActiveState === "failed") return { verdict: "failed", why: `it failed (${props.Result ?? "?"})` };
  if (props.SubState === "auto-restart") return { verdict: "failed", why: "it exited and systemd is restarting it" };
  if (props.ActiveState !== "active" || props.SubState !== "running" || !Number(props.MainPID)) {
    return { verdict: "wait" };
  }
  if (since === undefined || since.pid !== props.MainPID) {
    return { verdict: "wait", since: { pid: props.MainPID, at: now } };
  }
  return now - since.at >= STAY_UP_MS ? { verdict: "up" } : { verdict: "wait", since };
}

/**
 * The journal of one run of a unit (one invocation): what the program printed and what systemd said about it,
 * from start to exit, at most `lines` lines. `systemctl status` is no use for this: while a unit waits to be
 * restarted it shows only systemd's own lines, not the program's account of why it exited (such as "port 17007 is
 * already in use").
 *
 * @param unit the unit, e.g. echosrv.service
 * @param invocationId its InvocationID (as `systemctl show` gives it); empty for the unit's latest lines
 * @param lines the most lines to return
 * @returns the journal lines, or "" when the journal cannot be read
 */
export async function journalOfRun(unit: string, invocationId: string, lines = 12): Promise<string> {
  // Lines written before this moment are in the journal once --sync returns (a root-only request; best effort).
  await runTool(["journalctl", "--sync"]).catch(() => undefined);
  const match = /^[0-9a-f]{32}$/.test(invocationId)
    ? [`_SYSTEMD_INVOCATION_ID=${invocationId}`, "+", `INVOCATION_ID=${invocationId}`]
    : ["--unit", unit];
  const shown = await runTool(["journalctl", "--no-pager", "--quiet", "--output=short", `--lines=${lines}`, ...match])
    .catch(() => undefined);
  return shown?.code === 0 ? shown.stdout.trim() : "";
}

/** A step that waits until the service has stayed up, and fails with the journal of the run that did not. */
function waitUntilServing(name: string): Step {
  const unit = `${name}.service`;
  let since: { pid: string; at: number } | undefined;
  return {
    kind: "wait",
    what: `${unit} stays running for ${STAY_UP_MS / 1000} s`,
    timeoutMs: 30_000,
    until: async () => {
      const shown = await runTool([
        "systemctl",
        "show",
        "--property=ActiveState,SubState,MainPID,Result,InvocationID",
        unit,
      ]);
      const props = parseProperties(shown.stdout);
      const judged = judgeStart(props, since, performance.now());
      if (judged.verdict === "up") return true;
      if (judged.verdict === "wait") {
        since = judged.since ?? since;
        return false;
      }
      const journal = await journalOfRun(unit, props.InvocationID ?? "");
      const account = journal ||
        (await runTool(["systemctl", "status", "--no-pager", "--lines=5", unit])).stdout.trim();
      throw new ServiceError(
        `${unit} did not stay up: ${judged.why}. ${journal ? "The journal of that run" : "systemd says"}:\n${account}`,
      );
    },
  };
}

function parseProperties(text: string): UnitProperties {
  return Object.fromEntries(
    text.split("\n").filter((l) => l.includes("=")).map((
      l,
    ) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

/** systemd, through systemctl. */
export class SystemdManager implements ServiceManager {
  readonly system = "systemd";

  /**
   * The manager of systemd units.
   *
   * @param unitDir where unit files are written (the default is where an administrator's units belong)
   */
  constructor(readonly unitDir: string = UNIT_DIR) {}

  /**
   * systemd has no delayed start: it starts units side by side at boot, each once the units it is ordered after
   * have started (echosrv's waits for network-online.target), so there are no "other automatic services" to come
   * after, and nothing to speed up by waiting. A timer (`OnBootSec=`) could delay it, but that would be a second
   * unit to install and a start that comes at an arbitrary time, not Windows' behaviour; so `delayed` is refused.
   */
  startModeProblem(mode: StartMode): string | undefined {
    if (mode !== "delayed") return undefined;
    return "--start delayed is Windows' delayed automatic start (after the other automatic services at boot); " +
      "systemd has no such start: it starts services side by side, each once what it is ordered after has started " +
      "(echosrv's unit waits for network-online.target); use --start auto (enabled at boot, started now) or " +
      "--start manual";
  }

  formatCommand(argv: string[]): string {
    return shellQuote(argv);
  }

  #unitPath(name: string): string {
    return posix.join(this.unitDir, `${name}.service`);
  }

  async available(): Promise<void> {
    let booted = false;
    try {
      booted = Deno.statSync("/run/systemd/system").isDirectory;
    } catch {
      // not booted with systemd
    }
    if (!booted) {
      throw new ServiceError(
        "systemd is not running on this machine (it was not booted with systemd as PID 1: /run/systemd/system is " +
          "missing), so there is no service manager to register with. `echosrv service install --dry-run` shows " +
          "the unit that would be written; on this machine run echosrv under the supervisor it uses instead",
      );
    }
    const version = await runTool(["systemctl", "--version"]);
    if (version.code !== 0) throw new ServiceError(`systemctl does not work here: ${version.stderr.trim()}`);
  }

  async installed(name: string): Promise<boolean> {
    try {
      Deno.statSync(this.#unitPath(name));
      return true;
    } catch {
      // not in unitDir; maybe elsewhere (a packaged unit of the same name)
    }
    const result = await runTool(["systemctl", "show", "--property=LoadState", `${name}.service`]);
    return result.code === 0 && !/LoadState=not-found/.test(result.stdout);
  }

  installPlan(definition: ServiceDefinition): Plan {
    const { name } = definition;
    const unit = `${name}.service`;
    const path = this.#unitPath(name);
    const reload = { kind: "run" as const, argv: ["systemctl", "daemon-reload"] };
    const notes: string[] = [];
    // One line per place (the files often share the directory that stops them), naming the file it stops.
    const unreadable = [
      ...new Map(
        filesTheServiceReads(definition).flatMap((file) => {
          const why = unreadableByOthers(file);
          if (!why) return [];
          return [[why, why.startsWith(`${file} `) ? why : `${why} (on the way to ${file})`] as const];
        }),
      ).values(),
    ];
    if (unreadable.length > 0) {
      notes.push(
        `the service runs as an unprivileged dynamic user and could not start: ${unreadable.join("; ")}. ` +
          (definition.launcher.kind === "compiled"
            ? "Put the executable where every user can read it, such as /usr/local/bin"
            : "From source, deno, the project and DENO_DIR must all be readable by every user; better, install " +
              "the compiled executable (deno task compile)"),
      );
    }
    if (definition.launcher.kind === "source") {
      notes.push(
        "this runs echosrv from source (deno run main.ts) with the npm packages already in DENO_DIR; for a " +
          "production service install the compiled executable (deno task compile) instead",
      );
    }
    const logFile = definition.config.log.file ?? defaultLogFile(name);
    notes.push(`logs: journalctl -u ${unit}, and the file ${logFile}`);
    return {
      summary: `install ${unit} (${definition.start !== "manual" ? "enabled at boot, started now" : "manual start"})`,
      steps: [
        {
          kind: "write",
          path,
          content: systemdUnit(definition),
          mode: 0o644,
          undo: [{ kind: "remove", path }, reload],
        },
        reload,
        ...(definition.start !== "manual"
          ? [{
            kind: "run" as const,
            argv: ["systemctl", "enable", "--now", unit],
            undo: [{ kind: "run" as const, argv: ["systemctl", "disable", "--now", unit] }],
          }, waitUntilServing(name)]
          : []),
      ],
      notes,
    };
  }

  uninstallPlan(name: string): Plan {
    const unit = `${name}.service`;
    return {
      summary: `stop, disable and remove ${unit}`,
      steps: [
        { kind: "run", argv: ["systemctl", "disable", "--now", unit] },
        { kind: "remove", path: this.#unitPath(name) },
        { kind: "run", argv: ["systemctl", "daemon-reload"] },
        // Forget a failed state, if any ("not loaded" is fine: there is nothing to forget).
        { kind: "run", argv: ["systemctl", "reset-failed", unit], okCodes: [1, 5] },
      ],
      notes: [`the log directory /var/log/${name} is kept`],
    };
  }

  controlPlan(action: "start" | "stop" | "restart", name: string): Plan {
    const run: Step = { kind: "run", argv: ["systemctl", action, `${name}.service`] };
    return { summary: `${action} ${name}.service`, steps: action === "stop" ? [run] : [run, waitUntilServing(name)] };
  }

  async status(name: string): Promise<ServiceStatus> {
    const unit = `${name}.service`;
    const shown = await runTool([
      "systemctl",
      "show",
      "--property=LoadState,ActiveState,SubState,MainPID,UnitFileState,InvocationID",
      unit,
    ]);
    if (shown.code !== 0) throw new ServiceError(`systemctl show ${unit} failed: ${shown.stderr.trim()}`);
    const props = parseProperties(shown.stdout);
    if (props.LoadState === "not-found") return { installed: false, state: "not installed", detail: "" };
    let detail = (await runTool(["systemctl", "status", "--no-pager", "--lines=5", unit])).stdout.trim();
    // A unit that exited with an error and waits to be restarted is "activating" to systemd: not starting, to a user.
    const crashed = props.SubState === "auto-restart" || props.ActiveState === "failed";
    if (crashed) {
      const journal = await journalOfRun(unit, props.InvocationID ?? "");
      if (journal) detail += `\nThe journal of its last run:\n${journal}`;
    }
    if (props.SubState === "auto-restart") {
      return { installed: true, state: "exited with an error, restarting", detail };
    }
    const states: Record<string, string> = {
      active: "running",
      inactive: "stopped",
      failed: "failed",
      activating: "starting",
      deactivating: "stopping",
      reloading: "running",
    };
    const pid = Number(props.MainPID);
    return {
      installed: true,
      state: states[props.ActiveState] ?? props.ActiveState,
      ...(pid > 0 ? { pid } : {}),
      detail,
    };
  }
}
