// faults/workers: the profile table across --workers. Each worker reads the --fault-* options again at start (as
// it reads every option), so all start from the same table; a change through the control API then travels as a
// message from the main thread to every worker (lib/workers.ts carries it, as it carries the /metrics readings),
// and each answers once it runs under the new table.

import type { FaultDistributor } from "./control.ts";
import type { ConnectionInfo, FaultRuntime, InstallResult } from "./runtime.ts";
import type { FaultTableSpec } from "./table.ts";

/** A question from the main thread to a worker's fault runtime. */
export type FaultWorkerRequest =
  | { op: "install"; spec: FaultTableSpec; open: boolean }
  | { op: "connections" };

/** A worker's answer (null from a worker whose server is not there: not started, or without faults). */
export type FaultWorkerAnswer =
  | { op: "install"; result: InstallResult }
  | { op: "connections"; connections: ConnectionInfo[] }
  | null;

/**
 * Answers a question in a worker.
 *
 * @param runtime the worker's fault runtime, if its server is there
 * @param request the question
 * @returns the answer
 */
export function answerInWorker(runtime: FaultRuntime | undefined, request: FaultWorkerRequest): FaultWorkerAnswer {
  if (!runtime) return null;
  if (request.op === "install") return { op: "install", result: runtime.install(request.spec, request.open) };
  return { op: "connections", connections: runtime.connections() };
}

/**
 * The distributor for a pool of workers: each change and each listing asks every live worker and waits for all.
 *
 * @param ask sends a question to every live worker and resolves with their answers (lib/workers.ts's faultRequest)
 * @returns the distributor
 */
export function poolDistributor(ask: (request: FaultWorkerRequest) => Promise<FaultWorkerAnswer[]>): FaultDistributor {
  return {
    install: async (spec, open) => {
      const total: InstallResult = { switched: 0, unswitchable: 0 };
      for (const answer of await ask({ op: "install", spec, open })) {
        if (answer?.op !== "install") continue;
        total.switched += answer.result.switched;
        total.unswitchable += answer.result.unswitchable;
      }
      return total;
    },
    connections: async () => {
      const all: ConnectionInfo[] = [];
      for (const answer of await ask({ op: "connections" })) {
        if (answer?.op === "connections") all.push(...answer.connections);
      }
      return all;
    },
  };
}
