// faults/cli: `echosrv fault ...`, the command line of the control API (lib/faults/api.ts), so that a test script
// can switch faults in the middle of a test: list the table, set (add or change) or remove a profile, set a
// listener's profile, list the open connections. It reads the API's address and token from --api and --token, or
// from the server's own variables (ECHOSRV_FAULT_API, ECHOSRV_FAULT_API_TOKEN), so one environment serves both.
//
// Exit codes: 0 done; 1 the API could not be reached, refused the token, or failed; 2 a usage error, or a request
// the API refused as wrong (400, 404, 409), its message on standard error.

import { type Command, InvalidArgumentError, Option } from "commander";
import { FAULT_ENV_VARS } from "../environment.ts";
import { reasonOf } from "../request_failure.ts";
import { type CommanderCommand, DEFAULT_FAULT_API_PORT, parseAddress } from "./options.ts";
import type { ConnectionInfo } from "./runtime.ts";

/** How long a request may wait for the API's answer (ms): a change answers once every worker runs under it. */
const ANSWER_TIMEOUT_MS = 30_000;

/** What `echosrv fault ...` asks for. */
export type FaultRequest =
  & {
    /** The API's base URL, e.g. `http://127.0.0.1:9408`. */
    api: string;
    /** The bearer token sent as `Authorization: Bearer TOKEN` (RFC 6750), if the API requires one. */
    token?: string;
    /** Where the token came from (`--token` or `ECHOSRV_FAULT_API_TOKEN`), named when the API refuses it. */
    tokenFrom?: string;
    /** Print the API's JSON instead of a summary. */
    json: boolean;
  }
  & (
    | { action: "list" }
    | { action: "set"; name: string; spec?: string; clients?: string[]; open: boolean }
    | { action: "remove"; name: string; open: boolean }
    | { action: "listener"; listener: string; profile: string | null; open: boolean }
    | { action: "connections" }
  );

/**
 * Reads the API's address: a URL (`http://127.0.0.1:9408`), HOST:PORT, or a bare port (127.0.0.1). A wildcard
 * address (the server's `--fault-api 0.0.0.0:9408`) is reached through loopback.
 *
 * @param text the address as written
 * @returns the base URL, without a trailing slash
 */
export function apiBase(text: string): string {
  const value = text.trim();
  if (value.includes("://")) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new InvalidArgumentError(`"${text}" is not a URL (example: http://127.0.0.1:${DEFAULT_FAULT_API_PORT})`);
    }
    if (url.protocol !== "http:") throw new InvalidArgumentError(`"${text}": the control API speaks http://`);
    return url.origin;
  }
  let { host, port } = parseAddress(value, "127.0.0.1");
  if (host === "0.0.0.0") host = "127.0.0.1";
  if (host === "::") host = "::1";
  return `http://${host!.includes(":") ? `[${host}]` : host}:${port}`;
}

/**
 * Adds `echosrv fault` and its commands.
 *
 * @param program the program's command
 * @param configure the program's settings for a command (output, errors, help)
 * @param onRequest receives what was asked
 */
export function addFaultCommand(
  program: CommanderCommand,
  configure: (command: CommanderCommand) => CommanderCommand,
  onRequest: (request: FaultRequest) => void,
): void {
  const fault = configure(program.createCommand("fault"))
    .description("show and change a running echosrv's impairment profiles through its --fault-api")
    .allowExcessArguments()
    .action((_opts: unknown, command: Command) => {
      const [word] = command.args;
      fault.error(
        word === undefined
          ? "error: name what to do: list, set, remove, listener or connections"
          : `error: unknown command '${word}' (known: list, set, remove, listener, connections)`,
        { exitCode: 2, code: "echosrv.fault.noAction" },
      );
    });
  program.addCommand(fault);
  const common = (command: Command) =>
    configure(command)
      .addOption(
        new Option("--api <address>", "the control API: URL, HOST:PORT or PORT")
          .env(FAULT_ENV_VARS.faultApi).default(`http://127.0.0.1:${DEFAULT_FAULT_API_PORT}`).argParser(apiBase),
      )
      .addOption(new Option("--token <token>", "the API's bearer token").env(FAULT_ENV_VARS.faultApiToken))
      .addOption(new Option("--json", "print the API's JSON answer"));
  const openOption = () =>
    new Option("--open", "switch the open connections too (those under a profile), not only new ones");
  type Common = { api: string; token?: string; json?: boolean };
  /** What every request has; an empty token (`--token "$TOKEN"` with TOKEN unset) is no token. */
  const base = (opts: Common, command: Command) => ({
    api: apiBase(opts.api),
    json: opts.json === true,
    ...(opts.token !== undefined && opts.token !== ""
      ? {
        token: opts.token,
        tokenFrom: command.getOptionValueSource("token") === "env" ? FAULT_ENV_VARS.faultApiToken : "--token",
      }
      : {}),
  });

  fault.addCommand(
    common(fault.createCommand("list"))
      .description("show the profiles, the listeners and the table's generation")
      .action((opts: Common, command: Command) => onRequest({ ...base(opts, command), action: "list" })),
  );
  fault.addCommand(
    common(fault.createCommand("set"))
      .description("add or change a profile: `echosrv fault set slow latency 200ms, bandwidth 1Mbit`")
      .argument("<name>", "the profile's name")
      .argument("[impairments...]", 'its impairments, as --fault-profile writes them after "NAME:"')
      .addOption(new Option("--clients <cidrs>", "the client networks it is chosen for, comma-separated ('' for none)"))
      .addOption(openOption())
      .action(
        (name: string, words: string[], opts: Common & { clients?: string; open?: boolean }, command: Command) => {
          const spec = words.length ? words.join(" ") : undefined;
          const clients = opts.clients === undefined
            ? undefined
            : opts.clients.split(",").map((c) => c.trim()).filter((c) => c !== "");
          onRequest({
            ...base(opts, command),
            action: "set",
            name,
            open: opts.open === true,
            ...(spec !== undefined ? { spec } : {}),
            ...(clients !== undefined ? { clients } : {}),
          });
        },
      ),
  );
  fault.addCommand(
    common(fault.createCommand("remove"))
      .description("remove a profile (the listeners that used it get none)")
      .argument("<name>", "the profile's name")
      .addOption(openOption())
      .action((name: string, opts: Common & { open?: boolean }, command: Command) =>
        onRequest({ ...base(opts, command), action: "remove", name, open: opts.open === true })
      ),
  );
  fault.addCommand(
    common(fault.createCommand("listener"))
      .description("set a listener's profile: `echosrv fault listener 40017 flaky` (or none)")
      .argument("<listener>", "main, or a --fault-listen listener's port (or HOST:PORT)")
      .argument("<profile>", "a profile's name, or none")
      .addOption(openOption())
      .action((listener: string, profile: string, opts: Common & { open?: boolean }, command: Command) =>
        onRequest({
          ...base(opts, command),
          action: "listener",
          listener,
          profile: profile === "none" ? null : profile,
          open: opts.open === true,
        })
      ),
  );
  fault.addCommand(
    common(fault.createCommand("connections"))
      .description("list the open connections and the profile of each")
      .action((opts: Common, command: Command) => onRequest({ ...base(opts, command), action: "connections" })),
  );
}

/** Where the command writes; tests swap it. */
export interface FaultOutput {
  /** Writes to standard output: the answer (a summary, or the API's JSON with --json). */
  out(text: string): void;
  /** Writes to standard error: why a request failed, and warnings. */
  err(text: string): void;
}

const stdio: FaultOutput = {
  out: (text) => void Deno.stdout.writeSync(new TextEncoder().encode(text)),
  err: (text) => void Deno.stderr.writeSync(new TextEncoder().encode(text)),
};

/** Lays rows out in columns (the first row is the header). */
function columns(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) => row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i])).join("  "))
    .join("\n") + "\n";
}

type Json = Record<string, unknown>;

/** The summary of an answer, for people. */
function summary(request: FaultRequest, body: Json): string {
  const open = (b: Json) => b.switched === undefined ? "" : `; ${b.switched} open connection(s) switched`;
  switch (request.action) {
    case "list": {
      const profiles = body.profiles as Json[];
      const listeners = body.listeners as Array<{ id: string; profile: string | null }>;
      let text = `generation ${body.generation}, seed ${body.seed}\n`;
      if (profiles.length === 0) text += "no profiles\n";
      else {
        text += columns([
          ["PROFILE", "CLIENTS", "LISTENERS", "IMPAIRMENTS"],
          ...profiles.map((p) => [
            String(p.name),
            (p.clients as string[]).join(",") || "-",
            (p.listeners as string[]).join(",") || "-",
            String(p.spec),
          ]),
        ]);
      }
      return text + columns([["LISTENER", "PROFILE"], ...listeners.map((l) => [l.id, l.profile ?? "none"])]);
    }
    case "set": {
      const profile = body.profile as Json;
      return `profile ${profile.name} ${body.created ? "added" : "changed"}: ${profile.spec} ` +
        `(generation ${body.generation}${open(body)})\n`;
    }
    case "remove": {
      const unbound = body.unbound as string[];
      return `profile ${body.removed} removed (generation ${body.generation}${open(body)})` +
        (unbound.length ? `; listener(s) ${unbound.join(", ")} now have no profile` : "") + "\n";
    }
    case "listener": {
      const listener = body.listener as { id: string; profile: string | null };
      return `listener ${listener.id}: profile ${listener.profile ?? "none"} (generation ${body.generation}${
        open(body)
      })\n`;
    }
    case "connections": {
      const list = body.connections as ConnectionInfo[];
      if (list.length === 0) return `no open connections (generation ${body.generation})\n`;
      return columns([
        ["CLIENT", "LISTENER", "PROFILE", "GEN", "STATE", "IMPAIRMENTS", "ECHOED", "DROPPED", "AGE"],
        ...list.map((c) => [
          c.client,
          c.listener,
          c.profile ?? "-",
          c.generation === null ? "-" : String(c.generation),
          c.state,
          c.impairments.join(",") || "-",
          String(c.echoedBytes),
          String(c.droppedBytes),
          `${c.ageSeconds}s`,
        ]),
      ]);
    }
  }
}

/**
 * Says why the API refused a request's credentials (401), from its challenge's error code (RFC 6750 §3.1): none
 * when no token was sent, `invalid_token` when the token was not the server's; and how to give the right one.
 *
 * @param request what was asked (its token, and where the token came from)
 * @param challenge the answer's WWW-Authenticate header
 * @returns the message, or undefined when the challenge is not one of those two (the API's own message is shown)
 */
function tokenRefused(request: FaultRequest, challenge: string | null): string | undefined {
  if (challenge === null || !/^bearer\b/i.test(challenge)) return undefined;
  const error = /\berror="([^"]*)"/i.exec(challenge)?.[1];
  const how = `give the token echosrv was started with (--token TOKEN or ${FAULT_ENV_VARS.faultApiToken}=TOKEN)`;
  if (error === undefined && request.token === undefined) {
    return `the fault API at ${request.api} requires a token, and none was sent: ${how}`;
  }
  if (error === "invalid_token" && request.token !== undefined) {
    return `the fault API at ${request.api} did not accept the token from ${request.tokenFrom ?? "--token"}: ${how}`;
  }
  return undefined;
}

/**
 * Runs `echosrv fault ...`: one request to the control API, and its answer printed.
 *
 * @param request what was asked
 * @param output where to write (standard output and error by default)
 * @returns the exit code
 */
export async function runFaultCommand(request: FaultRequest, output: FaultOutput = stdio): Promise<number> {
  const path = (...parts: string[]) => `${request.api}/faults/${parts.map(encodeURIComponent).join("/")}`;
  const query = (open: boolean) => open ? "?open=1" : "";
  let method = "GET";
  let url = `${request.api}/faults`;
  let body: Json | undefined;
  switch (request.action) {
    case "list":
      break;
    case "connections":
      url = path("connections");
      break;
    case "set":
      method = "PUT";
      url = path("profiles", request.name) + query(request.open);
      body = {
        ...(request.spec !== undefined ? { spec: request.spec } : {}),
        ...(request.clients !== undefined ? { clients: request.clients } : {}),
      };
      break;
    case "remove":
      method = "DELETE";
      url = path("profiles", request.name) + query(request.open);
      break;
    case "listener":
      method = "PUT";
      url = path("listeners", request.listener) + query(request.open);
      body = { profile: request.profile };
      break;
  }
  const headers: Record<string, string> = {};
  if (request.token !== undefined) headers.authorization = `Bearer ${request.token}`;
  if (body) headers["content-type"] = "application/json";
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
    });
    text = await response.text();
  } catch (error) {
    const { host } = new URL(request.api);
    output.err(
      `echosrv: cannot reach the fault API at ${request.api}: ${reasonOf(error, ANSWER_TIMEOUT_MS)} ` +
        `(is echosrv running with --fault-api ${host}?)\n`,
    );
    return 1;
  }
  let answer: Json;
  try {
    answer = JSON.parse(text);
  } catch {
    output.err(`echosrv: ${request.api} did not answer as echosrv's fault API (HTTP ${response.status})\n`);
    return 1;
  }
  if (response.status === 401) {
    const refused = tokenRefused(request, response.headers.get("www-authenticate"));
    if (refused !== undefined) {
      output.err(`echosrv: ${refused}\n`);
      return 1;
    }
  }
  if (!response.ok) {
    output.err(`echosrv: ${answer.error ?? `HTTP ${response.status}`}\n`);
    return response.status === 400 || response.status === 404 || response.status === 409 ? 2 : 1;
  }
  output.out(request.json ? JSON.stringify(answer, null, 2) + "\n" : summary(request, answer));
  if (!request.json && typeof answer.unswitchable === "number" && answer.unswitchable > 0) {
    output.err(
      `echosrv: ${answer.unswitchable} open connection(s) run the plain echo and keep it until they reconnect; ` +
        "to switch connections later, serve them under a profile from the start (even one of none)\n",
    );
  }
  return 0;
}
