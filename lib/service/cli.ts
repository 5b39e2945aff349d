// cli: the `echosrv service ...` subcommands as commander definitions (install, uninstall, start, stop, restart,
// status) and the request they parse into. It runs nothing: lib/service/commands.ts carries the request out.

import { type Command, InvalidArgumentError, Option } from "commander";
import type { StartMode } from "./contract.ts";

/** What `echosrv service` can do. */
export type ServiceAction = "install" | "uninstall" | "start" | "stop" | "restart" | "status";

/** A parsed `echosrv service ...` command line. */
export interface ServiceRequest {
  action: ServiceAction;
  /** The service's name (systemd unit, launchd label, SCM service name). */
  name: string;
  /** install only: the name people see; a default is made from the name when absent. */
  displayName?: string;
  /** install only: one sentence on what it is; a default names the port. */
  description?: string;
  /** install only: start at boot (and now), at boot delayed (Windows), or only on request. */
  start: StartMode;
  /** install only: the account the service runs as; undefined for the least-privileged default. */
  account?: string;
  /** Print what would be written and run, change nothing. */
  dryRun: boolean;
  /** install only: the server options after `--`, baked into the service's command line. */
  serverArgs: string[];
}

/** The default service name. */
export const DEFAULT_SERVICE_NAME = "echosrv";

function serviceName(text: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(text) || text.endsWith(".service") || text.endsWith(".plist")) {
    throw new InvalidArgumentError(
      `"${text}" is not a usable service name: use 1 to 64 letters, digits, '-', '_' or '.', starting with a ` +
        "letter or digit (example: echosrv-7)",
    );
  }
  return text;
}

function oneLineText(max: number): (text: string) => string {
  return (text) => {
    if (text.trim() === "") throw new InvalidArgumentError("the text is empty");
    // deno-lint-ignore no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(text)) {
      throw new InvalidArgumentError("the text must be one line, without control characters");
    }
    if (text.length > max) throw new InvalidArgumentError(`the text is longer than ${max} characters`);
    return text;
  };
}

/** The raw option values commander hands over. */
interface RawServiceOptions {
  name: string;
  displayName?: string;
  description?: string;
  start: StartMode;
  account?: string;
  dryRun?: boolean;
}

/**
 * Adds `service` and its subcommands to the program.
 *
 * @param program the `echosrv` command
 * @param configure applies the program's shared settings (output, errors, help) to each new command
 * @param onRequest receives the parsed request when a subcommand is given
 * @param args the whole command line being parsed (to tell whether the server options came after `--`)
 */
export function addServiceCommand(
  program: Command,
  configure: (command: Command) => Command,
  onRequest: (request: ServiceRequest) => void,
  args: readonly string[],
): void {
  const service = configure(program.createCommand("service"))
    .description(
      "install echosrv as a system service (Windows SCM, systemd, launchd) and control it; see `echosrv service " +
        "install --help`",
    )
    .allowExcessArguments()
    .action((_opts: unknown, command: Command) => {
      const [word] = command.args;
      service.error(
        word === undefined
          ? "error: name what to do: install, uninstall, start, stop, restart or status"
          : `error: unknown command '${word}' (known: install, uninstall, start, stop, restart, status)`,
        { exitCode: 2, code: "echosrv.service.noAction" },
      );
    });
  const nameOption = () =>
    new Option("--name <name>", "the service's name").default(DEFAULT_SERVICE_NAME).argParser(serviceName);
  const dryRunOption = () => new Option("--dry-run", "print exactly what would be written and run; change nothing");

  const install = configure(service.createCommand("install"))
    .description(
      "register echosrv as a service and (with --start auto) start it now; put server options after --, e.g. " +
        "`echosrv service install -- --port 40007 --max-connections 5000`",
    )
    .addOption(nameOption())
    .addOption(new Option("--display-name <text>", 'the name people see (default: "<name> TCP echo server")')
      .argParser(oneLineText(256)))
    .addOption(new Option("--description <text>", "one sentence on what it is").argParser(oneLineText(1024)))
    .addOption(
      new Option(
        "--start <mode>",
        "auto: start at boot, and now; delayed: the same, after the other services at boot (Windows); manual: " +
          "only when started",
      ).choices(["auto", "delayed", "manual"]).default("auto"),
    )
    .addOption(
      new Option(
        "--account <name>",
        "the account it runs as (default, least privilege: Windows NT SERVICE\\<name>, its virtual account; " +
          "Linux a dynamic user; macOS the user _<name>)",
      ).argParser(oneLineText(256)),
    )
    .addOption(dryRunOption())
    .argument("[server-options...]", "echosrv's server options for the service, after --")
    .showHelpAfterError(
      "(see `echosrv service install --help`; server options go after --, as in `echosrv service install -- --port 7`)",
    )
    .action((serverArgs: string[], opts: RawServiceOptions) => {
      if (serverArgs.length > 0 && !args.includes("--")) {
        install.error(
          `error: put the server options after --, as in \`echosrv service install -- ${serverArgs.join(" ")}\``,
          { exitCode: 2, code: "echosrv.service.noDashDash" },
        );
      }
      onRequest({
        action: "install",
        name: opts.name,
        ...(opts.displayName ? { displayName: opts.displayName } : {}),
        ...(opts.description ? { description: opts.description } : {}),
        start: opts.start,
        ...(opts.account ? { account: opts.account } : {}),
        dryRun: opts.dryRun ?? false,
        serverArgs,
      });
    });
  service.addCommand(install);

  const simple: [ServiceAction, string, boolean][] = [
    ["uninstall", "stop the service and remove its registration (its log files are kept)", true],
    ["start", "start the installed service", true],
    ["stop", "stop the service (gracefully: open sessions get --shutdown-timeout to finish)", true],
    ["restart", "stop the service, then start it", true],
    [
      "status",
      "say whether the service is installed and running (exit 0 running, 3 not running, 4 not installed)",
      false,
    ],
  ];
  for (const [action, description, mutates] of simple) {
    const command = configure(service.createCommand(action)).description(description).addOption(nameOption());
    if (mutates) command.addOption(dryRunOption());
    command.action((opts: RawServiceOptions) => {
      onRequest({ action, name: opts.name, start: "auto", dryRun: opts.dryRun ?? false, serverArgs: [] });
    });
    service.addCommand(command);
  }
  program.addCommand(service);
}
