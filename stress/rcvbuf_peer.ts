// rcvbuf_peer: runs stress/rcvbuf_peer.py, the swarm's one client that is not a Deno socket (Deno cannot set a
// socket's receive buffer), for one session: hands it the bytes to send, passes what it reads back to the session
// as it comes, and returns what it reports, as the session's record of that connection.

import type { CloseExpectation, ConnRecord, SessionContext } from "./session.ts";

/** How the Python client behaves. */
export interface RcvbufPeerOptions {
  /** SO_RCVBUF, bytes (Linux doubles it, with a floor of about 2 KiB). */
  rcvbuf: number;
  /** How long it waits before its first read. */
  readAfterMs: number;
  /** Bytes per read. */
  readSize: number;
  /** Shut the write side down after sending. */
  halfClose: boolean;
  /** Bound on each of its waits, and on the whole run. */
  timeoutMs: number;
  /** What the server's closing line for the connection must say. */
  expect?: CloseExpectation;
}

const SCRIPT = new URL("./rcvbuf_peer.py", import.meta.url).pathname;

/** Whether `python3` runs here (the byte-limit-rcvbuf kind needs it). */
export async function havePython(): Promise<boolean> {
  try {
    const out = await new Deno.Command("python3", { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Runs the Python client against a target of the session: it sends `data`, reads the echo, and reports.
 *
 * @param ctx the session (its deadline ends the client; the connection is recorded in it)
 * @param target the name of the port to connect to
 * @param data what to send
 * @param options the client's habits
 * @param onChunk given each piece read back, in order (it may throw to fail the session)
 * @returns the connection's record
 * @throws {Error} when the client cannot be run or reports nothing
 */
export async function runRcvbufPeer(
  ctx: SessionContext,
  target: string,
  data: Uint8Array,
  options: RcvbufPeerOptions,
  onChunk: (chunk: Uint8Array) => void,
): Promise<ConnRecord> {
  const where = ctx.env.targets[target];
  if (!where) throw new Error(`no target "${target}" in this run`);
  ctx.doing = "running the Python client";
  const child = new Deno.Command("python3", {
    args: [
      SCRIPT,
      where.hostname,
      String(where.port),
      String(options.rcvbuf),
      String(options.readAfterMs / 1000),
      String(options.readSize),
      String(options.timeoutMs / 1000),
      options.halfClose ? "1" : "0",
      ctx.env.transport?.proxyHeader ? "1" : "0",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const release = ctx.adopt(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited already
    }
  });
  let failure: unknown;
  try {
    const feeding = (async () => {
      const writer = child.stdin.getWriter();
      try {
        await writer.write(data);
      } finally {
        await writer.close().catch(() => {});
      }
    })();
    const reading = (async () => {
      for await (const chunk of child.stdout) {
        if (failure !== undefined) continue;
        try {
          onChunk(chunk);
        } catch (error) {
          failure = error;
        }
      }
    })();
    const report = (async () => {
      let text = "";
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) text += chunk;
      return text;
    })();
    const [, , stderr, status] = await ctx.race(Promise.all([feeding, reading, report, child.status]));
    if (failure !== undefined) throw failure;
    const last = stderr.trim().split("\n").at(-1) ?? "";
    let parsed: {
      port: number;
      connect_at: number;
      end: string;
      received: number;
      last_write_at: number;
      send_error: string;
    };
    try {
      parsed = JSON.parse(last);
    } catch {
      throw new Error(`the Python client exited with ${status.code} and no report: ${stderr.slice(-500)}`);
    }
    const record: ConnRecord = {
      target,
      port: parsed.port,
      connectAt: parsed.connect_at,
      received: parsed.received,
      end: parsed.end === "eof" || parsed.end === "reset" ? parsed.end : undefined,
      lastWriteAt: parsed.last_write_at,
      quietBeforeMs: parsed.last_write_at === 0 ? 0 : parsed.last_write_at - parsed.connect_at,
      expect: options.expect,
    };
    ctx.addRecord(record);
    if (parsed.send_error === "") ctx.bytesSent += data.length;
    if (record.end === undefined) {
      throw new Error(`the Python client ended with "${parsed.end}" after ${parsed.received} bytes`);
    }
    return record;
  } finally {
    release();
  }
}
