// faults/config: the fault configuration as the options leave it (lib/faults/options.ts reads it), and the first
// profile table built from it once the listeners' ports are known.

import type { Cidr } from "../access.ts";
import { formatAddress } from "../listen.ts";
import type { Profile } from "./profile.ts";
import { FaultTable, MAIN_LISTENER, type ProfileEntry } from "./table.ts";

/** One `--fault-listen` listener: its own port (on the --host addresses, or on one address) and its profile. */
export interface FaultListenerSpec {
  /** The one address it listens on; absent: the --host addresses (all of them, as the main listener). */
  host?: string;
  /** The port; 0 picks one (the log and the control API say which). */
  port: number;
  /** The profile's name, or null for none. */
  profile: string | null;
}

/** Where the control API listens (lib/faults/api.ts). */
export interface FaultApiConfig {
  hostname: string;
  port: number;
  /** The bearer token every request must carry; absent: none (the API must then be on loopback). */
  token?: string;
}

/** Everything the --fault-* options configure. */
export interface FaultConfig {
  /** The profiles, in definition order. */
  profiles: Profile[];
  /** Client networks and the profile each selects (`--fault-client`). */
  clients: Array<{ cidr: Cidr; profile: string }>;
  /** The extra listeners (`--fault-listen PORT=NAME`). */
  listeners: FaultListenerSpec[];
  /** The main listener's profile (`--fault-listen main=NAME`), or null. */
  mainProfile: string | null;
  /** `--fault-seed`, or the one chosen at random for this run. */
  seed: number;
  /** The control API (`--fault-api`), if on. */
  api?: FaultApiConfig;
}

/**
 * A listener's id, as the control API and the logs name it: its port, or `HOST:PORT` when it has one address.
 *
 * @param spec the listener
 * @param port the port it listens on (the one picked for port 0)
 * @returns the id
 */
export function listenerId(spec: { host?: string }, port: number): string {
  return spec.host === undefined ? String(port) : formatAddress(spec.host, port);
}

/**
 * The first table: generation 1, the configured profiles and client networks, and each listener's profile.
 *
 * @param config the configuration
 * @param ports the ports of the `--fault-listen` listeners, in order (the configured ones until bound)
 * @returns the table
 */
export function initialTable(config: FaultConfig, ports: readonly number[]): FaultTable {
  const profiles = new Map<string, ProfileEntry>();
  for (const profile of config.profiles) {
    profiles.set(profile.name, {
      profile,
      clients: config.clients.filter((c) => c.profile === profile.name).map((c) => c.cidr),
    });
  }
  const listeners = new Map<string, string | null>([[MAIN_LISTENER, config.mainProfile]]);
  config.listeners.forEach((spec, i) => listeners.set(listenerId(spec, ports[i] ?? spec.port), spec.profile));
  return new FaultTable(1, profiles, listeners);
}
