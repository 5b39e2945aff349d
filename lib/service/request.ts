// request: what `echosrv service ...` asks for, as lib/options.ts reads it from the command line (the service
// subcommands are part of echosrv's one command-line definition) and lib/service/commands.ts carries it out.

import type { StartMode } from "./contract.ts";

/** What `echosrv service` can do. */
export type ServiceAction = "install" | "uninstall" | "start" | "stop" | "restart" | "status";

/** A parsed `echosrv service ...` command line. */
export interface ServiceRequest {
  /** What to do. */
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
