// faults/options: the --fault-* options of `echosrv run` and their ECHOSRV_FAULT_* variables, read into a
// FaultConfig. lib/options.ts adds them to its command line with one call and reads them with another; everything
// about their syntax is here. Each value is checked as it is read (commander then names the option and the value);
// what needs several options at once (a listener naming a profile defined by another option) is checked after.

import { type Command, InvalidArgumentError, Option } from "commander";
import ipaddr from "ipaddr.js";
import { type Cidr, CidrError, parseCidr } from "../access.ts";
import { formatAddress } from "../address.ts";
import { parseInteger, UnitError } from "../units.ts";
import { FAULT_ENV_VARS, optionInError } from "../environment.ts";
import type { FaultApiConfig, FaultConfig, FaultListenerSpec } from "./config.ts";
import { FaultSyntaxError, NONE, parseProfiles, type Profile } from "./profile.ts";
import { randomSeed } from "./random.ts";
import { MAIN_LISTENER } from "./table.ts";

/**
 * commander's Command, named here because {@link addFaultOptions} and lib/faults/cli.ts's addFaultCommand take
 * one: the program's command line, which lib/options.ts builds.
 */
export type CommanderCommand = Command;

/** The port the control API is shown with in examples, and the one `echosrv fault` talks to by default. */
export const DEFAULT_FAULT_API_PORT = 9408;

/** Thrown when the --fault-* options do not fit together; lib/options.ts reports it as a usage error (exit 2). */
export class FaultOptionError extends Error {
  /** The class's name, as Error subclasses set it. */
  override name = "FaultOptionError";
}

/** The raw values commander hands over for the --fault-* options. */
export interface RawFaultOptions {
  /** `--fault-profile`: the profiles, in the order given. */
  faultProfile?: Profile[];
  /** `--fault-listen`: each LISTENER as written (`main`, PORT, HOST:PORT), its spec (none for `main`), its profile. */
  faultListen?: Array<{ listener: string; spec?: FaultListenerSpec; profile: string | null }>;
  /** `--fault-client`: each client network and the profile it selects. */
  faultClient?: Array<{ cidr: Cidr; profile: string }>;
  /** `--fault-seed`: 0 to 2^32 - 1. */
  faultSeed?: number;
  /** `--fault-api`: where the control API listens (a bare port: 127.0.0.1). */
  faultApi?: { hostname: string; port: number };
  /** `--fault-api-token`: the bearer token (RFC 6750) the API requires; 8+ printable ASCII characters, no spaces. */
  faultApiToken?: string;
}

function invalid(error: unknown): never {
  if (error instanceof FaultSyntaxError || error instanceof CidrError || error instanceof UnitError) {
    throw new InvalidArgumentError(error.message);
  }
  throw error;
}

/** Reads one or more profiles (`;`-separated) and adds them to those given before; a name may be defined once. */
function collectProfiles(text: string, previous: Profile[] | undefined): Profile[] {
  let profiles: Profile[];
  try {
    profiles = parseProfiles(text);
  } catch (error) {
    invalid(error);
  }
  if (profiles.length === 0) {
    throw new InvalidArgumentError('no profile given: write NAME: IMPAIRMENTS ("slow: latency 200ms")');
  }
  const all = [...(previous ?? [])];
  for (const profile of profiles) {
    if (all.some((p) => p.name === profile.name)) {
      throw new InvalidArgumentError(`profile ${profile.name} is defined twice`);
    }
    all.push(profile);
  }
  return all;
}

/**
 * Reads `HOST:PORT`, `[IPv6]:PORT` or a bare `PORT` (on `fallback`), with an IP address or `localhost` as host.
 *
 * @param text the address as written
 * @param fallback the host of a bare port; undefined leaves it out
 * @returns the address
 * @throws {InvalidArgumentError} when it is not such an address
 */
export function parseAddress(text: string, fallback?: string): { host?: string; port: number } {
  const value = text.trim();
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d+)$/.exec(value) ?? /^()()(\d+)$/.exec(value);
  if (!match) {
    throw new InvalidArgumentError(
      `"${text}" is not PORT or HOST:PORT (IPv6 in brackets: [::1]:${DEFAULT_FAULT_API_PORT})`,
    );
  }
  const host = match[1] || match[2] || fallback;
  if (host !== undefined && host !== "localhost" && !ipaddr.isValid(host)) {
    throw new InvalidArgumentError(`"${host}" is not an IP address (or localhost)`);
  }
  let port: number;
  try {
    port = parseInteger(match[3], 0, 65535);
  } catch (error) {
    invalid(error);
  }
  return host === undefined ? { port } : { host, port };
}

/** Reads `LISTENER=PROFILE` items (comma-separated): LISTENER is `main`, a port, or HOST:PORT; PROFILE may be none. */
function collectListeners(
  text: string,
  previous: RawFaultOptions["faultListen"],
): NonNullable<RawFaultOptions["faultListen"]> {
  const all = [...(previous ?? [])];
  for (const item of text.split(",").map((t) => t.trim()).filter((t) => t !== "")) {
    const cut = item.lastIndexOf("=");
    if (cut < 0) {
      throw new InvalidArgumentError(
        `"${item}" is not LISTENER=PROFILE (examples: 40017=slow, 127.0.0.2:40007=flaky, main=slow)`,
      );
    }
    const listener = item.slice(0, cut).trim();
    const name = item.slice(cut + 1).trim();
    const profile = name === NONE ? null : name;
    if (name === "") {
      throw new InvalidArgumentError(`"${item}" names no profile (write ${listener}=NAME or ${listener}=none)`);
    }
    if (listener === MAIN_LISTENER) {
      all.push({ listener, profile });
      continue;
    }
    const address = parseAddress(listener);
    all.push({ listener, spec: { ...address, profile }, profile });
  }
  return all;
}

/** Reads `CIDR=PROFILE` items (comma-separated). */
function collectClients(
  text: string,
  previous: RawFaultOptions["faultClient"],
): NonNullable<RawFaultOptions["faultClient"]> {
  const all = [...(previous ?? [])];
  for (const item of text.split(",").map((t) => t.trim()).filter((t) => t !== "")) {
    const cut = item.lastIndexOf("=");
    if (cut < 0) throw new InvalidArgumentError(`"${item}" is not NETWORK=PROFILE (example: 10.1.2.0/24=flaky)`);
    let cidr: Cidr;
    try {
      cidr = parseCidr(item.slice(0, cut));
    } catch (error) {
      invalid(error);
    }
    const profile = item.slice(cut + 1).trim();
    if (profile === "" || profile === NONE) {
      throw new InvalidArgumentError(`"${item}" names no profile: write ${item.slice(0, cut)}=NAME`);
    }
    all.push({ cidr, profile });
  }
  return all;
}

/**
 * Adds the --fault-* options to `echosrv run`.
 *
 * @param command the program's command
 * @returns the same command
 */
export function addFaultOptions(command: CommanderCommand): CommanderCommand {
  return command
    .addOption(
      new Option(
        "--fault-profile <profile>",
        'define an impairment profile, "NAME: IMPAIRMENT, ..." (latency, bandwidth, slicer, stall, reset, close, ' +
          "refuse, loss; see the README); repeatable, or ;-separated",
      ).env(FAULT_ENV_VARS.faultProfile).argParser(collectProfiles),
    )
    .addOption(
      new Option(
        "--fault-listen <listener=profile>",
        "serve a profile on a listener of its own: PORT=NAME or HOST:PORT=NAME (main=NAME: the --port listener); " +
          "repeatable, or comma-separated",
      ).env(FAULT_ENV_VARS.faultListen).argParser(collectListeners),
    )
    .addOption(
      new Option(
        "--fault-client <cidr=profile>",
        "serve a profile to the clients of a network, on every listener (longest prefix wins); repeatable",
      ).env(FAULT_ENV_VARS.faultClient).argParser(collectClients),
    )
    .addOption(
      new Option("--fault-seed <n>", "seed of the impairments' randomness, to repeat a run (default: random, logged)")
        .env(FAULT_ENV_VARS.faultSeed).argParser((text) => {
          try {
            return parseInteger(text, 0, 4294967295);
          } catch (error) {
            invalid(error);
          }
        }),
    )
    .addOption(
      new Option(
        "--fault-api <host:port>",
        `serve the fault control API here (a bare port means 127.0.0.1; example: ${DEFAULT_FAULT_API_PORT})`,
      ).env(FAULT_ENV_VARS.faultApi).argParser((text) => {
        // `echosrv fault` reads the same variable and also takes a URL: so does the server, for one environment.
        const url = /^http:\/\/([^/]+)\/?$/i.exec(text.trim());
        const { host, port } = parseAddress(url ? url[1] : text, "127.0.0.1");
        return { hostname: host!, port };
      }),
    )
    .addOption(
      new Option("--fault-api-token <token>", "bearer token the control API requires (better from its variable)")
        .env(FAULT_ENV_VARS.faultApiToken).argParser((text) => {
          if (!/^[\x21-\x7e]{8,}$/.test(text)) {
            throw new InvalidArgumentError("the token must be 8 or more printable ASCII characters, without spaces");
          }
          return text;
        }),
    );
}

/** True for an address only this machine can reach. */
function isLoopback(hostname: string): boolean {
  if (hostname === "localhost") return true;
  if (!ipaddr.isValid(hostname)) return false;
  const address = ipaddr.process(hostname);
  return address.range() === "loopback";
}

/**
 * Reads the --fault-* options into a configuration, checking what needs several of them at once.
 *
 * @param raw the values commander read
 * @param mainPort the --port value (a --fault-listen on the same port without its own address would collide)
 * @param source where an option's value came from, as commander says it: `cli` (the command line), `env` (its
 * ECHOSRV_FAULT_* variable), `default` or undefined (not given)
 * @returns the configuration, or undefined when no --fault-* option is given
 * @throws {FaultOptionError} naming the option and what is wrong: the option as written, or its variable when the
 * value came from the environment (lib/environment.ts optionInError)
 */
export function faultConfig(
  raw: RawFaultOptions,
  mainPort: number,
  source: (option: keyof RawFaultOptions) => string | undefined,
): FaultConfig | undefined {
  const given = (option: keyof RawFaultOptions) => source(option) === "cli";
  /** The option in a message: `--fault-listen 0=slow` as written, or its flags, value and variable. */
  const named = (option: keyof RawFaultOptions, flags: string, value: string, written: string) =>
    optionInError(
      written,
      source(option) === "env" ? { flags, value, variable: FAULT_ENV_VARS[option] } : undefined,
    );
  const LISTEN = "--fault-listen <listener=profile>";
  const CLIENT = "--fault-client <cidr=profile>";
  const profiles = raw.faultProfile ?? [];
  const listens = raw.faultListen ?? [];
  const clients = raw.faultClient ?? [];
  if (raw.faultApiToken !== undefined && !raw.faultApi && given("faultApiToken")) {
    throw new FaultOptionError("option '--fault-api-token <token>' has no effect without --fault-api <host:port>");
  }
  if (profiles.length === 0 && listens.length === 0 && clients.length === 0 && !raw.faultApi) {
    if (raw.faultSeed !== undefined && given("faultSeed")) {
      throw new FaultOptionError("option '--fault-seed <n>' has no effect without a --fault-profile or --fault-api");
    }
    return undefined;
  }
  const names = profiles.map((p) => p.name);
  const known = names.length ? `the profiles: ${names.join(", ")}` : "no profile is defined: use --fault-profile";
  const check = (option: string, name: string | null) => {
    if (name !== null && !names.includes(name)) {
      throw new FaultOptionError(`${option}: no profile named ${name} (${known})`);
    }
  };
  let mainProfile: string | null = null;
  const listeners: FaultListenerSpec[] = [];
  const ids = new Set<string>();
  for (const item of listens) {
    const text = `${item.listener}=${item.profile ?? NONE}`;
    check(named("faultListen", LISTEN, text, `--fault-listen ${text}`), item.profile);
    const key = item.spec ? `${item.spec.host ?? "*"}|${item.spec.port}` : MAIN_LISTENER;
    if (ids.has(key) && (item.spec?.port ?? 1) !== 0) {
      throw new FaultOptionError(
        `${named("faultListen", LISTEN, text, "--fault-listen")}: listener ${item.listener} is given twice`,
      );
    }
    ids.add(key);
    if (!item.spec) {
      mainProfile = item.profile;
      continue;
    }
    if (item.spec.port !== 0 && item.spec.port === mainPort && item.spec.host === undefined) {
      throw new FaultOptionError(
        `${named("faultListen", LISTEN, text, `--fault-listen ${text}`)}: port ${mainPort} is the main ` +
          `listener's (--port); give another port, or main=NAME to put the main listener under a profile`,
      );
    }
    listeners.push(item.spec);
  }
  const cidrs = new Map<string, string>();
  for (const client of clients) {
    const text = `${client.cidr.text}=${client.profile}`;
    check(named("faultClient", CLIENT, text, `--fault-client ${text}`), client.profile);
    const before = cidrs.get(client.cidr.text);
    if (before !== undefined) {
      throw new FaultOptionError(
        `${named("faultClient", CLIENT, text, "--fault-client")}: ${client.cidr.text} is given twice (for ` +
          `${before} and ${client.profile})`,
      );
    }
    cidrs.set(client.cidr.text, client.profile);
  }
  let api: FaultApiConfig | undefined;
  if (raw.faultApi) {
    api = { ...raw.faultApi, ...(raw.faultApiToken !== undefined ? { token: raw.faultApiToken } : {}) };
    if (!isLoopback(api.hostname) && api.token === undefined) {
      const address = formatAddress(raw.faultApi.hostname, raw.faultApi.port);
      throw new FaultOptionError(
        `${named("faultApi", "--fault-api <host:port>", address, `--fault-api ${address}`)}: the control API ` +
          `changes how echosrv answers; off loopback it needs a token (${FAULT_ENV_VARS.faultApiToken}=... or ` +
          "--fault-api-token)",
      );
    }
  }
  return {
    profiles,
    clients: clients.map((c) => ({ cidr: c.cidr.text, profile: c.profile })),
    listeners,
    mainProfile,
    seed: raw.faultSeed ?? randomSeed(),
    ...(api ? { api } : {}),
  };
}
