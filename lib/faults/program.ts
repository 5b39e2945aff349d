// faults/program: the fault side of a starting echosrv, in the main thread: the startup line naming the profiles
// and the seed, and the control API (--fault-api) wired to the servers, the one EchoServer or the workers.

import { serverLog } from "../log.ts";
import { EchoServer } from "../server.ts";
import { type Server, WorkerPool } from "../workers.ts";
import { serveFaultApi } from "./api.ts";
import type { FaultConfig } from "./config.ts";
import { initialTable } from "./table.ts";
import { FaultController, localDistributor } from "./control.ts";
import { formatImpairments } from "./profile.ts";
import { poolDistributor } from "./workers.ts";

/** What runs beside the server for the faults, stopped with it. */
export interface RunningFaults {
  /** Stops the control API: closes its listener and waits for the requests in progress. */
  close(): Promise<void>;
}

/**
 * Logs the fault profiles and the seed, and starts the control API when --fault-api is given. Call it once the
 * server listens (the --fault-listen ports are then known).
 *
 * @param config the fault configuration, if any
 * @param server the started server
 * @returns the control API to close at the end, if any
 * @throws {ListenError} when the API's address cannot be listened on
 */
export function startFaults(config: FaultConfig | undefined, server: Server): RunningFaults | undefined {
  if (!config) return undefined;
  const described = config.profiles.map((p) => `${p.name} (${formatImpairments(p.impairments)})`).join("; ");
  serverLog.info("fault profiles: {profiles}; seed {seed} (--fault-seed {seed} repeats this run's draws)", {
    profiles: described || "none yet",
    seed: config.seed,
  });
  if (!config.api) return undefined;
  let controller: FaultController | undefined;
  if (server instanceof EchoServer && server.faults) {
    controller = new FaultController(server.faults.table, localDistributor(server.faults), config);
  } else if (server instanceof WorkerPool) {
    const table = initialTable(config, server.faultPorts ?? config.listeners.map((l) => l.port));
    controller = new FaultController(table, poolDistributor((request) => server.faultRequest(request)), config);
  }
  if (!controller) return undefined;
  const api = serveFaultApi(config.api, controller);
  return { close: () => api.close() };
}
