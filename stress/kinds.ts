// kinds: the client behaviours the stress swarm mixes, each with its plan (drawn from the session's seed, so a
// session can be replayed) and its run (what it does on the wire and what it checks). The idle kinds use the
// "idle" target, a server with a short idle timeout; the others the swarmed server, whose idle timeout is long.
// A new kind of client is one more entry in KINDS, with weight 0 by default until its target exists in the run;
// nothing else changes. Every kind runs over TLS or after a PROXY header too, when the server is started so
// (stress/session.ts's Transport).

import { ByteStream, deriveSeed, Random, Verifier } from "../support/rng.ts";
import { Cut, type SessionContext, type StressConn, Violation, writeSizer } from "./session.ts";

/** Limits every plan respects, from the stress command line. */
export interface PlanLimits {
  /** The largest byte-exact session. */
  maxSize: number;
  /** The idle timeout of the server the idle kinds use (they stay under it, or outlast it on purpose). */
  idleTimeoutMs: number;
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
const CLOCK_GRAIN_MS = 5;
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
      const stream = new ByteStream(plan.dataSeed);
      const verifier = new Verifier(plan.dataSeed);
      const once = () => 1 << 30;
      await ctx.send(conn, stream, plan.first, once);
      await ctx.receive(conn, verifier, plan.first, { bufferSize: 4096, thenEnd: false });
      ctx.doing = `idling for ${plan.holdMs} ms`;
      await ctx.sleep(plan.holdMs);
      await ctx.send(conn, stream, plan.second, once);
      await ctx.receive(conn, verifier, plan.second, { bufferSize: 4096, thenEnd: false });
      await ctx.shutdown(conn);
      await ctx.receive(conn, verifier, 0, { bufferSize: 1024, thenEnd: true });
      ctx.close(conn);
    },
  }),

  "idle-timeout": kind<{ size: number }>({
    description: "echoes a little, then stays silent until the server's idle timeout closes it (not before)",
    defaultWeight: 3,
    target: "idle",
    plan(rng) {
      return { size: rng.logInt(1, 1024) };
    },
    budgetMs: (_plan, limits) => limits.idleTimeoutMs * 1.5 + 2000,
    async run(plan, ctx) {
      const conn = await ctx.connect(this.target);
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
