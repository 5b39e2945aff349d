// faults/runtime: the impairments inside one server (one EchoServer: the only one, or one worker's). It opens the
// --fault-listen listeners beside the main ones, chooses each new connection's profile (by its listener, from the
// socket's local address, and its client) and hands the connection the impaired copy when one applies, keeps the
// profile table this server runs under, switches open connections when a change asks for it, lists them, and
// counts per profile and impairment. lib/server.ts holds one when --fault-* options are given; without them,
// nothing here exists and a connection's only cost is one property read.

import ipaddr from "ipaddr.js";
import { clientKey, parseClientAddress } from "../access.ts";
import { formatPeer } from "../address.ts";
import { type EchoListener, openListeners } from "../listen.ts";
import { connectionEventsEnabled, connLog, serverLog } from "../log.ts";
import type { TlsMaterial } from "../config.ts";
import type { FaultConfig } from "./config.ts";
import { emptyProfileCounters, type ImpairedConnection, ImpairedEcho, type ProfileCounters } from "./copy.ts";
import type { FaultCounters } from "./metrics.ts";
import { formatImpairments, type ImpairmentKind, type Profile } from "./profile.ts";
import { streamSeed } from "./random.ts";
import { FaultTable, type FaultTableSpec, initialTable, listenerId, MAIN_LISTENER } from "./table.ts";

/** A connection as the runtime sees it: lib/connection.ts's Connection. */
export interface OpenConnection extends ImpairedConnection {
  /** The socket, whose local address tells which listener accepted it. */
  readonly conn: ImpairedConnection["conn"] & { readonly localAddr: Deno.Addr };
  /** The client the rules and logs name: the TCP peer, or the one a PROXY header carried. */
  readonly client: { hostname: string; port: number };
  /** performance.now() time of accept. */
  readonly openedAt: number;
}

/** What lib/connection.ts asks of the faults, once per connection, after admission. */
export interface FaultHook {
  /**
   * The copy for a connection that a profile applies to, or undefined (the plain copy is then used).
   *
   * @param connection the connection
   * @param first the bytes that came with its PROXY header, which the impaired copy then echoes first
   */
  copyFor(connection: OpenConnection, first: Uint8Array | null): (() => Promise<void>) | undefined;
}

/** One open connection, as the control API lists it. */
export interface ConnectionInfo {
  /** The worker serving it (0 without workers). */
  worker: number;
  /** The client as HOST:PORT (IPv6 in brackets): the TCP peer, or the one a PROXY header carried. */
  client: string;
  /** The id of the listener that accepted it (`main`, a port, or HOST:PORT). */
  listener: string;
  /** Its profile, or null: none (`plain`: the plain copy, which a change cannot switch; it reconnects for that). */
  profile: string | null;
  /** The generation of the table its profile came from; null for a plain connection. */
  generation: number | null;
  /** The impairments drawn for it (each applies by its probability); empty for a plain connection. */
  impairments: ImpairmentKind[];
  /**
   * Where it is: admitting (PROXY header, access rules, TLS handshake), echoing, stalled, ended (the impaired copy
   * returned), plain (the plain copy), closing.
   */
  state: "echoing" | "stalled" | "ended" | "plain" | "admitting" | "closing";
  /** Bytes echoed so far. */
  echoedBytes: number;
  /** Bytes dropped by loss. */
  droppedBytes: number;
  /** Bytes read and not yet echoed (delayed or paced). */
  heldBytes: number;
  /** Seconds since accept, to 0.1 s. */
  ageSeconds: number;
}

/** What a change of the table did to the open connections. */
export interface InstallResult {
  /** Connections under the impaired copy moved to the new table. */
  switched: number;
  /** Plain connections the new table would impair: they keep the plain echo until they reconnect. */
  unswitchable: number;
}

/** Where the listeners of this server are, to tell a connection's listener from its local address. */
interface ListenerPlace {
  id: string;
  /** The canonical address, or undefined for any address on the port. */
  host: string | undefined;
}

/** A listener's address as compared with a socket's local address; undefined for a wildcard (any address). */
function canonicalHost(host: string | undefined): string | undefined {
  if (host === undefined || host === "0.0.0.0" || host === "::") return undefined;
  if (host === "localhost") return "localhost";
  return ipaddr.isValid(host) ? clientKey(ipaddr.parse(host).toString()) : host;
}

/** The impairments of one server. */
export class FaultRuntime implements FaultHook {
  readonly #config: FaultConfig;
  readonly #worker: number;
  readonly #sessions: () => Iterable<OpenConnection>;
  #table: FaultTable;
  /** The --fault-listen listeners by port. */
  #places = new Map<number, ListenerPlace[]>();
  #ports: number[] = [];
  /** Connections served under a profile so far: the number in each connection's seed. */
  #serial = 0;
  readonly #echoes = new Set<ImpairedEcho>();
  readonly #byConnection = new WeakMap<OpenConnection, ImpairedEcho>();
  readonly #counters = new Map<string, ProfileCounters>();
  readonly #countersOf = (name: string) => {
    let counters = this.#counters.get(name);
    if (!counters) this.#counters.set(name, counters = emptyProfileCounters());
    return counters;
  };

  /**
   * The runtime of one server, under the first table (generation 1) of `config`.
   *
   * @param config the fault configuration
   * @param worker the worker's number (0 without workers): part of each connection's seed
   * @param sessions the server's open connections
   */
  constructor(config: FaultConfig, worker: number, sessions: () => Iterable<OpenConnection>) {
    this.#config = config;
    this.#worker = worker;
    this.#sessions = sessions;
    this.#table = initialTable(config, config.listeners.map((l) => l.port));
    this.#seedCounters();
  }

  /** Every profile of the table and each of its impairments gets its counters at 0 (so /metrics has the series). */
  #seedCounters(): void {
    for (const { profile } of this.#table.profiles) {
      const counters = this.#countersOf(profile.name);
      for (const { kind } of profile.impairments) {
        counters.impairments[kind] ??= { connections: 0, bytes: 0, events: 0 };
      }
    }
  }

  /** The table this server runs under. */
  get table(): FaultTable {
    return this.#table;
  }

  /** The ports of the --fault-listen listeners, in order (once open). */
  get ports(): number[] {
    return [...this.#ports];
  }

  /**
   * Opens the --fault-listen listeners, each on its port (its own address, or the main listener's addresses).
   *
   * @param options the main listeners' addresses, TLS material and SO_REUSEPORT setting
   * @param ports the ports to use instead of the configured ones (a worker joining the first worker's ports)
   * @returns the listeners
   * @throws {ListenError} when one cannot be opened (those opened are closed again)
   */
  async openListeners(
    options: { hosts: readonly string[]; tls?: TlsMaterial; reusePort?: boolean },
    ports?: readonly number[],
  ): Promise<EchoListener[]> {
    const opened: EchoListener[] = [];
    try {
      for (const [i, spec] of this.#config.listeners.entries()) {
        const { listeners, port } = await openListeners({
          hosts: spec.host === undefined ? options.hosts : [spec.host],
          port: ports?.[i] ?? spec.port,
          tls: options.tls,
          reusePort: options.reusePort,
        });
        opened.push(...listeners);
        this.#ports.push(port);
        const place = { id: listenerId(spec, port), host: canonicalHost(spec.host) };
        this.#places.set(port, [...(this.#places.get(port) ?? []), place]);
        serverLog.info("fault listener {listener}: profile {profile}", {
          listener: place.id,
          profile: spec.profile ?? "none",
          port,
        });
      }
    } catch (error) {
      for (const listener of opened) listener.close();
      throw error;
    }
    this.#table = initialTable(this.#config, this.#ports);
    return opened;
  }

  /** The id of the listener that accepted a connection, from the socket's local address. */
  #listenerOf(local: Deno.Addr): string {
    const { hostname, port } = local as Deno.NetAddr;
    const places = this.#places.get(port);
    if (!places) return MAIN_LISTENER;
    const host = clientKey(hostname);
    for (const place of places) {
      if (place.host === undefined || place.host === host) return place.id;
      if (place.host === "localhost" && (host === "127.0.0.1" || host === "::1")) return place.id;
    }
    return MAIN_LISTENER;
  }

  #select(connection: OpenConnection, table: FaultTable): Profile | undefined {
    const client = table.routesClients ? parseClientAddress(connection.client.hostname) : undefined;
    return table.select(this.#listenerOf(connection.conn.localAddr), client);
  }

  copyFor(connection: OpenConnection, first: Uint8Array | null): (() => Promise<void>) | undefined {
    const table = this.#table;
    const profile = this.#select(connection, table);
    if (!profile) return undefined;
    const seed = streamSeed(this.#config.seed, this.#worker, ++this.#serial);
    const echo = new ImpairedEcho(connection, seed, this.#countersOf, first ?? undefined);
    echo.apply(profile, table.generation);
    this.#echoes.add(echo);
    this.#byConnection.set(connection, echo);
    if (connectionEventsEnabled()) {
      connLog.debug("{peer} under fault profile {profile}: {impairments}", {
        peer: formatPeer(connection.client),
        profile: profile.name,
        impairments: echo.state().impairments.join(", ") || "none drawn",
      });
    }
    return () => echo.run().finally(() => this.#echoes.delete(echo));
  }

  /**
   * Runs under a new table from now on: new connections get its profiles; with `open`, so do the open ones under
   * the impaired copy, at their next chunk (chunks already read keep their time).
   *
   * @param spec the table (lib/faults/table.ts's toSpec)
   * @param open whether open connections switch too
   * @returns what happened to the open connections
   */
  install(spec: FaultTableSpec, open: boolean): InstallResult {
    const table = FaultTable.fromSpec(spec);
    this.#table = table;
    this.#seedCounters();
    const result: InstallResult = { switched: 0, unswitchable: 0 };
    if (!open) return result;
    for (const connection of this.#sessions()) {
      if (connection.closing !== undefined || connection.phase === "admitting") continue;
      const echo = this.#byConnection.get(connection);
      const profile = this.#select(connection, table);
      if (echo && !echo.ended) {
        echo.apply(profile, table.generation);
        result.switched++;
      } else if (!echo && profile) {
        result.unswitchable++;
      }
    }
    return result;
  }

  /** The open connections, each with its profile. */
  connections(): ConnectionInfo[] {
    const now = performance.now();
    const list: ConnectionInfo[] = [];
    for (const connection of this.#sessions()) {
      const echo = this.#byConnection.get(connection);
      const state = echo?.state();
      list.push({
        worker: this.#worker,
        client: formatPeer(connection.client),
        listener: this.#listenerOf(connection.conn.localAddr),
        profile: state?.profile ?? null,
        generation: state ? state.generation : null,
        impairments: state?.impairments ?? [],
        state: connection.phase === "admitting"
          ? "admitting"
          : connection.closing !== undefined
          ? "closing"
          : state?.state ?? "plain",
        echoedBytes: connection.bytes,
        droppedBytes: state?.droppedBytes ?? 0,
        heldBytes: state?.heldBytes ?? 0,
        ageSeconds: Math.round((now - connection.openedAt) / 100) / 10,
      });
    }
    return list;
  }

  /** The counters per profile and impairment, and the table's generation (a copy, for /metrics). */
  counters(): FaultCounters {
    return { generation: this.#table.generation, profiles: structuredClone(Object.fromEntries(this.#counters)) };
  }

  /** One line for the startup log: the profiles and the seed. */
  describe(): string {
    const profiles = this.#table.profiles.map((p) => `${p.profile.name} (${formatImpairments(p.profile.impairments)})`);
    return profiles.length ? profiles.join("; ") : "none yet";
  }
}
