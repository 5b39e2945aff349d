// kinds: the client behaviours the stress swarm mixes, each with its plan (drawn from the session's seed, so a
// session can be replayed) and its run (what it does on the wire and what it checks). Most use the swarmed server,
// whose idle timeout is long; the idle kinds use the "idle" target, a server with a short idle timeout, which the
// send-timeout kind reaches as "send" (it has a short send timeout too); the byte-limit kinds use "bytes", a server
// with a byte limit, and the age-limit kind "age", a server with an age limit. Each of those servers has one limit
// that can end each of its kinds' sessions, so every close has one expected reason. The kinds that end by a close
// the server starts say what its closing log line for the connection must show (SessionContext.expectClose); the
// orchestrator holds it against the log (stress/closes.ts). A new kind of client is one more entry in KINDS, with weight 0 by default
// until its target exists in the run; nothing else changes. Every kind runs over TLS or after a PROXY header too,
// when the server is started so (stress/session.ts's Transport), except the one whose client is a Python socket
// (plain TCP or a PROXY header only).

import { ByteStream, deriveSeed, Random, Verifier } from "../support/rng.ts";
import { Cut, type SessionContext, type StressConn, Violation, writeSizer } from "./session.ts";
import { runRcvbufPeer } from "./rcvbuf_peer.ts";

/** Limits every plan respects, from the stress command line. */
export interface PlanLimits {
  /** The largest byte-exact session. */
  maxSize: number;
  /** The idle timeout of the server the idle kinds use (they stay under it, or outlast it on purpose). */
  idleTimeoutMs: number;
  /** The send timeout (ms) of that server, which the send-timeout kind waits out. */
  sendTimeoutMs: number;
  /** The byte-limit server's `--max-bytes-per-connection`: what the byte-limit kinds must get back, exactly. */
  byteLimit: number;
  /** The age-limit server's `--max-connection-duration` (ms), which the age-limit kind outlasts. */
  ageLimitMs: number;
  /** Time any session may take on top of what its plan needs, before it counts as a hang. */
  baseDeadlineMs: number;
}

/** What every plan carries besides the kind's own fields. */
export interface SessionPlan {
  /** The session number: with the seed, all that is needed to replay it. */
  n: number;
  kind: string;
  /** Seed of the bytes the session sends. */
  dataSeed: number;
  /** After this long the session is a hang. */
  deadlineMs: number;
  /** The kind's own fields (sizes, pauses, ...), as JSON so a replay can print them. */
  [field: string]: unknown;
}

/** One kind of client. */
export interface SessionKind<P> {
  /** One line for the summary and the help. */
  description: string;
  /** Its share of sessions unless `--weights` says otherwise. */
  defaultWeight: number;
  /** The target it connects to (see SessionEnv.targets). */
  target: string;
  /** Draws the kind's plan. Must use only `rng` (and `limits`), so a replay draws the same. */
  plan(rng: Random, limits: PlanLimits): P;
  /** Time the plan itself needs (waits, bytes at a slow pace), added to the base deadline. */
  budgetMs(plan: P, limits: PlanLimits): number;
  /** Runs the session; returns when it ended as planned, throws how it did not. */
  run(plan: P & SessionPlan, ctx: SessionContext): Promise<void>;
}

const KiB = 1024;
const MiB = 1024 * 1024;
/** Timer and clock grain allowed when a duration is compared with the idle timeout. */
export const CLOCK_GRAIN_MS = 5;
/** The slowest pace a healthy session may have on a very busy machine, for deadlines: 256 KiB/s. */
export const SLOW_BYTES_PER_MS = (256 * KiB) / 1000;

/** A session size from 0 to `max`: mostly small, some megabytes, a few up to the maximum (64 MiB by default). */
function sessionSize(rng: Random, max: number): number {
  const r = rng.float();
  const size = r < 0.08
    ? 0
    : r < 0.55
    ? rng.logInt(1, 64 * KiB)
    : r < 0.9
    ? rng.logInt(64 * KiB, 4 * MiB)
    : r < 0.98
    ? rng.logInt(4 * MiB, max)
    : max;
  return Math.min(size, max);
}

/** Write sizes drawn from their own seed, so they do not depend on how reads interleave. */
interface Writes {
  writeSeed: number;
  writeLo: number;
  writeHi: number;
}

function drawWrites(rng: Random, total: number): Writes {
  const { lo, hi } = writeSizer(rng, total);
  return { writeSeed: rng.next32(), writeLo: lo, writeHi: hi };
}

function writeSizes(plan: Writes): () => number {
  const rng = new Random(plan.writeSeed);
  return () => rng.logInt(plan.writeLo, plan.writeHi);
}

/** A read buffer size: from a few bytes (many small reads) to 256 KiB, never more than ~4000 reads per session. */
function readBuffer(rng: Random, total: number): number {
  return rng.logInt(Math.max(1, Math.ceil(total / 4096)), 256 * KiB);
}

/**
 * Writes until `total` bytes are sent or the server stops taking them (no progress for `stallMs`: its reads have
 * stopped because its writes to us are blocked). Returns whether everything was sent; the write left pending on a
 * stall fails harmlessly once the caller closes the connection.
 */
async function writeUntilStalledOrDone(
  ctx: SessionContext,
  conn: StressConn,
  stream: ByteStream,
  total: number,
  plan: Writes,
  stallMs: number,
): Promise<{ done: boolean; writing: Promise<void> }> {
  let sent = 0;
  let done = false;
  let failure: unknown;
  const writing = ctx.send(conn, stream, total, writeSizes(plan), (s) => sent = s)
    .then(() => void (done = true), (error) => void (failure = error));
  let lastSent = -1;
  let lastProgress = performance.now();
  // Bounded by the session's deadline: ctx.sleep throws once it passes.
  while (!done && failure === undefined) {
    await ctx.sleep(25);
    if (sent !== lastSent) {
      lastSent = sent;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress >= stallMs) {
      break;
    }
  }
  if (failure !== undefined) throw failure;
  return { done, writing };
}

type End = "half-close" | "keep";

/** What the byte-limit kinds plan: the limit, how far past it they send, how they write and read, how they end. */
type ByteLimitPlan = Writes & { limit: number; extra: number; readBuffer: number; end: End };

/** What the age-limit kind plans. */
interface AgePlan {
  limitMs: number;
  /**
   * Echoing a trickle until the close; silent after one echo; reading only after the limit; or sending fast
   * without reading (so the server's echo to it and its own writes stall) and reading only after the limit.
   */
  variant: "trickle" | "silent" | "late" | "busy";
  /** Bytes sent by the silent and late variants. */
  first: number;
  /** The trickle's and the busy sender's pace, most bytes per millisecond, and their longest pause between writes. */
  bytesPerMs: number;
  pauseMs: number;
  paceSeed: number;
  /** How long past the limit the late and busy variants start reading. */
  lateMs: number;
  readBuffer: number;
}

function drawByteLimit(rng: Random, limits: PlanLimits, maxExtra: number): ByteLimitPlan {
  // Some send exactly the limit: the server must still close (it has echoed all it may), not wait for more.
  const extra = rng.chance(0.1) ? 0 : rng.logInt(1, maxExtra);
  return {
    limit: limits.byteLimit,
    extra,
    ...drawWrites(rng, limits.byteLimit + extra),
    readBuffer: readBuffer(rng, limits.byteLimit),
    end: rng.chance(0.5) ? "half-close" : "keep",
  };
}

/** Sends the limit and what the plan adds past it (the server discards that), then half-closes if planned. */
async function sendPastTheLimit(
  ctx: SessionContext,
  conn: StressConn,
  plan: ByteLimitPlan & { dataSeed: number },
): Promise<void> {
  await ctx.send(conn, new ByteStream(plan.dataSeed), plan.limit + plan.extra, writeSizes(plan));
  if (plan.end === "half-close") await ctx.shutdown(conn);
}

/** Exactly the byte limit must have come back before the end of stream (more was a Violation already). */
function checkByteLimit(plan: ByteLimitPlan, received: number): void {
  if (received !== plan.limit) {
    throw new Cut(`end of stream after ${received} of the ${plan.limit} bytes of the byte limit`);
  }
}

function kind<P>(definition: SessionKind<P>): SessionKind<Record<string, unknown>> {
  return definition as unknown as SessionKind<Record<string, unknown>>;
}

/**
 * The kinds, in a fixed order (a seed's picks depend on it: append new kinds at the end).
 */
export const KINDS: Record<string, SessionKind<Record<string, unknown>>> = {
  "exact": kind<Writes & { size: number; readBuffer: number; end: "close" | "half-close" }>({
    description: "random size (0 to 64 MiB) and write sizes, reading while writing; every byte checked",
    defaultWeight: 30,
    target: "echo",
    plan(rng, limits) {
      const size = sessionSize(rng, limits.maxSize);
      return {
        size,
        ...drawWrites(rng, size),
        readBuffer: readBuffer(rng, size),
        end: rng.chance(0.5) ? "half-close" : "close",
      };
    },
    budgetMs: (plan) => plan.size / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      const verifier = new Verifier(plan.dataSeed);
      await Promise.all([
        ctx.send(conn, new ByteStream(plan.dataSeed), plan.size, writeSizes(plan)),
        ctx.receive(conn, verifier, plan.size, { bufferSize: plan.readBuffer, thenEnd: false }),
      ]);
      if (plan.end === "half-close") {
        await ctx.shutdown(conn);
        await ctx.receive(conn, verifier, 0, { bufferSize: 1024, thenEnd: true });
      }
      ctx.close(conn);
    },
  }),

  "half-close": kind<Writes & { size: number; readBuffer: number; readDelayMs: number }>({
    description: "writes everything, half-closes with the echo still in flight, then reads to the end",
    defaultWeight: 15,
    target: "echo",
    plan(rng, limits) {
      const size = sessionSize(rng, limits.maxSize);
      return { size, ...drawWrites(rng, size), readBuffer: readBuffer(rng, size), readDelayMs: rng.int(0, 500) };
    },
    budgetMs: (plan) => plan.readDelayMs + plan.size / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      const verifier = new Verifier(plan.dataSeed);
      await Promise.all([
        (async () => {
          await ctx.send(conn, new ByteStream(plan.dataSeed), plan.size, writeSizes(plan));
          await ctx.shutdown(conn);
        })(),
        (async () => {
          await ctx.sleep(plan.readDelayMs);
          await ctx.receive(conn, verifier, plan.size, { bufferSize: plan.readBuffer, thenEnd: true });
        })(),
      ]);
      ctx.close(conn);
    },
  }),

  "reset-reading": kind<Writes & { size: number; prefix: number; pauseMs: number; readBuffer: number }>({
    description: "sends up to 4 MiB, reads part of the echo, then closes with echo unread (a reset)",
    defaultWeight: 10,
    target: "echo",
    plan(rng) {
      const size = rng.logInt(1, 4 * MiB);
      return {
        size,
        prefix: rng.int(0, size - 1),
        pauseMs: rng.int(0, 50),
        ...drawWrites(rng, size),
        readBuffer: readBuffer(rng, size),
      };
    },
    budgetMs: (plan) => plan.pauseMs + plan.size / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      let closed = false;
      const writing = ctx.send(conn, new ByteStream(plan.dataSeed), plan.size, writeSizes(plan)).catch((error) => {
        if (!closed) throw error;
      });
      await Promise.all([
        writing,
        (async () => {
          const verifier = new Verifier(plan.dataSeed);
          await ctx.receive(conn, verifier, plan.prefix, { bufferSize: plan.readBuffer, thenEnd: false });
          // The rest of the echo arrives and stays unread: closing now makes the kernel send a reset.
          await ctx.sleep(plan.pauseMs);
          closed = true;
          ctx.close(conn);
        })(),
      ]);
    },
  }),

  "reset-writing": kind<Writes & { target: number; stallMs: number }>({
    description: "writes without reading until the server blocks writing (or 1-48 MiB are sent), then resets",
    defaultWeight: 8,
    target: "echo",
    plan(rng) {
      const target = rng.logInt(MiB, 48 * MiB);
      return { target, stallMs: rng.int(100, 400), ...drawWrites(rng, target) };
    },
    budgetMs: (plan) => plan.stallMs + plan.target / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      const { writing } = await writeUntilStalledOrDone(
        ctx,
        conn,
        new ByteStream(plan.dataSeed),
        plan.target,
        plan,
        plan.stallMs,
      );
      ctx.close(conn); // unread echo in our receive buffer: a reset, while the server is blocked in write()
      await writing;
    },
  }),

  "never-reads": kind<Writes & { size: number; holdMs: number; end: "close" | "half-close" }>({
    description: "sends up to 32 MiB and never reads; holds the stalled connection for a while, then leaves",
    defaultWeight: 8,
    target: "echo",
    plan(rng) {
      const size = rng.chance(0.1) ? 0 : rng.logInt(1, 32 * MiB);
      // Well under the swarmed server's idle timeout: this kind checks memory under stalled clients, not timeouts.
      const holdMs = rng.int(200, 4000);
      return { size, holdMs, end: rng.chance(0.5) ? "half-close" : "close", ...drawWrites(rng, size) };
    },
    budgetMs: (plan) => plan.holdMs + 500 + plan.size / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      const { done, writing } = await writeUntilStalledOrDone(
        ctx,
        conn,
        new ByteStream(plan.dataSeed),
        plan.size,
        plan,
        300,
      );
      if (done && plan.end === "half-close") await ctx.shutdown(conn);
      ctx.doing = `holding a connection that does not read (${done ? "all sent" : "stalled"})`;
      await ctx.sleep(plan.holdMs);
      ctx.close(conn);
      await writing;
    },
  }),

  "idle": kind<{ first: number; second: number; holdMs: number }>({
    description: "echoes a little, stays silent (under the idle timeout), echoes again: still served",
    defaultWeight: 10,
    target: "idle",
    plan(rng, limits) {
      return {
        first: rng.logInt(1, 4096),
        second: rng.logInt(1, 4096),
        // A fifth of the timeout at most: a client process starved by a busy machine may send late by seconds.
        holdMs: rng.int(50, Math.max(50, Math.min(5000, Math.floor(limits.idleTimeoutMs * 0.2)))),
      };
    },
    budgetMs: (plan) => plan.holdMs,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      // The client ends it: the server must have seen its end of stream, not closed it for idleness.
      ctx.expectClose(conn, { reasons: ["closed by peer"], bytes: plan.first + plan.second });
      const stream = new ByteStream(plan.dataSeed);
      const verifier = new Verifier(plan.dataSeed);
      const once = () => 1 << 30;
      await ctx.send(conn, stream, plan.first, once);
      await ctx.receive(conn, verifier, plan.first, { bufferSize: 4096, thenEnd: false });
      ctx.doing = `idling for ${plan.holdMs} ms`;
      const quietFrom = performance.now();
      await ctx.sleep(plan.holdMs);
      // How long this client really stayed silent: on a starved machine its timer can fire seconds late, which
      // tells a late client from a server that closed early.
      const silentMs = Math.round(performance.now() - quietFrom);
      try {
        await ctx.send(conn, stream, plan.second, once);
        await ctx.receive(conn, verifier, plan.second, { bufferSize: 4096, thenEnd: false });
      } catch (error) {
        if (!(error instanceof Cut)) throw error;
        throw new Cut(`${error.message}, the client having been silent ${silentMs} ms (planned ${plan.holdMs})`);
      }
      await ctx.shutdown(conn);
      await ctx.receive(conn, verifier, 0, { bufferSize: 1024, thenEnd: true });
      ctx.close(conn);
    },
  }),

  "idle-timeout": kind<{ size: number }>({
    description:
      "echoes a little, then stays silent until the server's idle timeout closes it (not before), with the end of " +
      "stream behind exactly what was echoed",
    defaultWeight: 3,
    target: "idle",
    plan(rng) {
      return { size: rng.logInt(1, 1024) };
    },
    budgetMs: (_plan, limits) => limits.idleTimeoutMs * 1.5 + 2000,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      ctx.expectClose(conn, { reasons: ["idle timeout"], bytes: plan.size, minDurationMs: ctx.env.idleTimeoutMs });
      const verifier = new Verifier(plan.dataSeed);
      // Timed from before the last byte is sent: the server's last activity (echoing it) comes later, and its
      // close earlier than we see it, so load can only lengthen what we measure, never shorten it.
      const since = performance.now();
      await ctx.send(conn, new ByteStream(plan.dataSeed), plan.size, () => plan.size);
      await ctx.receive(conn, verifier, plan.size, { bufferSize: 1024, thenEnd: false });
      ctx.doing = "waiting for the server's idle timeout";
      await ctx.receive(conn, verifier, 0, { bufferSize: 1024, thenEnd: true });
      const silentMs = performance.now() - since;
      if (silentMs < ctx.env.idleTimeoutMs - CLOCK_GRAIN_MS) {
        const what = `closed after ${Math.round(silentMs)} ms of silence, before the idle timeout`;
        // While the server is being stopped, an early close is the stop's (the orchestrator checks its timing).
        throw ctx.env.stopMode ? new Cut(what) : new Violation(what);
      }
      ctx.close(conn);
    },
  }),

  "churn": kind<{ connections: Array<{ bytes: number; end: "close" | "half-close" | "echo" }> }>({
    description: "connect-and-close churn: 1-20 connections, each closed at once (some after a few bytes)",
    defaultWeight: 16,
    target: "echo",
    plan(rng) {
      const ends = ["close", "half-close", "echo"] as const;
      return {
        connections: Array.from({ length: rng.int(1, 20) }, () => ({
          bytes: rng.chance(0.5) ? 0 : rng.int(1, 100),
          end: ends[rng.int(0, 2)],
        })),
      };
    },
    budgetMs: (plan) => plan.connections.length * 1000,
    async run(plan, ctx) {
      for (const [i, one] of plan.connections.entries()) {
        const conn = await ctx.connect(this.target);
        const seed = deriveSeed(plan.dataSeed, i);
        if (one.bytes > 0) await ctx.send(conn, new ByteStream(seed), one.bytes, () => one.bytes);
        if (one.end === "echo") {
          await ctx.receive(conn, new Verifier(seed), one.bytes, { bufferSize: 128, thenEnd: false });
        } else if (one.end === "half-close") {
          await ctx.shutdown(conn);
        }
        ctx.close(conn);
      }
    },
  }),

  "byte-limit-late": kind<ByteLimitPlan & { readDelayMs: number }>({
    description: "sends past the byte-limit server's limit without reading, starts reading 0.2-1.5 s later: " +
      "exactly the limit comes back, then the end of stream",
    defaultWeight: 2,
    target: "bytes",
    plan(rng, limits) {
      return { ...drawByteLimit(rng, limits, 2 * MiB), readDelayMs: rng.int(200, 1500) };
    },
    budgetMs: (plan) => plan.readDelayMs + (plan.limit + plan.extra) / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      ctx.expectClose(conn, { reasons: ["byte limit"], bytes: plan.limit });
      const [, received] = await Promise.all([
        sendPastTheLimit(ctx, conn, plan),
        (async () => {
          await ctx.sleep(plan.readDelayMs);
          return await ctx.receiveToEnd(conn, new Verifier(plan.dataSeed), plan.limit, plan.readBuffer);
        })(),
      ]);
      checkByteLimit(plan, received);
      ctx.close(conn);
    },
  }),

  "byte-limit-rcvbuf": kind<ByteLimitPlan & { rcvbuf: number; readAfterMs: number; readSize: number }>({
    description: "sends past the byte limit from a Python socket with a 2-16 KiB receive buffer (Deno cannot set " +
      "one), reading from 0-1 s on: exactly the limit, then the end of stream (needs python3; not over TLS)",
    defaultWeight: 1,
    target: "bytes",
    plan(rng, limits) {
      return {
        ...drawByteLimit(rng, limits, MiB),
        rcvbuf: rng.logInt(2 * KiB, 16 * KiB),
        readAfterMs: rng.int(0, 1000),
        readSize: rng.logInt(512, 8 * KiB),
      };
    },
    budgetMs: (plan) => plan.readAfterMs + 1000 + (plan.limit + plan.extra) / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      if (ctx.env.transport?.tlsCaCert) throw new Error("byte-limit-rcvbuf's Python client speaks no TLS");
      const data = new Uint8Array(plan.limit + plan.extra);
      new ByteStream(plan.dataSeed).fill(data);
      const verifier = new Verifier(plan.dataSeed);
      let received = 0;
      const record = await runRcvbufPeer(ctx, this.target, data, {
        rcvbuf: plan.rcvbuf,
        readAfterMs: plan.readAfterMs,
        readSize: plan.readSize,
        halfClose: plan.end === "half-close",
        timeoutMs: Math.max(5000, plan.deadlineMs),
        expect: { reasons: ["byte limit"], bytes: plan.limit },
      }, (chunk) => {
        if (received + chunk.length > plan.limit) {
          throw new Violation(`${received + chunk.length} bytes came back, more than the byte limit of ${plan.limit}`);
        }
        ctx.verify(verifier, chunk);
        received += chunk.length;
      });
      if (record.end === "reset") throw new Cut(`reset after ${received} bytes (Python client)`);
      if (record.end !== "eof") throw new Error(`the Python client ended with ${record.end} after ${received} bytes`);
      checkByteLimit(plan, received);
    },
  }),

  "byte-limit-fast": kind<ByteLimitPlan>({
    description: "sends past the byte limit while reading as fast as it can: exactly the limit, then the end of " +
      "stream",
    defaultWeight: 2,
    target: "bytes",
    plan(rng, limits) {
      const plan = drawByteLimit(rng, limits, 4 * MiB);
      return { ...plan, readBuffer: rng.logInt(64 * KiB, 256 * KiB) };
    },
    budgetMs: (plan) => (plan.limit + plan.extra) / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      ctx.expectClose(conn, { reasons: ["byte limit"], bytes: plan.limit });
      const [, received] = await Promise.all([
        sendPastTheLimit(ctx, conn, plan),
        ctx.receiveToEnd(conn, new Verifier(plan.dataSeed), plan.limit, plan.readBuffer),
      ]);
      checkByteLimit(plan, received);
      ctx.close(conn);
    },
  }),

  "age-limit": kind<AgePlan>({
    description: "outlasts the age-limit server's connection age limit: echoing a trickle; silent; reading only " +
      "after the limit; or sending 0.5-4 MB/s without reading, stalled by its own echo, and reading only after " +
      "the limit: the server closes it at the limit, not before, behind exactly what it echoed",
    defaultWeight: 1.5,
    target: "age",
    plan(rng, limits) {
      const variant = (["trickle", "silent", "late", "busy"] as const)[rng.int(0, 3)];
      return {
        limitMs: limits.ageLimitMs,
        variant,
        first: rng.logInt(1, 64 * KiB),
        pauseMs: rng.int(20, 250),
        bytesPerMs: variant === "busy" ? rng.logInt(500, 4000) : rng.logInt(1, 100),
        paceSeed: rng.next32(),
        lateMs: rng.int(0, 1500),
        readBuffer: rng.logInt(16, 256 * KiB),
      };
    },
    // What the busy variant writes before its echo stalls it, and after the server gives up, is some 16 MiB at most.
    budgetMs: (plan) =>
      plan.limitMs + plan.lateMs + 2000 + Math.min(16 * MiB, plan.bytesPerMs * plan.limitMs) / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const started = performance.now();
      const conn = await ctx.connect(this.target);
      ctx.expectClose(conn, { reasons: ["duration limit"], minDurationMs: plan.limitMs });
      const stream = new ByteStream(plan.dataSeed);
      const verifier = new Verifier(plan.dataSeed);
      let sent = 0;
      let received = 0;
      if (plan.variant === "trickle" || plan.variant === "busy") {
        // Writes at a pace until it reads the end of stream (trickle, reading all along) or until it begins to
        // read, past the limit (busy: its unread echo stalls the server's writes, and so its own).
        let stop = false;
        const pace = new Random(plan.paceSeed);
        const writing = (async () => {
          // Bounded by the session's deadline (ctx.sleep throws once it passes).
          while (!stop) {
            const pauseMs = pace.int(1, plan.pauseMs);
            await ctx.sleep(pauseMs);
            if (stop) return;
            // The trickle's sizes are spread; the busy sender keeps its pace.
            const most = Math.max(1, Math.floor(plan.bytesPerMs * pauseMs));
            const size = plan.variant === "busy" ? most : pace.logInt(1, most);
            await ctx.send(conn, stream, size, () => size);
            sent += size;
          }
        })();
        const reading = (async () => {
          if (plan.variant === "busy") {
            ctx.doing = `sending without reading until past the age limit (${plan.limitMs + plan.lateMs} ms)`;
            await ctx.sleep(Math.max(0, plan.limitMs + plan.lateMs - (performance.now() - started)));
            stop = true;
          }
          try {
            return await ctx.receiveToEnd(conn, verifier, Number.MAX_SAFE_INTEGER, plan.readBuffer);
          } finally {
            stop = true;
          }
        })();
        [received] = await Promise.all([reading, writing]);
      } else {
        await ctx.send(conn, stream, plan.first, () => plan.first);
        sent = plan.first;
        if (plan.variant === "silent") {
          await ctx.receive(conn, verifier, plan.first, { bufferSize: plan.readBuffer, thenEnd: false });
          received = plan.first;
        } else {
          ctx.doing = `waiting past the age limit to read (${plan.limitMs + plan.lateMs} ms)`;
          await ctx.sleep(plan.limitMs + plan.lateMs);
        }
        received += await ctx.receiveToEnd(conn, verifier, plan.first - received, plan.readBuffer);
      }
      const ageMs = performance.now() - started;
      if (received > sent) throw new Violation(`${received} bytes came back of the ${sent} sent`);
      // Timed from before connecting, so load can only lengthen it. The late readers see the close late anyway.
      if ((plan.variant === "trickle" || plan.variant === "silent") && ageMs < plan.limitMs - CLOCK_GRAIN_MS) {
        throw new Violation(`closed after ${Math.round(ageMs)} ms, before the age limit of ${plan.limitMs} ms`);
      }
      ctx.close(conn);
    },
  }),

  "send-timeout": kind<Writes & { timeoutMs: number; most: number; stallMs: number; readBuffer: number; end: End }>({
    description: "sends without reading until its echo, then its own writes, stall, and a write waits until the " +
      "server's send timeout gives up and discards what it is sent; then reads: exactly what the server counted, " +
      "then the end of stream",
    defaultWeight: 1.5,
    target: "send",
    plan(rng, limits) {
      // More than the kernel's buffers between the two can hold (they grow up to some 40 MiB here; 7-13 measured).
      const most = 64 * MiB;
      return {
        timeoutMs: limits.sendTimeoutMs,
        most,
        // The server gives up a timeout after its echo blocked; our writes block later, once the kernel's buffers
        // on the way to it have filled (under load, that can take a second).
        stallMs: Math.floor(limits.sendTimeoutMs / 2),
        ...drawWrites(rng, most),
        readBuffer: rng.logInt(4 * KiB, 256 * KiB),
        end: rng.chance(0.5) ? "half-close" : "keep",
      };
    },
    // The writes stall after 7 to some 40 MiB, and one waits out the send timeout; the rest is the reading.
    budgetMs: (plan) => plan.timeoutMs * 2 + (48 * MiB) / SLOW_BYTES_PER_MS,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
      ctx.expectClose(conn, { reasons: ["send timeout"] });
      const stream = new ByteStream(plan.dataSeed);
      const sizes = writeSizes(plan);
      // A write that waits stallMs while this process's own timers run on time was held up by the server: its echo
      // to us blocked, and the write completed once the server gave up and began to discard. (A write that only
      // looks slow because this process was starved is not taken for one: the timers were late too.)
      let lastTick = performance.now();
      let longestGap = 0;
      const probe = setInterval(() => {
        const now = performance.now();
        longestGap = Math.max(longestGap, now - lastTick);
        lastTick = now;
      }, 20);
      const stopProbe = ctx.adopt(() => clearInterval(probe));
      let sent = 0;
      let longestWrite = 0;
      try {
        while (sent < plan.most) {
          const size = Math.min(plan.most - sent, sizes());
          const before = performance.now();
          longestGap = 0;
          await ctx.send(conn, stream, size, () => size);
          sent += size;
          const took = performance.now() - before;
          longestWrite = Math.max(longestWrite, took);
          if (took >= plan.stallMs && Math.max(longestGap, performance.now() - lastTick) < plan.stallMs / 2) {
            break;
          }
        }
      } finally {
        clearInterval(probe);
        stopProbe();
      }
      // Without such a write (timers late throughout), all of `most` went: more than the buffers hold, so the server
      // had given up by the end; reading is as right now as it would have been then.
      const wroteAt = performance.now();
      if (plan.end === "half-close") await ctx.shutdown(conn);
      const readAt = performance.now();
      let received: number;
      try {
        received = await ctx.receiveToEnd(conn, new Verifier(plan.dataSeed), sent, plan.readBuffer);
      } catch (error) {
        // What the client did when, for a reset's triage: a starved client, or a server that closed too soon.
        if (!(error instanceof Cut)) throw error;
        const at = (t: number) => `${Math.round(t - wroteAt)} ms`;
        throw new Cut(
          `${error.message}; ${sent} bytes sent, the longest write ${Math.round(longestWrite)} ms, reading began ` +
            `${at(readAt)} after the last write and the reset came ${at(performance.now())} after it`,
        );
      }
      if (received === sent) {
        // The whole echo: the server had not given up. The write waited for a server slow to read (a busy machine),
        // not for a stalled echo; the server's line must say so: the end we sent (or, without it, idleness). After
        // all of `most` (more than the buffers hold) this cannot happen: the check then fails on the reason.
        ctx.expectClose(conn, {
          reasons: [plan.end === "half-close" ? "closed by peer" : "idle timeout"],
          missed: `a write waited ${Math.round(longestWrite)} ms, yet the server had not stalled: all ${sent} ` +
            "bytes came back",
        });
      }
      ctx.close(conn);
    },
  }),
};

/** The kinds' default weights, in KINDS order. */
export function defaultWeights(): Record<string, number> {
  return Object.fromEntries(Object.entries(KINDS).map(([name, k]) => [name, k.defaultWeight]));
}

/**
 * Reads `--weights exact=30,churn=0,...` on top of the defaults.
 *
 * @param text comma-separated name=weight pairs (weights are non-negative numbers)
 * @returns the full weight table
 * @throws {Error} naming the unknown kind or bad weight
 */
export function parseWeights(text: string): Record<string, number> {
  const weights = defaultWeights();
  for (const pair of text.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    const match = /^([a-z-]+)=(\d+(?:\.\d+)?)$/.exec(pair);
    if (!match) throw new Error(`"${pair}" is not name=weight (for example exact=30)`);
    if (!(match[1] in KINDS)) {
      throw new Error(`no session kind "${match[1]}" (kinds: ${Object.keys(KINDS).join(", ")})`);
    }
    weights[match[1]] = Number(match[2]);
  }
  if (Object.values(weights).every((w) => w === 0)) throw new Error("every weight is 0: nothing to run");
  return weights;
}

/**
 * Draws session `n` of the run with seed `seed`: its kind (by weight), its data seed and the kind's plan. Pure:
 * the same arguments always give the same plan, whichever client process runs it.
 *
 * @param seed the run's seed
 * @param n the session number
 * @param weights the kinds' weights
 * @param limits sizes and timeouts every plan respects
 * @returns the plan
 */
export function planSession(
  seed: number,
  n: number,
  weights: Record<string, number>,
  limits: PlanLimits,
): SessionPlan {
  const rng = new Random(deriveSeed(seed, n));
  const name = rng.pick(Object.keys(KINDS).map((k) => [k, weights[k] ?? 0] as const));
  const dataSeed = rng.next32();
  const detail = KINDS[name].plan(rng, limits);
  const deadlineMs = Math.round(limits.baseDeadlineMs + KINDS[name].budgetMs(detail, limits));
  return { ...detail, n, kind: name, dataSeed, deadlineMs };
}
