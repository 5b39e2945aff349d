// closes: holds what a client saw of a connection against the server's own closing log line for it (echosrv's
// per-connection line at `--log-level debug`: "closed {peer} after {durationMs} ms, {bytes} bytes echoed: {reason}").
// A close the server starts (a byte limit, an age limit, the idle or send timeout, a stop) must deliver everything
// it counted as echoed: the client must have read exactly that many bytes (the session's verifier checked that
// they are the right ones), then the end of stream, not a reset, and the line must give the reason the session
// planned for. Lines are found by the client's local port (the peer the server names; a PROXY header carries the
// same port) and by time: a port is used again later, but a connection's line comes after the client began to
// connect and describes a connection the server opened after that.

import { LINGER_QUIET_MS as SERVER_LINGER_QUIET_MS } from "../lib/connection.ts";
import type { ConnRecord } from "./session.ts";

/** One closing line of the server's log. */
export interface Closing {
  /** Epoch ms of the line (the close). */
  at: number;
  /** The connection's age at the close, as the server measured it from accepting it. */
  durationMs: number;
  /** Bytes the server counted as echoed on it. */
  bytes: number;
  reason: string;
  peer: string;
}

/** Rounding of the log's timestamps and of durationMs, in ms, allowed when lines are matched by time. */
const MATCH_SLACK_MS = 3;
/** Clock grain allowed when an age in the log is compared with a timeout (ms). */
const AGE_GRAIN_MS = 5;
/** A write this close before the server's close may still have been arriving, unread, when the socket closed (ms). */
const LATE_WRITE_SLACK_MS = 50;
/**
 * A lingering close ends once the peer has been quiet this long (lib/connection.ts's LINGER_QUIET_MS), less clock
 * grain: a write that began after the close meets a closed socket rightly only after such a pause (ms). A stop's
 * linger is bounded in all, not by quiet.
 */
const LINGER_QUIET_MS = SERVER_LINGER_QUIET_MS - 100;

/** The closing lines of one server's log, by the client port they name. */
export class ClosingLog {
  readonly #byPort = new Map<number, Closing[]>();
  /** How many closing lines there were. */
  readonly count: number;

  /**
   * @param lines the server's JSON log lines (other lines are skipped)
   */
  constructor(lines: readonly string[]) {
    let count = 0;
    for (const line of lines) {
      if (!line.includes("bytes echoed")) continue;
      let record: { "@timestamp"?: string; message?: string; properties?: Record<string, unknown> };
      try {
        record = JSON.parse(line);
      } catch {
        continue;
      }
      if (!/^(worker \d+: )?closed /.test(record.message ?? "")) continue;
      const p = record.properties ?? {};
      const peer = String(p.peer ?? "");
      const port = Number(/:(\d+)$/.exec(peer)?.[1]);
      if (!Number.isInteger(port)) continue;
      const closing: Closing = {
        at: Date.parse(record["@timestamp"] ?? ""),
        durationMs: Number(p.durationMs),
        bytes: Number(p.bytes),
        reason: String(p.reason),
        peer,
      };
      let list = this.#byPort.get(port);
      if (!list) this.#byPort.set(port, list = []);
      list.push(closing);
      count++;
    }
    for (const list of this.#byPort.values()) list.sort((a, b) => a.at - b.at);
    this.count = count;
  }

  /**
   * The closing line of the connection a client opened from `port`, having begun to connect at `connectAt`: the
   * first line for that port of a connection the server opened (its close minus its age) after that moment.
   *
   * @param port the client's local port
   * @param connectAt epoch ms just before the client connected
   * @returns the line, or undefined when the server logged none
   */
  find(port: number, connectAt: number): Closing | undefined {
    return this.#byPort.get(port)?.find((c) => c.at - c.durationMs >= connectAt - MATCH_SLACK_MS);
  }
}

/** How a check came out. */
export type CheckVerdict =
  /** Exactly what the server counted came back, then the end of stream, for the reason planned. */
  | "exact"
  /** A cut connection the server never served: reset in the listen backlog by a stop (no line, nothing received). */
  | "never served"
  /**
   * The session could not bring about the close it planned (a send-timeout session whose write waited on a server
   * slow to read, not on a stalled echo), and the line shows, exactly, the close that happened instead.
   */
  | "missed"
  /**
   * Reset because the client sent more after the server's lingering close had ended (TCP answers data for a
   * closed socket with a reset, which discards what the client had not read yet): the linger's bound, not a loss.
   */
  | "late write"
  | "violation";

/** The outcome of one check. */
export interface CheckOutcome {
  verdict: CheckVerdict;
  /** What was wrong (violations), or what happened (the others). */
  detail: string;
  closing?: Closing;
}

/** The server's line in words, for reports. */
export function describeClosing(c: Closing): string {
  return `the server logged "closed ${c.peer} after ${c.durationMs} ms, ${c.bytes} bytes echoed: ${c.reason}"`;
}

/**
 * Judges one connection by the server's closing line for it.
 *
 * @param record what the client saw, with what the session expected of the close
 * @param log the closing lines of the server it went to
 * @param stopCut true for the last connection of a session the server's stop cut (it may never have been served)
 * @returns the verdict and why
 */
export function judgeClose(record: ConnRecord, log: ClosingLog, stopCut: boolean): CheckOutcome {
  const closing = log.find(record.port, record.connectAt);
  const end = record.end ?? "no end seen";
  if (!closing) {
    if (stopCut && record.received === 0) {
      return { verdict: "never served", detail: `no line for port ${record.port}; ${end} with nothing received` };
    }
    return {
      verdict: "violation",
      detail: `the server logged no close of port ${record.port} (connected at ${record.connectAt}); the client ` +
        `received ${record.received} bytes, then ${end}`,
    };
  }
  const expect = record.expect ?? { reasons: [] };
  const problems: string[] = [];
  let verdict: CheckVerdict = "exact";
  const lateWrite = (record.end === "reset" || record.writeReset === true) &&
    record.lastWriteAt >= closing.at - LATE_WRITE_SLACK_MS &&
    (closing.reason === "server stopping" || record.quietBeforeMs >= LINGER_QUIET_MS);
  if (lateWrite) {
    verdict = "late write";
    if (record.received > closing.bytes) {
      problems.push(`the client read ${record.received} bytes, more than the ${closing.bytes} counted as echoed`);
    }
  } else {
    if (closing.bytes !== record.received) {
      problems.push(`the client read ${record.received} bytes of the ${closing.bytes} the server counted as echoed`);
    }
    if (record.end !== "eof") problems.push(`its read side ended with ${end}, not the end of stream`);
  }
  const planned = closing.reason === expect.reasons[0];
  if (!expect.reasons.includes(closing.reason)) {
    const expected = expect.reasons.map((r) => `"${r}"`).join(" or ");
    problems.push(`the close's reason is "${closing.reason}", not ${expected}`);
  }
  if (planned && expect.bytes !== undefined && closing.bytes !== expect.bytes) {
    problems.push(`the server counted ${closing.bytes} bytes echoed, not ${expect.bytes}`);
  }
  if (planned && expect.minDurationMs !== undefined && closing.durationMs < expect.minDurationMs - AGE_GRAIN_MS) {
    problems.push(`closed at an age of ${closing.durationMs} ms, before ${expect.minDurationMs} ms`);
  }
  if (problems.length > 0) {
    return { verdict: "violation", detail: `${problems.join("; ")} (${describeClosing(closing)})`, closing };
  }
  if (verdict === "exact" && expect.missed) {
    return { verdict: "missed", detail: `${expect.missed} (${describeClosing(closing)})`, closing };
  }
  const after = record.lastWriteAt - closing.at;
  const note = lateWrite
    ? `; quiet for ${record.quietBeforeMs} ms, the client wrote again ${after} ms after that close, and had read ` +
      `${record.received} bytes before the reset`
    : "";
  return { verdict, detail: describeClosing(closing) + note, closing };
}
