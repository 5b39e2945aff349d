// client: one process of the stress swarm. It runs `concurrency` sessions at a time against the server until the
// run's duration is up, each session drawn from (seed, session number) so any one can be replayed, and reports to
// the orchestrator (stress/swarm.ts) as JSON lines on standard output: progress, failures, the connections whose
// close the server's log must confirm (each with what came back on it and how it ended), and, when the server is
// being stopped, the sessions it cut and the connections it refused. Started as
// `deno run --allow-net --allow-run=python3 stress/client.ts '<ClientConfig as JSON>'`.

import { KINDS, type PlanLimits, planSession, type SessionPlan } from "./kinds.ts";
import { type ConnRecord, type Ending, endingOf, SessionContext, type SessionEnv } from "./session.ts";

/** What the orchestrator tells a client process. */
export interface ClientConfig {
  env: SessionEnv;
  limits: PlanLimits;
  weights: Record<string, number>;
  /** The run's seed. */
  seed: number;
  /** This process's index, 0 to clients - 1. */
  client: number;
  /** How many client processes the run has (session numbers interleave across them). */
  clients: number;
  /** Sessions at once in this process. */
  concurrency: number;
  /** No session starts after this long. */
  durationMs: number;
  /** Run only this session, and describe it in full. */
  replay?: number;
}

/** Counts of one kind's sessions, in one process or summed over the swarm. */
export interface KindStats {
  sessions: number;
  ok: number;
  cut: number;
  refused: number;
  failed: number;
  bytesSent: number;
  bytesVerified: number;
  connections: number;
  /** Epoch milliseconds of the last session that ended as planned (0 if none). */
  lastOkAt: number;
}

/** A line a client writes. */
export type ClientMessage =
  | {
    type: "progress" | "done";
    client: number;
    stats: Record<string, KindStats>;
    peakConnections: number;
    /** In stop mode, when each session that ended as planned ended (epoch ms), to count those after the signal. */
    okTimes?: number[];
  }
  | {
    type: "failure";
    client: number;
    n: number;
    kind: string;
    ending: Ending;
    detail: string;
    at: number;
    plan: SessionPlan;
    /** The connection it ended on, if it opened one: the orchestrator adds the server's view of it. */
    record?: ConnRecord;
  }
  | {
    /**
     * A connection whose close the server's closing log line must confirm: one the session expected the server to
     * close (a limit, a timeout) or to see closed, or, while the server is being stopped, the one a cut session
     * ended on (`stopCut`), which the stop's deadline may have closed.
     */
    type: "check";
    client: number;
    n: number;
    kind: string;
    record: ConnRecord;
    stopCut: boolean;
  }
  | {
    type: "stopped";
    client: number;
    n: number;
    kind: string;
    ending: "cut" | "refused";
    at: number;
    /** Bytes the connection that was cut had received (an echo already under way). */
    received: number;
    /** How it was cut or refused, for the report. */
    detail: string;
  }
  | {
    type: "replay";
    plan: SessionPlan;
    ending: Ending;
    detail: string;
    stats: KindStats;
    durationMs: number;
    record?: ConnRecord;
  };

/** Zeroed counters. */
export function emptyStats(): KindStats {
  return {
    sessions: 0,
    ok: 0,
    cut: 0,
    refused: 0,
    failed: 0,
    bytesSent: 0,
    bytesVerified: 0,
    connections: 0,
    lastOkAt: 0,
  };
}

/**
 * Session number `k` of worker `worker` in client `client`: the numbers interleave so every session of the run
 * has its own number, whatever the timing.
 */
export function sessionNumber(config: ClientConfig, worker: number, k: number): number {
  return config.client + config.clients * (worker + config.concurrency * k);
}

/** Extra time after a session's deadline for its run to notice its closed connections and return. */
const AFTER_DEADLINE_MS = 10_000;

/** Runs one session to its ending. Never throws. */
async function runSession(
  config: ClientConfig,
  n: number,
  onConnections: (delta: number) => void,
): Promise<{ plan: SessionPlan; ending: Ending; detail: string; ctx: SessionContext }> {
  const plan = planSession(config.seed, n, config.weights, config.limits);
  const ctx = new SessionContext(config.env, plan.deadlineMs, onConnections);
  let error: unknown;
  let stuck: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      KINDS[plan.kind].run(plan, ctx),
      new Promise<never>((_, reject) => {
        stuck = setTimeout(
          () => reject(new Error(`still running ${AFTER_DEADLINE_MS} ms after its deadline, while ${ctx.doing}`)),
          plan.deadlineMs + AFTER_DEADLINE_MS,
        );
      }),
    ]);
  } catch (e) {
    error = e;
  } finally {
    clearTimeout(stuck);
    ctx.dispose();
  }
  const ending = endingOf(error, ctx);
  const detail = error === undefined ? "" : `${(error as Error).name}: ${(error as Error).message}`;
  return { plan, ending, detail, ctx };
}

function write(message: ClientMessage): void {
  console.log(JSON.stringify(message));
}

/**
 * The connections of a session that the server's log must confirm: those with an expectation, when it ended as
 * planned (while the server is being stopped, its stop may have closed them too); the last one, when a stop cut it.
 */
function checks(
  config: ClientConfig,
  n: number,
  kind: string,
  ending: Ending,
  ctx: SessionContext,
): Extract<ClientMessage, { type: "check" }>[] {
  const stopping = "server stopping";
  const message = (record: ConnRecord, stopCut: boolean) =>
    ({ type: "check", client: config.client, n, kind, record, stopCut }) as const;
  if (ending === "ok") {
    return ctx.records.filter((r) => r.expect).map((r) =>
      message(
        config.env.stopMode ? { ...r, expect: { ...r.expect!, reasons: [...r.expect!.reasons, stopping] } } : r,
        false,
      )
    );
  }
  const last = ctx.records.at(-1);
  if (config.env.stopMode && ending === "cut" && last) {
    return [message({ ...last, expect: { reasons: [stopping] } }, true)];
  }
  return [];
}

/** Runs the client process's share of the swarm. */
async function runClient(config: ClientConfig): Promise<void> {
  const stats: Record<string, KindStats> = Object.fromEntries(Object.keys(KINDS).map((k) => [k, emptyStats()]));
  let open = 0;
  let peakConnections = 0;
  const onConnections = (delta: number) => {
    open += delta;
    if (open > peakConnections) peakConnections = open;
  };
  const okTimes: number[] = [];
  const started = performance.now();
  const report = setInterval(() => write({ type: "progress", client: config.client, stats, peakConnections }), 1000);

  const worker = async (w: number) => {
    for (let k = 0; performance.now() - started < config.durationMs; k++) {
      const n = sessionNumber(config, w, k);
      const { plan, ending, detail, ctx } = await runSession(config, n, onConnections);
      const kind = stats[plan.kind];
      kind.sessions++;
      kind.bytesSent += ctx.bytesSent;
      kind.bytesVerified += ctx.bytesVerified;
      kind.connections += ctx.connections;
      const at = Date.now();
      for (const check of checks(config, n, plan.kind, ending, ctx)) write(check);
      if (ending === "ok") {
        kind.ok++;
        kind.lastOkAt = at;
        if (config.env.stopMode) okTimes.push(at);
      } else if (config.env.stopMode && (ending === "cut" || ending === "refused")) {
        // The orchestrator checks these came after the stop signal (and cuts after the grace period).
        kind[ending]++;
        write({
          type: "stopped",
          client: config.client,
          n,
          kind: plan.kind,
          ending,
          at,
          received: ctx.receivedOnLastConnection,
          detail,
        });
        if (ending === "refused") return; // the server is gone: this worker is done
      } else {
        kind.failed++;
        const record = ctx.records.at(-1);
        write({ type: "failure", client: config.client, n, kind: plan.kind, ending, detail, at, plan, record });
      }
    }
  };
  await Promise.all(Array.from({ length: config.concurrency }, (_, w) => worker(w)));
  clearInterval(report);
  write({ type: "done", client: config.client, stats, peakConnections, okTimes });
}

/** Runs one session and describes it: what it planned, how it ended, what it moved. */
async function replay(config: ClientConfig, n: number): Promise<void> {
  const started = performance.now();
  const { plan, ending, detail, ctx } = await runSession(config, n, () => {});
  for (const check of checks(config, n, plan.kind, ending, ctx)) write(check);
  const stats = emptyStats();
  Object.assign(stats, {
    sessions: 1,
    ok: ending === "ok" ? 1 : 0,
    failed: ending === "ok" ? 0 : 1,
    bytesSent: ctx.bytesSent,
    bytesVerified: ctx.bytesVerified,
    connections: ctx.connections,
  });
  const durationMs = Math.round(performance.now() - started);
  write({ type: "replay", plan, ending, detail, stats, durationMs, record: ctx.records.at(-1) });
}

if (import.meta.main) {
  const config = JSON.parse(Deno.args[0]) as ClientConfig;
  if (config.replay !== undefined) await replay(config, config.replay);
  else await runClient(config);
}
