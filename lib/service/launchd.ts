// launchd: echosrv as a launchd daemon on macOS. A property list in /Library/LaunchDaemons/NAME.plist runs the
// absolute binary with the baked options, starts it at boot (RunAtLoad) and again when it exits with an error
// (KeepAlive SuccessfulExit=false), and gives a stop the time --shutdown-timeout asks for (ExitTimeOut). It runs as a
// dedicated user (UserName), _NAME unless --account names another, which must exist (install checks, and says how to
// create it); its log folder /Library/Logs/NAME/ is that user's. `launchctl bootstrap` loads it, `bootout` unloads it.

// Paths in a property list are macOS paths, whatever system prints the plan (--dry-run runs anywhere).
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
import { type Plan, runTool, shellQuote } from "./plan.ts";
import { SERVER_ENV } from "../runtime.ts";
import { VERSION } from "../version.ts";

/** Where system-wide daemons are defined. */
export const DAEMON_DIR = "/Library/LaunchDaemons";

/** `launchctl` exit codes that mean "no such service loaded" (ESRCH, and launchd's own "not found"). */
const NOT_LOADED = [3, 113];

/** The user a daemon runs as: `--account`, or _NAME (the convention for macOS's own service users). */
export function launchdUser(definition: ServiceDefinition): string {
  return definition.account ?? `_${definition.name}`;
}

/** The service's log folder and file. */
export function defaultLogFile(name: string): string {
  return `/Library/Logs/${name}/${name}.log`;
}

function xml(text: string): string {
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(text)) {
    throw new ServiceError(`control characters cannot go into a property list: ${JSON.stringify(text)}`);
  }
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

/** The service's argv: the program, the baked options, and the log file under /Library/Logs unless one is given. */
export function launchdServiceArgv(definition: ServiceDefinition): string[] {
  const argv = [...launchArgs(definition.launcher, "darwin"), ...definition.serverArgs];
  return definition.config.log.file === undefined ? [...argv, "--log-file", defaultLogFile(definition.name)] : argv;
}

/**
 * The property list.
 *
 * @param definition the service
 * @returns the plist's XML text
 */
export function launchdPlist(definition: ServiceDefinition): string {
  const { name, config, launcher } = definition;
  const files = fileLimit(config.server.maxConnections);
  const string = (value: string) => `<string>${xml(value)}</string>`;
  // SERVER_ENV is read by Deno at process start, compiled executable included (lib/runtime.ts).
  const variables: Array<[string, string]> = [
    ...Object.entries(SERVER_ENV),
    ...(launcher.kind === "source"
      ? [...(launcher.denoDir ? [["DENO_DIR", launcher.denoDir] as [string, string]] : []), [
        "DENO_NO_UPDATE_CHECK",
        "1",
      ] as [string, string]]
      : []),
  ];
  const environment = [
    "  <key>EnvironmentVariables</key>",
    "  <dict>",
    ...variables.flatMap(([key, value]) => [`    <key>${xml(key)}</key>`, `    ${string(value)}`]),
    "  </dict>",
  ];
  const comment = (text: string) => xml(text).replaceAll("--", "- -");
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    `<!-- ${
      comment(
        `${name}: written by echosrv service install (echosrv ${VERSION}). ${definition.displayName}: ` +
          definition.description,
      )
    } -->`,
    '<plist version="1.0">',
    "<dict>",
    "  <key>Label</key>",
    `  ${string(name)}`,
    "  <key>ProgramArguments</key>",
    "  <array>",
    ...launchdServiceArgv(definition).map((arg) => `    ${string(arg)}`),
    "  </array>",
    ...environment,
    "  <key>UserName</key>",
    `  ${string(launchdUser(definition))}`,
    "  <key>WorkingDirectory</key>",
    "  <string>/</string>",
    "  <key>RunAtLoad</key>",
    definition.start !== "manual" ? "  <true/>" : "  <false/>",
    "  <key>KeepAlive</key>",
    "  <dict>",
    "    <key>SuccessfulExit</key>",
    "    <false/>",
    "  </dict>",
    "  <key>ThrottleInterval</key>",
    "  <integer>5</integer>",
    "  <key>ExitTimeOut</key>",
    `  <integer>${stopGraceSeconds(config)}</integer>`,
    "  <key>SoftResourceLimits</key>",
    "  <dict>",
    "    <key>NumberOfFiles</key>",
    `    <integer>${files}</integer>`,
    "  </dict>",
    "  <key>HardResourceLimits</key>",
    "  <dict>",
    "    <key>NumberOfFiles</key>",
    `    <integer>${files}</integer>`,
    "  </dict>",
    "  <key>StandardErrorPath</key>",
    `  ${string(`/Library/Logs/${name}/stderr.log`)}`,
    "</dict>",
    "</plist>",
  ].join("\n") + "\n";
}

/** launchd, through launchctl. */
export class LaunchdManager implements ServiceManager {
  readonly system = "launchd";

  /**
   * launchd has no delayed start: it loads every daemon with RunAtLoad at boot, in no order it lets a plist set, so
   * `delayed` is refused.
   */
  startModeProblem(mode: StartMode): string | undefined {
    if (mode !== "delayed") return undefined;
    return "--start delayed is Windows' delayed automatic start (after the other automatic services at boot); " +
      "launchd has no such start: it starts every daemon marked RunAtLoad at boot, in no set order; use --start auto " +
      "(RunAtLoad: at boot, and now) or --start manual";
  }

  /**
   * The manager of launchd daemons.
   *
   * @param daemonDir where property lists are written
   */
  constructor(readonly daemonDir: string = DAEMON_DIR) {}

  formatCommand(argv: string[]): string {
    return shellQuote(argv);
  }

  #plistPath(name: string): string {
    return posix.join(this.daemonDir, `${name}.plist`);
  }

  async available(): Promise<void> {
    if (Deno.build.os !== "darwin") throw new ServiceError("launchd exists on macOS only");
    const result = await runTool(["launchctl", "version"]);
    if (result.code !== 0) throw new ServiceError(`launchctl does not work here: ${result.stderr.trim()}`);
  }

  async installed(name: string): Promise<boolean> {
    try {
      Deno.statSync(this.#plistPath(name));
      return true;
    } catch {
      // no plist; maybe loaded from elsewhere
    }
    return (await runTool(["launchctl", "print", `system/${name}`])).code === 0;
  }

  installPlan(definition: ServiceDefinition): Plan {
    const { name } = definition;
    const path = this.#plistPath(name);
    const logFile = definition.config.log.file ?? defaultLogFile(name);
    const user = launchdUser(definition);
    if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/.test(user)) {
      throw new ServiceError(`--account: "${user}" is not a macOS user name`);
    }
    return {
      summary: `install the launchd daemon ${name} (${
        definition.start !== "manual" ? "starts at boot and now" : "manual start"
      })`,
      steps: [
        {
          kind: "run",
          argv: ["dscl", ".", "-read", `/Users/${user}`, "UniqueID"],
          explain: () =>
            `the user ${user} that the daemon is to run as does not exist on this Mac; create it first (see ` +
            "echosrv's README, macOS) or name another with --account; nothing was changed",
        },
        { kind: "mkdir", path: `/Library/Logs/${name}`, mode: 0o755 },
        { kind: "run", argv: ["chown", "-R", user, `/Library/Logs/${name}`] },
        { kind: "write", path, content: launchdPlist(definition), mode: 0o644, undo: [{ kind: "remove", path }] },
        // A daemon disabled earlier (launchctl disable) would refuse to load.
        { kind: "run", argv: ["launchctl", "enable", `system/${name}`] },
        {
          kind: "run",
          argv: ["launchctl", "bootstrap", "system", path],
          undo: [{ kind: "run", argv: ["launchctl", "bootout", `system/${name}`], okCodes: NOT_LOADED }],
        },
      ],
      notes: [
        `the daemon runs as the user ${user}; logs: ${logFile} (and ${`/Library/Logs/${name}/stderr.log`} for ` +
        "anything written before logging starts)",
      ],
    };
  }

  uninstallPlan(name: string): Plan {
    return {
      summary: `stop and remove the launchd daemon ${name}`,
      steps: [
        { kind: "run", argv: ["launchctl", "bootout", `system/${name}`], okCodes: NOT_LOADED },
        { kind: "remove", path: this.#plistPath(name) },
      ],
      notes: [`the log folder /Library/Logs/${name} is kept`],
    };
  }

  controlPlan(action: "start" | "stop" | "restart", name: string): Plan {
    const argv = action === "start"
      ? ["launchctl", "kickstart", `system/${name}`]
      : action === "stop"
      ? ["launchctl", "kill", "SIGTERM", `system/${name}`]
      : ["launchctl", "kickstart", "-k", `system/${name}`];
    return { summary: `${action} the launchd daemon ${name}`, steps: [{ kind: "run", argv }] };
  }

  async status(name: string): Promise<ServiceStatus> {
    const result = await runTool(["launchctl", "print", `system/${name}`]);
    if (NOT_LOADED.includes(result.code)) return { installed: false, state: "not installed", detail: "" };
    if (result.code !== 0) throw new ServiceError(`launchctl print system/${name} failed: ${result.stderr.trim()}`);
    const state = /^\s*state = (.+)$/m.exec(result.stdout)?.[1]?.trim() ?? "unknown";
    const pid = Number(/^\s*pid = (\d+)$/m.exec(result.stdout)?.[1] ?? 0);
    return {
      installed: true,
      state: state === "not running" ? "stopped" : state,
      ...(pid > 0 ? { pid } : {}),
      detail: result.stdout.split("\n").slice(0, 20).join("\n").trim(),
    };
  }
}
