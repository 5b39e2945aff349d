// workers: echosrv on several cores. `--workers N` runs N accept loops, each an EchoServer in its own Deno Worker
// (its own V8 isolate and event loop, so its own thread) with its own listeners on the same port: SO_REUSEPORT
// lets them all bind it and the kernel spreads new connections over them. A connection stays on the worker that
// accepted it, as the WSK sample advised for more worker threads. The main thread only coordinates: it starts the
// workers (the first picks the port when it is 0, the others join it), relays their log lines, and stops them.
// The connection cap stays global and exact: one counter in a SharedArrayBuffer that every worker updates with
// Atomics when it accepts or closes a connection (never on the per-byte path). SO_REUSEPORT needs Linux and Deno's
// `--unstable-net` (without the flag Deno exits the process instead of throwing), so both are checked first; where
// either is missing, echosrv says why and runs one server in the main thread.

import { getLogger } from "@logtape/logtape";
import { type ClientCounts, LocalClientCounts } from "./access.ts";
import { ListenError, listenError } from "./listen.ts";
import { type ForwardedRecord, serverLog } from "./log.ts";
import type { MetricsSnapshot, MetricsSource } from "./metrics.ts";
import type { LogConfig, RunConfig, ServerConfig } from "./config.ts";
import { emptyCounters, type ServerCounters } from "./counters.ts";
import { EchoServer } from "./server.ts";
import { reusePortUnavailable, settingForWorkers } from "./runtime.ts";
import { startupSummary } from "./limits.ts";
import type { FaultWorkerAnswer, FaultWorkerRequest } from "./faults/workers.ts";

/** What a server looks like to lib/program.ts, whether one EchoServer or a pool of workers. */
export interface Server {
  /** Opens the listeners; resolves with the port once every accept loop is listening. */
  start(): Promise<{ port: number }>;
  /** Stops gracefully (see {@link EchoServer.stop}). */
  stop(graceMs?: number): Promise<void>;
  /** Stops at once, or cuts a graceful stop short (see {@link EchoServer.stopNow}). */
  stopNow(): Promise<void>;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
}

/**
 * The server `echosrv run` asked for: one EchoServer, or a pool of `config.workers` workers. When workers cannot be
 * used here (see {@link reusePortUnavailable}), logs why and returns one EchoServer.
 *
 * @param config the validated configuration (logging must already be set up)
 * @returns a server, not yet started
 */
export function createServer(config: RunConfig): Server {
  if (config.workers <= 1) return new EchoServer(config.server);
  const reason = reusePortUnavailable();
  if (reason) {
    serverLog.warn("--workers {workers} cannot be honoured: {reason}. Running 1 worker.", {
      workers: config.workers,
      reason,
    });
    return new EchoServer(config.server);
  }
  return new WorkerPool(config);
}

/** Messages from the main thread to a worker. */
export type ToWorker =
  | {
    kind: "start";
    id: number;
    /** The server's configuration, by value (lib/config.ts: plain data), with the port this worker listens on. */
    config: ServerConfig;
    log: LogConfig;
    /** The shared connection count of lib/connection_cap.ts's SharedConnectionCap. */
    open: SharedArrayBuffer;
    /** Issue 14: the --fault-listen ports the first worker listens on, for the others to join. */
    faultPorts?: number[];
  }
  | { kind: "stop"; graceMs: number }
  /** Asks for a reading of the worker's counters, for /metrics. */
  | { kind: "snapshot"; request: number }
  /** The answer to a `client-enter`: whether the client was under --max-connections-per-ip (and is now counted). */
  | { kind: "client-entered"; request: number; ok: boolean }
  /** Issue 14: a question to the worker's fault runtime (a table change, a listing; lib/faults/workers.ts). */
  | { kind: "faults"; request: number; body: FaultWorkerRequest };

/** Messages from a worker to the main thread. */
export type FromWorker =
  | { kind: "listening"; port: number; faultPorts?: number[] }
  | { kind: "failed"; message: string; listen: boolean }
  | { kind: "log"; record: ForwardedRecord }
  | { kind: "stopped"; counters: ServerCounters }
  | { kind: "snapshot"; request: number; snapshot: MetricsSnapshot }
  /** --max-connections-per-ip, counted in the main thread for every worker: one more connection of `key`? */
  | { kind: "client-enter"; request: number; key: string }
  /** The end of a connection a `client-enter` counted. */
  | { kind: "client-leave"; key: string }
  /** Issue 14: the fault runtime's answer. */
  | { kind: "faults"; request: number; body: FaultWorkerAnswer };

/** One worker as the pool sees it. */
interface Member {
  id: number;
  worker: Worker;
  /** Resolves with the port once its server listens; rejects if it could not start. */
  listening: PromiseWithResolvers<number>;
  /** Resolves when it has stopped (or died). */
  stopped: PromiseWithResolvers<void>;
  counters?: ServerCounters;
  /** Metrics readings asked for and not yet answered, by request number. */
  snapshots: Map<number, (snapshot: MetricsSnapshot) => void>;
  /** The per-client counts this worker holds, given back if it dies. */
  clients: Map<string, number>;
  /** Issue 14: fault questions asked and not yet answered, by request number; and its --fault-listen ports. */
  faults: Map<number, (answer: FaultWorkerAnswer) => void>;
  faultPorts?: number[];
}

/**
 * N EchoServers in N workers, sharing one port and one connection cap.
 *
 * @example
 * ```ts
 * import { parseCommandLine } from "./options.ts";
 *
 * const what = parseCommandLine(["--port", "0", "--host", "127.0.0.1", "--workers", "2"]);
 * if (what.kind === "run") {
 *   const pool = new WorkerPool(what.config); // needs Linux and --unstable-net (see reusePortUnavailable)
 *   const { port } = await pool.start();
 *   console.log(`two accept loops on port ${port}`);
 *   await pool.stop();
 * }
 * ```
 */
export class WorkerPool implements Server {
  readonly #config: RunConfig;
  readonly #open = new SharedArrayBuffer(4);
  #members: Member[] = [];
  #stopping: Promise<void> | undefined;
  #finished = Promise.withResolvers<void>();
  /** The number of the last metrics reading asked of a worker. */
  #requests = 0;
  /** DENO_TOKIO_MAX_IO_EVENTS_PER_TICK as the workers got it. */
  #ioEvents: string | undefined;
  /** --max-connections-per-ip for every worker at once, so the cap is exact (lib/access.ts). */
  readonly #clients: LocalClientCounts;
  /** Issue 14: the --fault-listen ports, once the first worker listens. */
  #faultPorts: number[] | undefined;
  /** Set once every worker listens: a stop summarises only a pool that served (a failed start logs its error). */
  #started = false;

  /**
   * A pool, not yet started: {@link start} spawns the workers.
   *
   * @param config the configuration; `config.workers` workers are started
   */
  constructor(config: RunConfig) {
    this.#config = config;
    this.#clients = new LocalClientCounts(config.server.access?.maxPerClient ?? 0);
  }

  /** The workers' counters, summed; complete once {@link finished} has resolved (each worker reports at its end). */
  get counters(): ServerCounters {
    const total = emptyCounters();
    for (const member of this.#members) {
      for (const key of Object.keys(total) as (keyof ServerCounters)[]) total[key] += member.counters?.[key] ?? 0;
    }
    return total;
  }

  get finished(): Promise<void> {
    return this.#finished.promise;
  }

  /**
   * One metrics source per worker: a scrape asks each worker for a reading of its counters (a message there and
   * back; nothing on the per-byte path). A worker that has stopped answers with its final counters.
   *
   * @returns the sources, for lib/metrics.ts to sum
   */
  metricsSources(): MetricsSource[] {
    return this.#members.map((member) => () => this.#snapshot(member));
  }

  /** Issue 14: the --fault-listen ports the workers listen on (known once started). */
  get faultPorts(): number[] | undefined {
    return this.#faultPorts;
  }

  /**
   * Issue 14: asks every live worker's fault runtime (lib/faults/workers.ts) and waits for all the answers.
   *
   * @param body the question
   * @returns one answer per worker that answered (a worker that ends meanwhile answers null)
   */
  faultRequest(body: FaultWorkerRequest): Promise<FaultWorkerAnswer[]> {
    return Promise.all(
      this.#members.filter((m) => m.counters === undefined).map((member) => {
        const request = ++this.#requests;
        const { promise, resolve } = Promise.withResolvers<FaultWorkerAnswer>();
        member.faults.set(request, resolve);
        post(member, { kind: "faults", request, body });
        return promise;
      }),
    );
  }

  #snapshot(member: Member): Promise<MetricsSnapshot> {
    if (member.counters) return Promise.resolve(finalSnapshot(member.counters));
    const request = ++this.#requests;
    const { promise, resolve } = Promise.withResolvers<MetricsSnapshot>();
    member.snapshots.set(request, resolve);
    post(member, { kind: "snapshot", request });
    return promise;
  }

  /**
   * Starts the workers: the first listens on the configured port (picking one when it is 0), then the others join
   * that port. Resolves once all of them listen.
   *
   * @returns the port
   * @throws {ListenError} when the port cannot be listened on (the workers are stopped again)
   */
  async start(): Promise<{ port: number }> {
    const { server, workers } = this.#config;
    // SO_REUSEPORT would let this pool share a port that another program (of the same user) already listens on,
    // silently splitting its connections; a plain bind first turns that into the usual "in use" error.
    if (server.port !== 0) probePort(server.hosts, server.port);
    // Each worker's runtime reads DENO_TOKIO_MAX_IO_EVENTS_PER_TICK when it is spawned (lib/runtime.ts).
    this.#ioEvents = settingForWorkers();
    try {
      const first = this.#spawn(1, server.port);
      const port = await first.listening.promise;
      this.#faultPorts = first.faultPorts;
      const rest = [];
      for (let id = 2; id <= workers; id++) rest.push(this.#spawn(id, port, this.#faultPorts));
      await Promise.all(rest.map((m) => m.listening.promise));
      this.#started = true;
      serverLog.info("echoing on port {port} with {workers} workers ({limits})", {
        port,
        workers,
        ioEventsPerTick: this.#ioEvents ?? "1024 (Deno's default)",
        ...startupSummary(server, true),
      });
      return { port };
    } catch (error) {
      await this.#stopAll(0);
      throw error;
    }
  }

  /**
   * Stops every worker gracefully (see {@link EchoServer.stop}): each closes its listeners at once and lets its
   * sessions finish for up to `graceMs`. A grace of 0 is {@link stopNow}.
   *
   * @param graceMs how long sessions may finish; defaults to the configured shutdown timeout
   * @returns resolves when every worker has stopped
   */
  stop(graceMs: number = this.#config.server.shutdownTimeoutMs): Promise<void> {
    if (graceMs <= 0) return this.stopNow();
    this.#stopping ??= this.#stopAll(graceMs).then(() => this.#stopped());
    return this.#stopping;
  }

  /**
   * Stops every worker at once (see {@link EchoServer.stopNow}); during a graceful stop, cuts it short.
   *
   * @returns resolves when every worker has stopped
   */
  stopNow(): Promise<void> {
    if (this.#stopping) void this.#stopAll(0);
    this.#stopping ??= this.#stopAll(0).then(() => this.#stopped());
    return this.#stopping;
  }

  /**
   * Logs the pool's summary and resolves {@link finished}. A pool whose start failed logs none: it never served (a
   * worker that did listen meanwhile has said so, and logs its own summary), and its error says all there is.
   */
  #stopped(): void {
    if (this.#started) {
      const counters = this.counters;
      serverLog.info("stopped: {accepted} connection(s) served, {bytes} bytes echoed, by {workers} workers", {
        ...counters,
        bytes: counters.bytesEchoed,
        workers: this.#members.length,
      });
    }
    this.#finished.resolve();
  }

  /** Asks every worker to stop (a grace of 0: at once, or cutting its graceful stop short) and waits for all. */
  async #stopAll(graceMs: number): Promise<void> {
    for (const member of this.#members) post(member, { kind: "stop", graceMs });
    await Promise.all(this.#members.map((m) => m.stopped.promise));
  }

  #spawn(id: number, port: number, faultPorts?: number[]): Member {
    const worker = new Worker(new URL("./worker_entry.ts", import.meta.url), { type: "module", name: `echosrv-${id}` });
    const member: Member = {
      id,
      worker,
      listening: Promise.withResolvers<number>(),
      stopped: Promise.withResolvers<void>(),
      snapshots: new Map(),
      clients: new Map(),
      faults: new Map(),
    };
    // A start that fails also ends the worker: nobody waits on `listening` then, which must not be an unhandled
    // rejection.
    member.listening.promise.catch(() => {});
    this.#members.push(member);
    worker.onmessage = (event: MessageEvent<FromWorker>) => this.#receive(member, event.data);
    worker.onerror = (event) => {
      // Uncaught in the worker; without preventDefault Deno would end the whole process with it.
      event.preventDefault();
      serverLog.error("worker {id} failed: {message}; its connections are lost, the other workers keep serving", {
        id,
        message: event.message,
      });
      this.#ended(member);
    };
    post(member, {
      kind: "start",
      id,
      config: { ...this.#config.server, port },
      log: this.#config.log,
      open: this.#open,
      ...(faultPorts ? { faultPorts } : {}),
    });
    return member;
  }

  #receive(member: Member, message: FromWorker): void {
    switch (message.kind) {
      case "log":
        relay(member.id, message.record);
        break;
      case "listening":
        member.faultPorts = message.faultPorts;
        member.listening.resolve(message.port);
        break;
      case "failed":
        member.listening.reject(message.listen ? new ListenError(message.message) : new Error(message.message));
        this.#ended(member);
        break;
      case "stopped":
        member.counters = message.counters;
        this.#ended(member);
        break;
      case "snapshot":
        member.snapshots.get(message.request)?.(message.snapshot);
        member.snapshots.delete(message.request);
        break;
      case "faults":
        member.faults.get(message.request)?.(message.body);
        member.faults.delete(message.request);
        break;
      case "client-enter": {
        const ok = this.#clients.enter(message.key);
        if (ok) member.clients.set(message.key, (member.clients.get(message.key) ?? 0) + 1);
        post(member, { kind: "client-entered", request: message.request, ok });
        break;
      }
      case "client-leave": {
        const held = member.clients.get(message.key) ?? 0;
        if (held === 0) break;
        this.#clients.leave(message.key);
        if (held === 1) member.clients.delete(message.key);
        else member.clients.set(message.key, held - 1);
        break;
      }
    }
  }

  #ended(member: Member): void {
    member.listening.reject(new Error(`worker ${member.id} ended before it listened`));
    // Readings still awaited get the final counters (or zeros, for a worker that died).
    const counters = member.counters ?? emptyCounters();
    for (const answer of member.snapshots.values()) answer(finalSnapshot(counters));
    member.snapshots.clear();
    for (const answer of member.faults.values()) answer(null);
    member.faults.clear();
    // A worker that died cannot say its connections ended: they did, with it.
    for (const [key, held] of member.clients) for (let i = 0; i < held; i++) this.#clients.leave(key);
    member.clients.clear();
    member.worker.terminate();
    member.stopped.resolve();
  }
}

/** The reading of a worker that has ended: its last counters, no open connection, draining. */
function finalSnapshot(counters: ServerCounters): MetricsSnapshot {
  return { connectionsActive: 0, bytesEchoed: counters.bytesEchoed, draining: true, counters };
}

function post(member: Member, message: ToWorker): void {
  try {
    member.worker.postMessage(message);
  } catch {
    // The worker is gone already; its `stopped` has been resolved.
  }
}

/** Writes a worker's log line through the main thread's loggers, marked with the worker's number. */
function relay(id: number, record: ForwardedRecord): void {
  const [first, ...rest] = record.message;
  getLogger(record.category).emit({
    ...record,
    message: [`worker ${id}: ${first ?? ""}`, ...rest],
    rawMessage: `worker ${id}: ${record.rawMessage}`,
    properties: { ...record.properties, worker: id },
  });
}

/** Throws the usual ListenError when another program already listens on the port (see WorkerPool.start). */
function probePort(hosts: readonly string[], port: number): void {
  for (const hostname of hosts) {
    let probe: Deno.TcpListener;
    try {
      probe = Deno.listen({ hostname, port, transport: "tcp" });
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) throw listenError(error, hostname, port, "TCP");
      continue; // other failures (no IPv6, no such address) are for the workers' own listeners to report
    }
    probe.close();
  }
}

/**
 * A worker's view of the pool's --max-connections-per-ip counts: each question is a message to the main thread and
 * its answer (only on the way in and out of a connection, never on the per-byte path).
 */
export class RemoteClientCounts implements ClientCounts {
  readonly #send: (message: FromWorker) => void;
  readonly #waiting = new Map<number, (ok: boolean) => void>();
  #requests = 0;

  /**
   * Counts that ask the main thread through `send`.
   *
   * @param send posts a message to the main thread
   */
  constructor(send: (message: FromWorker) => void) {
    this.#send = send;
  }

  enter(key: string): Promise<boolean> {
    const request = ++this.#requests;
    const { promise, resolve } = Promise.withResolvers<boolean>();
    this.#waiting.set(request, resolve);
    this.#send({ kind: "client-enter", request, key });
    return promise;
  }

  leave(key: string): void {
    this.#send({ kind: "client-leave", key });
  }

  /**
   * Takes the main thread's answer to an {@link enter}.
   *
   * @param request the question's number
   * @param ok whether the client was admitted
   */
  answer(request: number, ok: boolean): void {
    this.#waiting.get(request)?.(ok);
    this.#waiting.delete(request);
  }
}
