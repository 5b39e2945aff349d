// faults/copy: the impaired echo of one connection, used in place of lib/echo.ts's copy only for a connection a
// profile applies to (the plain copy is never touched). A reader moves the client's chunks into a queue (dropping
// some: loss; stamping each with the time it may leave: latency, order kept), and a writer echoes them (when due;
// in segments: slicer; at a rate: bandwidth), stopping at the byte and time triggers of stall, reset and close.
// Reads never go past the next byte trigger, so a trigger meets the exact byte count and whatever the client sent
// beyond it stays unread in the kernel. The connection's own close (lib/connection.ts) ends it as it ends the plain
// copy; a profile can be switched while it runs (lib/faults/runtime.ts), from the next chunk on.

import type { CoarseClock } from "../clock.ts";
import { MIN_BUFFER, nextBufferSize, type Phase } from "../echo.ts";
import type { Impairment, ImpairmentKind, Profile, Trigger } from "./profile.ts";
import { LossChain, mix32, Random } from "./random.ts";

/** The reasons an impairment gives when it ends a connection (lib/connection.ts's CloseReason has them). */
export type FaultCloseReason = "fault close" | "fault reset" | "fault refuse";

/** What the impaired copy needs of a connection: lib/connection.ts's Connection has all of it. */
export interface ImpairedConnection {
  /** The socket (Deno.TcpConn or Deno.TlsConn): the copy reads, writes, and sets TCP_NODELAY on it. */
  readonly conn: {
    /** Reads into `buffer`: the bytes read, or null at the peer's end of stream. */
    read(buffer: Uint8Array): Promise<number | null>;
    /** Writes from `data`: the bytes written (perhaps fewer than given). */
    write(data: Uint8Array): Promise<number>;
    /** Sets TCP_NODELAY: the copy turns Nagle's algorithm (RFC 896) off, so each write (a slicer segment) leaves. */
    setNoDelay(noDelay?: boolean): void;
  };
  /** Bytes echoed so far; the copy adds what it writes (lib/echo.ts's CopyProgress.bytes). */
  bytes: number;
  /** {@link clock}`.now` (ms) at the last byte moved, or when a wait of the copy's own ended (--send-timeout). */
  lastActive: number;
  /** `--max-bytes-per-connection`: the copy echoes this many bytes at most, then returns (Infinity = no limit). */
  byteLimit: number;
  /** Kept current by the copy: reading (waiting for the peer, or stalled) or writing (something held to echo). */
  phase: Phase;
  /** Set once the connection is closing, with why; the copy then stops at its next step. */
  closing: string | undefined;
  /** Set by the copy when the peer ended its stream (a close or a half-close). */
  peerEnded: boolean;
  /** The coarse clock of the per-byte path (lib/clock.ts). */
  readonly clock: CoarseClock;
  /** Called when the server begins to close the connection: the copy's timers wake up. */
  onClosing: (() => void) | undefined;
  /** A lingering close: FIN behind the last echoed byte, input discarded (lib/connection.ts). */
  end(reason: FaultCloseReason): void;
  /** Closes the socket now. */
  abort(): void;
}

/** What the copy counts, per impairment of one profile (lib/faults/metrics.ts exposes it). */
export interface ImpairmentCounters {
  /** Connections it applied to (drawn by its probability). */
  connections: number;
  /** Bytes it acted on: delayed (latency), paced (bandwidth), sliced (slicer), dropped (loss). */
  bytes: number;
  /** Times it fired: chunks delayed or dropped, segments sliced, stalls, resets, closes, refusals. */
  events: number;
}

/** What the copy counts for one profile. */
export interface ProfileCounters {
  /** Connections that came under the profile (at accept, or switched to it). */
  connections: number;
  /** Bytes echoed under it. */
  echoedBytes: number;
  /** The counters of each of its impairments, by kind. */
  impairments: Partial<Record<ImpairmentKind, ImpairmentCounters>>;
}

/** Fresh counters for a profile. */
export function emptyProfileCounters(): ProfileCounters {
  return { connections: 0, echoedBytes: 0, impairments: {} };
}

/** The most the copy holds read and not yet echoed (a delayed or paced echo): past it, the reader waits. */
export const HELD_MAX = 1024 * 1024;
/** The largest read. */
const READ_MAX = 64 * 1024;

/** A profile as applied to one connection: the impairments its probabilities drew, by kind. */
type Drawn = { [K in ImpairmentKind]?: Extract<Impairment, { kind: K }> };

/** A chunk read and kept, waiting for its time to be echoed. */
interface Held {
  data: Uint8Array;
  offset: number;
  /** performance.now() time before which it may not leave. */
  due: number;
}

/** How one connection is doing, as the control API lists it. */
export interface ImpairedState {
  /** The profile it runs under, or null (switched to none: a faithful echo). */
  profile: string | null;
  /** The generation of the table that profile came from. */
  generation: number;
  /** The impairments drawn for this connection. */
  impairments: ImpairmentKind[];
  /** Echoing (reading and writing), stalled (a stall impairment holds it), or ended (the copy returned). */
  state: "echoing" | "stalled" | "ended";
  /** Bytes dropped by loss. */
  droppedBytes: number;
  /** Bytes read and not yet echoed. */
  heldBytes: number;
}

/** Never resolves: a wait with no deadline. */
const FOREVER = Infinity;

/**
 * The impaired echo of one connection. Create it when a profile applies, then `run()` it as the copy.
 *
 * @example
 * ```ts
 * import { parseProfiles } from "./profile.ts";
 * import { streamSeed } from "./random.ts";
 *
 * declare const connection: ImpairedConnection; // lib/connection.ts's Connection, once admitted
 * const [profile] = parseProfiles("slow: latency 200ms jitter 50ms, bandwidth 1Mbit");
 * const counters = new Map<string, ProfileCounters>();
 * const countersOf = (name: string) => {
 *   if (!counters.has(name)) counters.set(name, emptyProfileCounters());
 *   return counters.get(name)!;
 * };
 * // --fault-seed 42, no workers (worker 0), the first connection under a profile
 * const echo = new ImpairedEcho(connection, streamSeed(42, 0, 1), countersOf);
 * echo.apply(profile, 1); // the first table is generation 1
 * await echo.run(); // returns as lib/echo.ts's copies do; throws what the socket throws
 * ```
 */
export class ImpairedEcho {
  readonly #c: ImpairedConnection;
  /** Three streams from the connection's seed, so that what one draws does not shift the others: which
   * impairments apply (at each apply), each chunk's fate and delay (in read order), each segment's size. */
  readonly #draws: Random;
  readonly #chunks: Random;
  readonly #slices: Random;
  readonly #countersOf: (profile: string) => ProfileCounters;
  #profile: Profile | undefined;
  #generation = 0;
  #drawn: Drawn = {};
  #counters: ProfileCounters | undefined;
  #loss: LossChain | undefined;
  /** Bytes echoed when the profile was applied, and when: byte and time triggers count from there. */
  #echoedAtApply = 0;
  #appliedAt = 0;
  /** One-shot impairments already fired under the current profile. */
  #fired = new Set<ImpairmentKind>();
  /** The time triggers' timers. */
  #timers: ReturnType<typeof setTimeout>[] = [];
  /** While stalled: when the stall ends (Infinity: never), and what then. */
  #stallUntil: number | undefined;
  #stallThen: "resume" | "close" | "reset" = "resume";
  #queue: Held[] = [];
  #held = 0;
  #lastDue = 0;
  #tokens = 0;
  #tokensAt = 0;
  /** performance.now() time before which the next slicer segment may not leave. */
  #nextSegmentAt = 0;
  #echoed = 0;
  #dropped = 0;
  #readerDone = false;
  #readerError: unknown;
  #hasReaderError = false;
  #ended = false;
  #wake = Promise.withResolvers<void>();
  /** The first bytes, read before the copy began (those that came with a PROXY header). */
  #first: Uint8Array | undefined;

  /**
   * An impaired echo for a connection, under no profile until {@link apply}.
   *
   * @param connection the connection to echo
   * @param seed its seed (lib/faults/random.ts's streamSeed)
   * @param countersOf the counters of a profile, by name
   * @param first bytes already read that the echo begins with (after a PROXY header), if any
   */
  constructor(
    connection: ImpairedConnection,
    seed: number,
    countersOf: (profile: string) => ProfileCounters,
    first?: Uint8Array,
  ) {
    this.#c = connection;
    this.#draws = new Random(mix32(seed ^ 0x1));
    this.#chunks = new Random(mix32(seed ^ 0x2));
    this.#slices = new Random(mix32(seed ^ 0x3));
    this.#countersOf = countersOf;
    if (first && first.length > 0) this.#first = first;
  }

  /** The profile it runs under now, or undefined (a faithful echo, switched off its profile). */
  get profile(): Profile | undefined {
    return this.#profile;
  }

  /** The generation of the table it was last applied from. */
  get generation(): number {
    return this.#generation;
  }

  /** True once its echo has ended. */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Applies a profile: draws which of its impairments apply (each by its probability) and starts counting its
   * triggers from now. Called once before {@link run}, and again to switch a running connection; chunks already
   * read keep the time they were given.
   *
   * @param profile the profile, or undefined for none (the echo goes on faithfully, and can be switched again)
   * @param generation the table's generation it comes from
   */
  apply(profile: Profile | undefined, generation: number): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers = [];
    this.#profile = profile;
    this.#generation = generation;
    this.#fired.clear();
    this.#stallUntil = undefined;
    this.#echoedAtApply = this.#echoed;
    this.#appliedAt = performance.now();
    this.#drawn = {};
    this.#loss = undefined;
    this.#counters = profile ? this.#countersOf(profile.name) : undefined;
    if (this.#counters) this.#counters.connections++;
    for (const impairment of profile?.impairments ?? []) {
      if (!this.#draws.chance(impairment.probability)) continue;
      (this.#drawn as Record<string, Impairment>)[impairment.kind] = impairment;
      this.#count(impairment.kind).connections++;
    }
    const bandwidth = this.#drawn.bandwidth;
    this.#tokens = bandwidth ? bandwidth.burstBytes : 0;
    this.#tokensAt = this.#appliedAt;
    if (this.#drawn.loss) this.#loss = new LossChain(this.#drawn.loss.model);
    for (const kind of ["stall", "reset", "close"] as const) {
      const after = this.#drawn[kind]?.after;
      if (after && "ms" in after && after.ms > 0) {
        this.#timers.push(setTimeout(() => this.#signal(), after.ms));
      }
    }
    this.#signal();
  }

  /** How this connection is doing. */
  state(): ImpairedState {
    return {
      profile: this.#profile?.name ?? null,
      generation: this.#generation,
      impairments: Object.keys(this.#drawn) as ImpairmentKind[],
      state: this.#ended ? "ended" : this.#stallUntil !== undefined ? "stalled" : "echoing",
      droppedBytes: this.#dropped,
      heldBytes: this.#held,
    };
  }

  /**
   * Echoes until the peer ends its stream (everything read is then echoed, or dropped by loss), the server closes
   * the connection, or an impairment ends it. Throws what the socket throws, unless the connection is closing.
   */
  async run(): Promise<void> {
    const c = this.#c;
    c.onClosing = () => this.#signal();
    try {
      c.conn.setNoDelay(true);
    } catch {
      // the peer may be gone already; the first read or write will tell
    }
    // Due at once (a refusal, a trigger at 0): fired before anything is read, so the client's input stays unread.
    const now = this.#due();
    if (now && this.#fire(now)) {
      this.#ended = true;
      c.onClosing = undefined;
      for (const timer of this.#timers) clearTimeout(timer);
      return;
    }
    if (this.#first) this.#keep(this.#first);
    const reading = this.#read();
    try {
      await this.#write();
    } catch (error) {
      if (!this.#stopping()) throw error;
    } finally {
      this.#ended = true;
      c.onClosing = undefined;
      for (const timer of this.#timers) clearTimeout(timer);
      this.#signal();
    }
    // A read still pending when the connection closes ends with the socket; the lingering close reads after it.
    if (!this.#stopping()) await reading;
    if (this.#hasReaderError && !this.#stopping()) throw this.#readerError;
  }

  /** True once the connection is closing or closed: nothing more is to be echoed. */
  #stopping(): boolean {
    return this.#c.closing !== undefined;
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = Promise.withResolvers<void>();
    wake.resolve();
  }

  /** Waits until `until` (performance.now() time; Infinity: no deadline) or the next signal, whichever is first. */
  async #sleep(until: number): Promise<void> {
    const wake = this.#wake.promise;
    const ms = until - performance.now();
    if (ms <= 0) return;
    if (until === FOREVER) return await wake;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([wake, new Promise<void>((resolve) => timer = setTimeout(resolve, ms))]);
    } finally {
      clearTimeout(timer);
    }
  }

  #count(kind: ImpairmentKind): { connections: number; bytes: number; events: number } {
    const counters = this.#counters!;
    return counters.impairments[kind] ??= { connections: 0, bytes: 0, events: 0 };
  }

  /** Bytes that may still be read before the next byte trigger or the byte limit; Infinity when none is set. */
  #readBudget(): number {
    let budget = this.#c.byteLimit - this.#c.bytes - this.#held;
    const since = this.#echoed - this.#echoedAtApply + this.#held;
    for (const kind of ["stall", "reset", "close"] as const) {
      const after = this.#drawn[kind]?.after;
      if (after && "bytes" in after && !this.#fired.has(kind)) budget = Math.min(budget, after.bytes - since);
    }
    return budget;
  }

  /** Bytes the writer may echo before the next byte trigger or the byte limit. */
  #writeBudget(): number {
    let budget = this.#c.byteLimit - this.#c.bytes;
    const since = this.#echoed - this.#echoedAtApply;
    for (const kind of ["stall", "reset", "close"] as const) {
      const after = this.#drawn[kind]?.after;
      if (after && "bytes" in after && !this.#fired.has(kind)) budget = Math.min(budget, after.bytes - since);
    }
    return budget;
  }

  /** The one-shot impairment due now, if any: a refusal, a byte count reached, a time passed. */
  #due(): "stall" | "reset" | "close" | "refuse" | undefined {
    if (this.#drawn.refuse && !this.#fired.has("refuse")) return "refuse";
    const since = this.#echoed - this.#echoedAtApply;
    const now = performance.now();
    for (const kind of ["reset", "close", "stall"] as const) {
      const after: Trigger | undefined = this.#drawn[kind]?.after;
      if (!after || this.#fired.has(kind)) continue;
      if ("bytes" in after ? since >= after.bytes : now - this.#appliedAt >= after.ms) return kind;
    }
    return undefined;
  }

  /** Adds a chunk read to the queue, or drops it (loss); stamps it with its due time (latency, order kept). */
  #keep(data: Uint8Array): void {
    if (this.#loss?.drop(this.#chunks)) {
      this.#dropped += data.length;
      const loss = this.#count("loss");
      loss.bytes += data.length;
      loss.events++;
      return;
    }
    let due = performance.now();
    const latency = this.#drawn.latency;
    if (latency) {
      let jitter = 0;
      if (latency.jitterMs > 0) {
        jitter = latency.distribution === "normal"
          ? latency.jitterMs * this.#chunks.normal()
          : latency.jitterMs * (2 * this.#chunks.float() - 1);
      }
      due += Math.max(0, latency.delayMs + jitter);
      const count = this.#count("latency");
      count.bytes += data.length;
      count.events++;
    }
    due = Math.max(due, this.#lastDue);
    this.#lastDue = due;
    this.#queue.push({ data, offset: 0, due });
    this.#held += data.length;
    this.#signal();
  }

  /** The reader: reads chunks while there is room and no stall, never past the next byte trigger. */
  async #read(): Promise<void> {
    const c = this.#c;
    // Sized to the traffic as the plain copy's is (lib/echo.ts), so an idle connection under a profile holds little.
    let buffer = new Uint8Array(MIN_BUFFER);
    try {
      for (;;) {
        while (!this.#stopping() && !this.#ended) {
          const budget = this.#readBudget();
          if (this.#stallUntil === undefined && this.#held < HELD_MAX && budget > 0) break;
          await this.#sleep(FOREVER);
        }
        if (this.#stopping() || this.#ended) return;
        const size = Math.min(buffer.length, this.#readBudget(), HELD_MAX - this.#held);
        const n = await c.conn.read(size === buffer.length ? buffer : buffer.subarray(0, size));
        if (n === null) {
          c.peerEnded = true;
          return;
        }
        // Read after the server began to close: not echoed (the lingering close discards such input).
        if (this.#stopping()) return;
        c.lastActive = c.clock.now;
        // The queue keeps a copy; the buffer is read into again.
        this.#keep(buffer.slice(0, n));
        const next = Math.min(nextBufferSize(buffer.length, n), READ_MAX);
        if (next !== buffer.length) buffer = new Uint8Array(next);
      }
    } catch (error) {
      this.#readerError = error;
      this.#hasReaderError = true;
    } finally {
      this.#readerDone = true;
      this.#signal();
    }
  }

  /** The writer: echoes the queue when due, through bandwidth and slicer, and fires the one-shot impairments. */
  async #write(): Promise<void> {
    const c = this.#c;
    for (;;) {
      if (this.#stopping()) return;
      const due = this.#due();
      if (due) {
        if (this.#fire(due)) return;
        continue;
      }
      if (this.#stallUntil !== undefined) {
        if (performance.now() < this.#stallUntil) {
          c.phase = "reading";
          await this.#sleep(this.#stallUntil);
          continue;
        }
        this.#stallUntil = undefined;
        if (this.#stallThen !== "resume") {
          this.#end(this.#stallThen === "close" ? "fault close" : "fault reset", this.#stallThen === "reset");
          return;
        }
        this.#signal(); // the reader may read again
        continue;
      }
      if (this.#hasReaderError) throw this.#readerError;
      if (c.bytes >= c.byteLimit) return;
      const head = this.#queue[0];
      if (!head) {
        if (this.#readerDone) return;
        c.phase = "reading";
        await this.#sleep(this.#nextTimeTrigger());
        continue;
      }
      c.phase = "writing";
      const now = performance.now();
      if (head.due > now) {
        await this.#sleep(Math.min(head.due, this.#nextTimeTrigger()));
        c.lastActive = c.clock.now; // our own delay is not the peer's silence (--send-timeout)
        continue;
      }
      let size = Math.min(head.data.length - head.offset, this.#writeBudget());
      const slicer = this.#drawn.slicer;
      if (slicer) {
        // Segments leave at least the slicer's delay apart, whichever chunk they come from.
        if (now < this.#nextSegmentAt) {
          await this.#sleep(Math.min(this.#nextSegmentAt, this.#nextTimeTrigger()));
          c.lastActive = c.clock.now;
          continue;
        }
        size = Math.min(size, this.#slices.integer(slicer.minBytes, slicer.maxBytes));
      }
      const bandwidth = this.#drawn.bandwidth;
      if (bandwidth) {
        // A token bucket of `burst` bytes filling at the rate. A segment leaves once the bucket is not in debt, and
        // its bytes are then taken even below zero: the wait is the debt's, so a timer that fires late (they never
        // fire early) shortens the next wait rather than losing rate to the bucket's cap.
        size = Math.min(size, bandwidth.burstBytes);
        const perMs = bandwidth.bitsPerSecond / 8000;
        this.#tokens = Math.min(bandwidth.burstBytes, this.#tokens + (now - this.#tokensAt) * perMs);
        this.#tokensAt = now;
        if (this.#tokens < 0) {
          await this.#sleep(Math.min(now - this.#tokens / perMs, this.#nextTimeTrigger()));
          c.lastActive = c.clock.now;
          continue;
        }
      }
      const n = await c.conn.write(head.data.subarray(head.offset, head.offset + size));
      head.offset += n;
      this.#held -= n;
      this.#echoed += n;
      c.bytes += n;
      c.lastActive = c.clock.now;
      if (this.#counters) this.#counters.echoedBytes += n;
      if (bandwidth) {
        this.#tokens -= n;
        this.#count("bandwidth").bytes += n;
      }
      if (head.offset >= head.data.length) {
        this.#queue.shift();
        this.#signal(); // room for the reader
      }
      if (slicer) {
        const count = this.#count("slicer");
        count.bytes += n;
        count.events++;
        this.#nextSegmentAt = performance.now() + slicer.delayMs;
      }
    }
  }

  /** When the next time trigger is due (performance.now() time), or Infinity. */
  #nextTimeTrigger(): number {
    let next = FOREVER;
    for (const kind of ["stall", "reset", "close"] as const) {
      const after = this.#drawn[kind]?.after;
      if (after && "ms" in after && !this.#fired.has(kind)) next = Math.min(next, this.#appliedAt + after.ms);
    }
    return next;
  }

  /**
   * Fires a one-shot impairment.
   *
   * @returns true when it ended the connection (the copy returns)
   */
  #fire(kind: "stall" | "reset" | "close" | "refuse"): boolean {
    this.#fired.add(kind);
    this.#count(kind).events++;
    switch (kind) {
      case "stall": {
        const stall = this.#drawn.stall!;
        this.#stallUntil = performance.now() + stall.forMs;
        this.#stallThen = stall.then;
        this.#c.phase = "reading";
        return false;
      }
      case "reset":
        return this.#end("fault reset", true);
      case "close":
        return this.#end("fault close", false);
      case "refuse":
        return this.#end("fault refuse", this.#drawn.refuse!.mode === "rst");
    }
  }

  /**
   * Ends the connection for an impairment. A close (and a refusal by FIN) is the connection's lingering close: FIN
   * behind the last echoed byte, then input discarded. A reset closes the socket now, with the client's further
   * input unread, so the kernel answers with RST (see the README: Deno's close sends FIN just before).
   *
   * @param reason why, for the closing log line
   * @param abortive true for a reset, false for a lingering close
   * @returns true (the copy returns)
   */
  #end(reason: FaultCloseReason, abortive: boolean): boolean {
    const c = this.#c;
    if (c.closing !== undefined) return true;
    if (abortive) {
      c.closing = reason;
      c.abort();
    } else {
      // Nothing of ours is in flight here: the FIN goes at once, and a pending read becomes the discard.
      c.phase = "reading";
      c.end(reason);
    }
    return true;
  }
}
