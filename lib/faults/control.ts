// faults/control: changing the profile table while echosrv runs, for the control API (lib/faults/api.ts). The
// controller, in the main thread, holds the table; a change makes a new table (next generation), hands it to every
// server (the one EchoServer, or each worker by message) and resolves only once all of them run under it. Changes
// are applied one at a time. So when the API answers with generation G, every server chooses new connections from
// G, and with `open` every connection under the impaired copy has switched to G: a test can rely on it.

import type { Cidr } from "../access.ts";
import type { FaultConfig } from "./config.ts";
import type { Impairment } from "./profile.ts";
import type { ConnectionInfo, FaultRuntime, InstallResult } from "./runtime.ts";
import type { FaultTable, FaultTableSpec } from "./table.ts";

/** How the controller reaches the servers: the one in this thread, or the workers. */
export interface FaultDistributor {
  /** Installs a table in every server; resolves once all of them run under it. */
  install(spec: FaultTableSpec, open: boolean): Promise<InstallResult>;
  /** Every server's open connections. */
  connections(): Promise<ConnectionInfo[]>;
}

/**
 * The distributor for one EchoServer in this thread.
 *
 * @param runtime its fault runtime
 * @returns the distributor
 */
export function localDistributor(runtime: FaultRuntime): FaultDistributor {
  return {
    install: (spec, open) => Promise.resolve(runtime.install(spec, open)),
    connections: () => Promise.resolve(runtime.connections()),
  };
}

/** What a change did. */
export interface ChangeResult extends InstallResult {
  /** The generation of the new table, which every server now runs under. */
  generation: number;
  /** Whether open connections were switched too. */
  open: boolean;
}

/** The profile table of a running echosrv and the changes to it. */
export class FaultController {
  #table: FaultTable;
  readonly #distributor: FaultDistributor;
  /** The changes, one after another. */
  #queue: Promise<unknown> = Promise.resolve();

  /**
   * A controller for servers that run under `table`.
   *
   * @param table the table the servers started with
   * @param distributor how to reach them
   * @param config the fault configuration (for the seed)
   */
  constructor(table: FaultTable, distributor: FaultDistributor, readonly config: FaultConfig) {
    this.#table = table;
    this.#distributor = distributor;
  }

  /** The table now. */
  get table(): FaultTable {
    return this.#table;
  }

  /**
   * Applies a change: `change` makes the new table from the current one (throwing a FaultRequestError changes
   * nothing), then every server gets it.
   *
   * @param change builds the new table, and anything to report with it
   * @param open whether open connections switch too
   * @returns the report and what happened
   */
  apply<T extends { table: FaultTable }>(change: (table: FaultTable) => T, open: boolean): Promise<T & ChangeResult> {
    const run = async () => {
      const made = change(this.#table);
      const result = await this.#distributor.install(made.table.toSpec(), open);
      this.#table = made.table;
      return { ...made, ...result, generation: made.table.generation, open };
    };
    const next = this.#queue.then(run, run);
    this.#queue = next.catch(() => {});
    return next;
  }

  /**
   * Adds or changes a profile (see FaultTable.withProfile).
   *
   * @param name the profile's name
   * @param update its new impairments and client networks; left out, each keeps what the profile had
   * @param open whether open connections switch too
   * @returns the new table, whether the profile is new, and what the change did
   * @throws {FaultRequestError} (the promise rejects) as FaultTable.withProfile does; the table is then unchanged
   */
  setProfile(
    name: string,
    update: { impairments?: Impairment[]; clients?: Cidr[] },
    open: boolean,
  ): Promise<{ table: FaultTable; created: boolean } & ChangeResult> {
    return this.apply((table) => table.withProfile(name, update), open);
  }

  /** Removes a profile (see FaultTable.withoutProfile). */
  removeProfile(name: string, open: boolean): Promise<{ table: FaultTable; unbound: string[] } & ChangeResult> {
    return this.apply((table) => table.withoutProfile(name), open);
  }

  /** Sets a listener's profile (see FaultTable.withListener). */
  setListener(listener: string, profile: string | null, open: boolean): Promise<{ table: FaultTable } & ChangeResult> {
    return this.apply((table) => ({ table: table.withListener(listener, profile) }), open);
  }

  /** Every open connection, with its profile. */
  connections(): Promise<ConnectionInfo[]> {
    return this.#distributor.connections();
  }
}
