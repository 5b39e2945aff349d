// log: where echosrv's log lines go and which of them are written. LogTape (npm) stands in for the design card's
// @std/log (JSR, unreachable here). Records carry structured properties; the text format is for people, the JSON
// format one object per line for machines. WPP's trace flags of the WSK sample map onto levels: 0x1 errors and
// warnings, 0x2 info, 0x4 per-connection events (debug).

import {
  configure,
  dispose,
  getLogger,
  getStreamSink,
  getTextFormatter,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";
import { getRotatingFileSink } from "@logtape/file";

import { type LogConfig, type LogLevelName, TRACE_CONNECTIONS, TRACE_ERRORS, TRACE_INFO } from "./config.ts";

/**
 * A logger as echosrv's modules use it (LogTape's Logger is one): a message template whose `{name}` placeholders
 * take their values from `properties`, which also travel with the record (the JSON lines keep them).
 */
export interface Log {
  /** Logs at level error (trace flag 0x1). */
  error(message: string, properties?: Record<string, unknown>): void;
  /** Logs at level warning (trace flag 0x1). */
  warn(message: string, properties?: Record<string, unknown>): void;
  /** Logs at level info (trace flag 0x2). */
  info(message: string, properties?: Record<string, unknown>): void;
  /** Logs at level debug (trace flag 0x4: per-connection events). */
  debug(message: string, properties?: Record<string, unknown>): void;
}

/** Lines about the server as a whole: listeners, limits, stop. */
export const serverLog: Log = getLogger(["echosrv", "server"]);
/** One line per connection opened and closed (debug level, trace flag 0x4). */
export const connLog: Log = getLogger(["echosrv", "conn"]);

const LEVELS: Record<LogLevelName, LogLevel> = { error: "error", warn: "warning", info: "info", debug: "debug" };

/** The trace flag a record needs, by its level. */
function traceFlagOf(record: LogRecord): number {
  switch (record.level) {
    case "fatal":
    case "error":
    case "warning":
      return TRACE_ERRORS;
    case "info":
      return TRACE_INFO;
    default:
      return TRACE_CONNECTIONS;
  }
}

const JSON_LEVELS: Record<LogLevel, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/**
 * One JSON object per line: time, level, logger, the message with its values in place, and the values again as
 * `properties`. (LogTape's own JSON formatter quotes string values inside the message, which reads badly.)
 */
function jsonLine(record: LogRecord): string {
  let message = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    message += i % 2 === 0 ? part : typeof part === "string" ? part : JSON.stringify(part);
  }
  return JSON.stringify({
    "@timestamp": new Date(record.timestamp).toISOString(),
    level: JSON_LEVELS[record.level],
    logger: record.category.join("."),
    message,
    properties: record.properties,
  }) + "\n";
}

/** A log record as plain data, as a worker hands it to the main thread (lib/workers.ts), which writes it. */
export interface ForwardedRecord {
  /** The logger's category, e.g. `["echosrv", "server"]`. */
  category: readonly string[];
  /** LogTape's level. */
  level: LogLevel;
  /** The message: text and values alternating, values at the odd places. */
  message: readonly unknown[];
  /** The message template as written, `{name}` placeholders included. */
  rawMessage: string;
  /** When, in milliseconds since the Unix epoch. */
  timestamp: number;
  /** The template's values, and any more. */
  properties: Record<string, unknown>;
}

/** LogTape's levels, from the least severe. */
export type LogLevel = "trace" | "debug" | "info" | "warning" | "error" | "fatal";

/** Where the lines go besides the file: standard output, or nowhere (a Windows service has no console). */
export interface LogTargets {
  /** Write to standard output (default true). */
  console?: boolean;
  /** Also hand every record that passes the filters to this function (a worker forwards its lines to the main thread). */
  forward?: (record: ForwardedRecord) => void;
}

/** A record as plain data (the template joined when it was a tagged template). */
function plainRecord(record: LogRecord): ForwardedRecord {
  return {
    category: [...record.category],
    level: record.level,
    message: [...record.message],
    rawMessage: typeof record.rawMessage === "string" ? record.rawMessage : record.rawMessage.join("{}"),
    timestamp: record.timestamp,
    properties: record.properties,
  };
}

let connectionEvents = false;

/**
 * Reports whether per-connection events are logged, so the hot path can skip building their records.
 *
 * @returns true when `--log-level debug` and trace flag 0x4 are both in effect
 */
export function connectionEventsEnabled(): boolean {
  return connectionEvents;
}

/** Thrown when the log file cannot be opened; the message names the file and the reason. */
export class LogFileError extends Error {
  /** The error's name, as stack traces show it. */
  override name = "LogFileError";
}

/**
 * Sets up logging as the configuration says. Must run before the first line is logged; may run again (it replaces
 * the previous setup). The log file is opened here, so a bad path fails now with {@link LogFileError}, not later.
 *
 * @param config level, trace flags, format and file
 * @param targets whether to write to standard output as well
 */
export async function setupLogging(config: LogConfig, targets: LogTargets = {}): Promise<void> {
  const formatter = config.format === "json"
    ? jsonLine
    : getTextFormatter({ timestamp: "rfc3339", category: ".", value: "bare" });
  const sinks: Record<string, Sink> = {};
  if (targets.console ?? true) {
    // Non-blocking with a bounded buffer: a stalled reader of standard output drops log lines, never stalls echo.
    sinks.stdout = getStreamSink(Deno.stdout.writable, {
      formatter,
      closeStream: false,
      nonBlocking: { bufferSize: 64, flushInterval: 50 },
    });
  }
  if (config.file) {
    try {
      Deno.openSync(config.file, { append: true, create: true }).close();
    } catch (error) {
      throw new LogFileError(`cannot open the log file ${config.file}: ${(error as Error).message}`);
    }
    sinks.file = getRotatingFileSink(config.file, {
      formatter,
      maxSize: 10 * 1024 * 1024,
      maxFiles: 5,
      nonBlocking: true,
      bufferSize: 8192,
      flushInterval: 500,
    });
  }
  const forward = targets.forward;
  if (forward) sinks.forward = (record) => forward(plainRecord(record));
  const mask = config.traceFlags;
  connectionEvents = config.level === "debug" && (mask & TRACE_CONNECTIONS) !== 0;
  await configure({
    reset: true,
    sinks,
    filters: { traceFlags: (record: LogRecord) => (traceFlagOf(record) & mask) !== 0 },
    loggers: [
      { category: ["echosrv"], lowestLevel: LEVELS[config.level], sinks: Object.keys(sinks), filters: ["traceFlags"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: Object.keys(sinks) },
    ],
  });
}

/** Writes out what is buffered and closes the log file; call before the process exits. */
export async function closeLogging(): Promise<void> {
  await dispose();
}

/**
 * Counts an event that may come in floods (refused connections, accept errors) and logs it at most once per
 * interval: the first at once, the rest as one summary line with how many there were.
 */
export class RateLimitedLog {
  #count = 0;
  #lastEmit = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #detail = "";

  /**
   * A log of events folded to one line per interval.
   *
   * @param intervalMs the least time between two lines
   * @param emit writes one line for `count` events (with the latest detail)
   */
  constructor(private readonly intervalMs: number, private readonly emit: (count: number, detail: string) => void) {}

  /**
   * Records one event.
   *
   * @param detail what to say about this event if it is the one written out
   */
  add(detail = ""): void {
    this.#count++;
    this.#detail = detail;
    const now = performance.now();
    if (now - this.#lastEmit >= this.intervalMs) {
      this.flush();
    } else if (this.#timer === undefined) {
      const timer = setTimeout(() => this.flush(), this.intervalMs - (now - this.#lastEmit));
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** Writes the pending summary now, if any (also used at stop). */
  flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#count === 0) return;
    const count = this.#count;
    this.#count = 0;
    this.#lastEmit = performance.now();
    this.emit(count, this.#detail);
  }
}
