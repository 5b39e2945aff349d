// faults/config: the fault configuration as the options leave it (lib/faults/options.ts reads it; lib/faults/table.ts
// builds the first profile table from it). Types only, and plain data like the rest of the configuration
// (lib/config.ts), so that workers get it by value.

import type { Profile } from "./profile.ts";

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
  /** The address it listens on (127.0.0.1 for a bare port). */
  hostname: string;
  /** The TCP port; 0 picks one. */
  port: number;
  /** The bearer token (RFC 6750) every request must carry; absent: none (the API must then be on loopback). */
  token?: string;
}

/** Everything the --fault-* options configure. */
export interface FaultConfig {
  /** The profiles, in definition order. */
  profiles: Profile[];
  /** Client networks (canonical text, as parseCidr writes it) and the profile each selects (`--fault-client`). */
  clients: Array<{ cidr: string; profile: string }>;
  /** The extra listeners (`--fault-listen PORT=NAME`). */
  listeners: FaultListenerSpec[];
  /** The main listener's profile (`--fault-listen main=NAME`), or null. */
  mainProfile: string | null;
  /** `--fault-seed`, or the one chosen at random for this run. */
  seed: number;
  /** The control API (`--fault-api`), if on. */
  api?: FaultApiConfig;
}
