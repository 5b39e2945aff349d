// worker_entry: the inside of one worker of lib/workers.ts. It runs one EchoServer that listens with SO_REUSEPORT
// and admits connections through the cap shared by all workers, sends its log records to the main thread (which
// writes them, so there is one log stream and one log file writer), and stops when the main thread says so. Its
// configuration comes by value from the main thread, which read and checked it.

import { ListenError } from "./listen.ts";
import { type ForwardedRecord, serverLog, setupLogging } from "./log.ts";
import { serverSource } from "./metrics.ts";
import { EchoServer } from "./server.ts";
import { IO_EVENTS_VAR } from "./runtime.ts";
import type { MetricsSnapshot } from "./metrics.ts";
import { SharedConnectionCap } from "./connection_cap.ts";
import { type FromWorker, RemoteClientCounts, type ToWorker } from "./workers.ts";

const scope = self as unknown as {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
};

function send(message: FromWorker): void {
  scope.postMessage(message);
}

/** Hands a log record to the main thread; values that cannot be cloned travel as text. */
function forward(record: ForwardedRecord): void {
  const plain = { ...record };
  try {
    send({ kind: "log", record: plain });
  } catch {
    const text = (value: unknown) => typeof value === "string" || typeof value === "number" ? value : String(value);
    plain.message = plain.message.map(text);
    plain.properties = Object.fromEntries(Object.entries(plain.properties).map(([k, v]) => [k, text(v)]));
    send({ kind: "log", record: plain });
  }
}

let server: EchoServer | undefined;
/** --max-connections-per-ip, counted by the main thread for every worker (lib/workers.ts). */
const clients = new RemoteClientCounts(send);
/** A stop that arrived while the server was still starting. */
let stopRequested: number | undefined;

async function start(message: Extract<ToWorker, { kind: "start" }>): Promise<void> {
  // The main thread writes the lines (to standard output and the log file); this worker only forwards them.
  await setupLogging({ ...message.log, file: undefined }, { console: false, forward });
  // As in lib/program.ts: a rejection nobody handled would end this worker and every connection on it.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    serverLog.error("internal error (please report it): {error}", { error: String(event.reason) });
  });
  // The main thread read and checked the configuration; it comes by value (lib/config.ts).
  const config = message.config;
  const cap = new SharedConnectionCap(message.open, config.maxConnections);
  // This worker's runtime read DENO_TOKIO_MAX_IO_EVENTS_PER_TICK when it was spawned (lib/runtime.ts).
  const own = new EchoServer(config, {
    cap,
    reusePort: true,
    ioEventsPerTick: Deno.env.get(IO_EVENTS_VAR),
    clients: config.access?.maxPerClient ? clients : undefined,
  });
  try {
    const { port } = await own.start();
    server = own;
    send({ kind: "listening", port });
  } catch (error) {
    send({ kind: "failed", message: (error as Error).message, listen: error instanceof ListenError });
    return;
  }
  own.finished.then(() => send({ kind: "stopped", counters: { ...own.counters } }));
  if (stopRequested !== undefined) own.stop(stopRequested);
}

scope.onmessage = (event) => {
  const message = event.data;
  if (message.kind === "start") {
    start(message);
  } else if (message.kind === "snapshot") {
    // The server is there: the main thread asks only after every worker said it listens.
    if (server) {
      send({ kind: "snapshot", request: message.request, snapshot: serverSource(server)() as MetricsSnapshot });
    }
  } else if (message.kind === "client-entered") {
    clients.answer(message.request, message.ok);
  } else if (server) {
    server.stop(message.graceMs);
  } else {
    stopRequested = Math.min(stopRequested ?? Infinity, message.graceMs);
  }
};
