// faults/table: the profile table, and which profile a new connection gets. The table holds the profiles (each
// with the client networks it is chosen for), the profile of each listener (`main`, the --port/--host listeners,
// and the --fault-listen ones), and a generation number that every change raises. Choosing: the profile whose
// client network holds the client, the longest prefix winning (as a router chooses a route; on a tie, the profile
// defined first); else the listener's profile; else none, and the connection gets the plain echo. A table never
// changes: a change makes a new one (lib/faults/control.ts), which is what makes a switch atomic.

import { type Cidr, CidrError, type IpAddress, parseCidr } from "../access.ts";
import { formatAddress } from "../address.ts";
import type { FaultConfig } from "./config.ts";
import {
  checkProfileName,
  FaultSyntaxError,
  formatImpairments,
  type Impairment,
  NONE,
  parseImpairments,
  type Profile,
} from "./profile.ts";

/** The id of the main listener (the --port and --host addresses). */
export const MAIN_LISTENER = "main";

/** A request to change the table that cannot be honoured; `status` is the HTTP status the control API answers. */
export class FaultRequestError extends Error {
  /** The class's name, as Error subclasses set it. */
  override name = "FaultRequestError";
  /**
   * A refused request.
   *
   * @param message what is wrong, for the API's answer
   * @param status 400 (bad request), 404 (no such profile or listener), 409 (conflict)
   */
  constructor(message: string, readonly status: 400 | 404 | 409 = 400) {
    super(message);
  }
}

/** One profile in the table. */
export interface ProfileEntry {
  /** The profile: its name and impairments. */
  readonly profile: Profile;
  /** The client networks it is chosen for, on every listener. */
  readonly clients: readonly Cidr[];
}

/** The table as plain data: what crosses to workers, and what the control API lists. */
export interface FaultTableSpec {
  /** The table's generation (1 at start, raised by every change). */
  generation: number;
  /** The profiles in definition order: name, impairments as text (`--fault-profile` syntax), client networks. */
  profiles: Array<{ name: string; spec: string; clients: string[] }>;
  /** Every listener by id (`main`, `40017`, `127.0.0.2:40007`), and its profile's name or null. */
  listeners: Array<{ id: string; profile: string | null }>;
}

/** A client network and the profile it selects, for the lookup. */
interface Route {
  readonly cidr: Cidr;
  readonly entry: ProfileEntry;
}

/** An immutable profile table. */
export class FaultTable {
  readonly #profiles: ReadonlyMap<string, ProfileEntry>;
  readonly #listeners: ReadonlyMap<string, string | null>;
  /** Client networks, longest prefix first (a stable sort keeps definition order on ties). */
  readonly #v4: readonly Route[];
  readonly #v6: readonly Route[];

  /**
   * A table; it never changes (the `with*` methods make new ones).
   *
   * @param generation the number of this version of the table (1 at start, raised by every change)
   * @param profiles the profiles by name, in definition order
   * @param listeners every listener's profile by listener id (null: none)
   */
  constructor(
    readonly generation: number,
    profiles: ReadonlyMap<string, ProfileEntry>,
    listeners: ReadonlyMap<string, string | null>,
  ) {
    this.#profiles = profiles;
    this.#listeners = listeners;
    const routes = [...profiles.values()].flatMap((entry) => entry.clients.map((cidr) => ({ cidr, entry })));
    routes.sort((a, b) => b.cidr.bits - a.cidr.bits);
    this.#v4 = routes.filter((r) => r.cidr.address.kind() === "ipv4");
    this.#v6 = routes.filter((r) => r.cidr.address.kind() === "ipv6");
  }

  /** The profiles, in definition order. */
  get profiles(): ProfileEntry[] {
    return [...this.#profiles.values()];
  }

  /** The listeners' ids, in order, with their profiles. */
  get listeners(): Array<{ id: string; profile: string | null }> {
    return [...this.#listeners].map(([id, profile]) => ({ id, profile }));
  }

  /** True when no client network is routed: choosing a profile is then one lookup by listener. */
  get routesClients(): boolean {
    return this.#v4.length + this.#v6.length > 0;
  }

  /**
   * The profile for a new connection: by its client's network (longest prefix), else by its listener.
   *
   * @param listener the id of the listener that accepted it
   * @param client the client's address (parsed by lib/access.ts's parseClientAddress), if it is an IP address
   * @returns the profile, or undefined for the plain echo
   */
  select(listener: string, client: IpAddress | undefined): Profile | undefined {
    if (client && this.routesClients) {
      const routes = client.kind() === "ipv4" ? this.#v4 : this.#v6;
      for (const route of routes) {
        if (client.match(route.cidr.address, route.cidr.bits)) return route.entry.profile;
      }
    }
    const name = this.#listeners.get(listener);
    return name ? this.#profiles.get(name)?.profile : undefined;
  }

  /** One profile by name. */
  profile(name: string): ProfileEntry | undefined {
    return this.#profiles.get(name);
  }

  /** The listeners that use a profile. */
  listenersOf(name: string): string[] {
    return [...this.#listeners].filter(([, profile]) => profile === name).map(([id]) => id);
  }

  /** The table as plain data. */
  toSpec(): FaultTableSpec {
    return {
      generation: this.generation,
      profiles: this.profiles.map(({ profile, clients }) => ({
        name: profile.name,
        spec: formatImpairments(profile.impairments),
        clients: clients.map((c) => c.text),
      })),
      listeners: this.listeners,
    };
  }

  /**
   * Rebuilds a table from {@link toSpec}'s data (in a worker).
   *
   * @param spec the data
   * @returns the table
   * @throws {FaultSyntaxError} when a profile cannot be read (data not written by toSpec)
   */
  static fromSpec(spec: FaultTableSpec): FaultTable {
    const profiles = new Map<string, ProfileEntry>();
    for (const p of spec.profiles) {
      profiles.set(p.name, {
        profile: { name: p.name, impairments: parseImpairments(p.spec) },
        clients: p.clients.map((c) => parseCidr(c)),
      });
    }
    return new FaultTable(spec.generation, profiles, new Map(spec.listeners.map((l) => [l.id, l.profile])));
  }

  /**
   * A new table with a profile added or changed. Left out, `impairments` and `clients` keep what the profile had.
   *
   * @param name the profile's name
   * @param change its new impairments and client networks
   * @returns the new table (next generation) and whether the profile is new
   * @throws {FaultRequestError} for a bad name, a new profile without impairments, or a client network that
   *   another profile already routes
   */
  withProfile(
    name: string,
    change: { impairments?: Impairment[]; clients?: Cidr[] },
  ): { table: FaultTable; created: boolean } {
    try {
      checkProfileName(name);
    } catch (error) {
      if (error instanceof FaultSyntaxError) throw new FaultRequestError(error.message);
      throw error;
    }
    const before = this.#profiles.get(name);
    if (!before && change.impairments === undefined) {
      throw new FaultRequestError(`profile ${name} does not exist yet: give its impairments ("spec": "latency 200ms")`);
    }
    const clients = change.clients ?? before?.clients ?? [];
    checkRoutes(name, clients, this.profiles);
    const entry: ProfileEntry = {
      profile: { name, impairments: change.impairments ?? before!.profile.impairments },
      clients,
    };
    const profiles = new Map(this.#profiles);
    profiles.set(name, entry);
    return { table: new FaultTable(this.generation + 1, profiles, this.#listeners), created: !before };
  }

  /**
   * A new table without a profile; the listeners that used it get none.
   *
   * @param name the profile's name
   * @returns the new table and the listeners that lost their profile
   * @throws {FaultRequestError} 404 when there is no such profile
   */
  withoutProfile(name: string): { table: FaultTable; unbound: string[] } {
    if (!this.#profiles.has(name)) throw new FaultRequestError(`no profile named ${name}`, 404);
    const profiles = new Map(this.#profiles);
    profiles.delete(name);
    const unbound = this.listenersOf(name);
    const listeners = new Map(this.#listeners);
    for (const id of unbound) listeners.set(id, null);
    return { table: new FaultTable(this.generation + 1, profiles, listeners), unbound };
  }

  /**
   * A new table with a listener's profile set.
   *
   * @param listener the listener's id
   * @param profile the profile's name, or null for none
   * @returns the new table
   * @throws {FaultRequestError} 404 for an unknown listener, 400 for an unknown profile
   */
  withListener(listener: string, profile: string | null): FaultTable {
    if (!this.#listeners.has(listener)) {
      throw new FaultRequestError(
        `no listener ${listener} (the listeners: ${[...this.#listeners.keys()].join(", ")})`,
        404,
      );
    }
    if (profile !== null && !this.#profiles.has(profile)) {
      throw new FaultRequestError(`no profile named ${profile}${this.#known()}`);
    }
    const listeners = new Map(this.#listeners);
    listeners.set(listener, profile);
    return new FaultTable(this.generation + 1, this.#profiles, listeners);
  }

  #known(): string {
    const names = [...this.#profiles.keys()];
    return names.length ? ` (the profiles: ${names.join(", ")})` : " (there are no profiles yet)";
  }
}

/** Refuses a client network that another profile already routes (which of the two would win is then unclear). */
function checkRoutes(name: string, clients: readonly Cidr[], profiles: ProfileEntry[]): void {
  const seen = new Set<string>();
  for (const cidr of clients) {
    if (seen.has(cidr.text)) throw new FaultRequestError(`${cidr.text} is given twice for profile ${name}`);
    seen.add(cidr.text);
    const other = profiles.find((p) => p.profile.name !== name && p.clients.some((c) => c.text === cidr.text));
    if (other) {
      throw new FaultRequestError(`${cidr.text} already selects profile ${other.profile.name}`, 409);
    }
  }
}

/**
 * Reads client networks for a profile (`10.0.0.0/8`, `2001:db8::/32`, one address).
 *
 * @param texts the networks as written
 * @returns the networks
 * @throws {FaultRequestError} naming the one that cannot be read
 */
export function parseClients(texts: readonly string[]): Cidr[] {
  return texts.map((text) => {
    try {
      return parseCidr(text);
    } catch (error) {
      if (error instanceof CidrError) throw new FaultRequestError(error.message);
      throw error;
    }
  });
}

/** `none` as a listener's profile means no profile. */
export function profileOrNone(name: string): string | null {
  return name === NONE ? null : name;
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
      clients: config.clients.filter((c) => c.profile === profile.name).map((c) => parseCidr(c.cidr)),
    });
  }
  const listeners = new Map<string, string | null>([[MAIN_LISTENER, config.mainProfile]]);
  config.listeners.forEach((spec, i) => listeners.set(listenerId(spec, ports[i] ?? spec.port), spec.profile));
  return new FaultTable(1, profiles, listeners);
}
