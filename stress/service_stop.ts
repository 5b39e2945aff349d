// service_stop: the stress swarm's way of starting echosrv as a Windows service and stopping it with the service
// manager's STOP, on Linux, through the stand-in SCM of support/fake_scm.ts (support/fixtures/fake_advapi32.c, built
// with cc). The server runs with the command line `echosrv service install` registers; STOP goes in through the
// stand-in's control FIFO, as `sc stop` would send it. After the exit, the stand-in's record must show what the SCM
// expects of a graceful stop under load: START_PENDING, RUNNING, then STOP_PENDING re-reported with a rising
// checkpoint inside its wait hint while the sessions drain, then STOPPED with NO_ERROR.

import { ServiceState } from "../lib/service/scm.ts";
import {
  buildFakeAdvapi32,
  FakeScmService,
  protocolProblems,
  startUnderFakeScm,
  STATE_NAMES,
  stateSequence,
} from "../support/fake_scm.ts";
import type { Stopper, SwarmServer } from "./swarm.ts";

/** SERVICE_CONTROL_STOP, as `sc stop` sends it. */
const CONTROL_STOP = 1;

/** echosrv under the stand-in SCM, as the swarm watches a server: its log is the service's log file. */
class ServiceServer implements SwarmServer {
  constructor(readonly service: FakeScmService, readonly port: number) {}

  get pid(): number {
    return this.service.process.pid;
  }

  /** The service's JSON log lines so far (a service writes nothing to standard output). */
  get lines(): string[] {
    try {
      return Deno.readTextFileSync(this.service.logPath).split("\n").filter((line) => line.trim() !== "");
    } catch {
      return [];
    }
  }

  get stderr(): string {
    return this.service.process.stderr;
  }

  exited(ms?: number): Promise<number> {
    return this.service.process.exited(ms);
  }

  signal(signal: Deno.Signal): void {
    this.service.process.signal(signal);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.service[Symbol.asyncDispose]();
  }
}

/**
 * The stopper that runs echosrv as a Windows service under the stand-in SCM and stops it with STOP.
 *
 * @returns the stopper, or why it cannot run here (not Linux, no C compiler)
 */
export async function serviceStopper(): Promise<Stopper | string> {
  const built = await buildFakeAdvapi32();
  if ("reason" in built) return built.reason;
  return {
    name: "the service manager's STOP (stand-in SCM)",
    async launch(args) {
      const service = await startUnderFakeScm(args);
      try {
        await service.waitForState(ServiceState.RUNNING);
        return new ServiceServer(service, await service.port());
      } catch (error) {
        await service[Symbol.asyncDispose]();
        throw error;
      }
    },
    stop: (server) => (server as ServiceServer).service.control(CONTROL_STOP),
    judge(server) {
      const service = (server as ServiceServer).service;
      const statuses = service.statuses();
      const states = stateSequence(statuses);
      const violations = protocolProblems(statuses).map((p) => `service status protocol: ${p}`);
      const expected = ["START_PENDING", "RUNNING", "STOP_PENDING", "STOPPED"];
      if (states.join() !== expected.join()) {
        violations.push(`the service went through ${states.join(" -> ")}, not ${expected.join(" -> ")}`);
      }
      const stopped = statuses.at(-1);
      if (stopped?.state === ServiceState.STOPPED && (stopped.win32 !== 0 || stopped.specific !== 0)) {
        violations.push(`STOPPED reported exit codes ${stopped.win32}/${stopped.specific}, not NO_ERROR`);
      }
      const handled = service.events().find((e) => e.event === "control-return" && e.fields.control === "1");
      if (!handled) violations.push("the STOP control never returned");
      else if (handled.fields.result !== "0") violations.push(`STOP returned ${handled.fields.result}, not 0`);
      const pending = statuses.filter((s) => s.state === ServiceState.STOP_PENDING);
      const summary = `service states: ${states.join(" -> ")} (${pending.length} STOP_PENDING reports, ` +
        `checkpoints up to ${Math.max(0, ...pending.map((s) => s.checkpoint))}; STOPPED ` +
        `${stopped?.state === ServiceState.STOPPED && stopped.win32 === 0 ? "with NO_ERROR" : "not clean"}; ` +
        `STOP handled in ${handled?.fields.took_ms ?? "?"} ms)` +
        (stopped && stopped.state !== ServiceState.STOPPED ? `; last state ${STATE_NAMES[stopped.state]}` : "");
      return Promise.resolve({ summary, violations });
    },
  };
}
