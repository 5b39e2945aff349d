// echo: the copy at the heart of echosrv, moving each connection's bytes from its readable side back into its
// writable side until the peer closes. Two strategies: `loop`, a read/write loop over one reused buffer sized to
// the traffic (the default, chosen by measurement: see bench/ and the README's Performance section), and `pipe`,
// the design card's `readable.pipeTo(writable)`, kept selectable so the benchmark can show the difference.
// Both stop reading while a write is blocked, so a client that never reads stalls only its own connection. Both
// throw what the socket throws (reset, broken pipe, closed by us); the caller (lib/connection.ts) sorts that out.

import type { CoarseClock } from "./clock.ts";

/** Where a connection is in its life, as the server's sweeps and its close need to know. */
export type Phase =
  /** Between accept and the first echo: PROXY header, access rules, TLS handshake. */
  | "admitting"
  /** Waiting for the peer's next bytes, with nothing of ours left to send. */
  | "reading"
  /** A write is in flight: the peer has not yet made room for our echo. */
  | "writing"
  /** The echo is over; the connection is being closed. */
  | "closing";

/** What a copy reports while it runs, read by the server for logs, the sweeps, the close and the counters. */
export interface CopyProgress {
  /** Bytes written back so far: handed to the kernel, counted write by write (partial writes included). */
  bytes: number;
  /** {@link clock}`.now` at the last byte moved in either direction. */
  lastActive: number;
  /**
   * `--max-bytes-per-connection`: the copy echoes this many bytes at most, then ends (Infinity = no limit). This
   * module is the one place that enforces it; the connection (lib/connection.ts) closes when it is reached.
   */
  readonly byteLimit: number;
  /** Kept current by the copy: reading or writing. */
  phase: Phase;
  /** Set by the server when it closes the connection: the copy then ends at its next step, echoing nothing more. */
  readonly closing: unknown;
  /** Set by the copy when the peer ended its stream (a close or a half-close). */
  peerEnded: boolean;
  /** The coarse clock of the per-byte path (lib/clock.ts). */
  readonly clock: CoarseClock;
}

/**
 * The smallest read buffer, and the first of every connection. Most connections are idle most of the time, and an
 * idle connection's pending read holds its buffer (Deno's reads take the buffer up front), so this is what an idle
 * connection costs in buffer memory. 256 bytes hold a typical interactive message or a 64-byte probe in one read.
 */
export const MIN_BUFFER = 256;
/**
 * The largest read buffer: one read of a bulk stream. Each Deno read and write costs a fixed overhead, so bigger
 * chunks cost less CPU per byte (measured on loopback: 64 KiB 0.51 ns/byte, 256 KiB 0.42, 1 MiB 0.41, the C epoll
 * server 0.41). 256 KiB takes most of that gain while a connection's buffer stays well below what the kernel
 * already buffers for it; it is held only while reads keep filling it.
 */
export const MAX_BUFFER = 256 * 1024;

/**
 * The size of the next read buffer after a read of `n` bytes into `size`: doubled when the read filled it (more is
 * probably queued: a bulk stream), shrunk to twice the read when it used under a quarter of it (the traffic is small
 * again, or the connection is going quiet and its buffer would sit in a pending read), else kept.
 *
 * @param size the current buffer's size
 * @param n the bytes the last read returned (at least 1)
 * @returns the size for the next read
 * @example
 * ```ts
 * nextBufferSize(256, 256); // 512: full, grow
 * nextBufferSize(65536, 64); // 256: small again, shrink back
 * ```
 */
export function nextBufferSize(size: number, n: number): number {
  if (n >= size) return Math.min(size * 2, MAX_BUFFER);
  if (n >= size >> 2) return size;
  let fit = MIN_BUFFER;
  while (fit < 2 * n) fit *= 2;
  return Math.min(fit, size);
}

/** What a copy needs of a connection: a Deno.TcpConn, or lib/tls.ts's TlsConnection. */
export interface EchoStream {
  /** Reads into `buffer`: the bytes read, or null at the peer's end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes from `data`: the bytes written (perhaps fewer than given). */
  write(data: Uint8Array): Promise<number>;
  /** Turns Nagle's algorithm off (both kinds of connection have it). */
  setNoDelay(noDelay?: boolean): void;
}

/**
 * A copy strategy: echoes `first` (bytes already read: those that came with a PROXY header), then what the peer
 * sends, until the peer has closed and every byte it sent has been written back, the byte limit is reached, or the
 * server closes the connection.
 */
export type Copy = (conn: EchoStream, progress: CopyProgress, first?: Uint8Array) => Promise<void>;

const NOTHING = new Uint8Array(0);

/**
 * Writes back bytes read before the copy began (those that came with a PROXY header), within the byte limit.
 *
 * @param conn the connection
 * @param progress counters updated as bytes move
 * @param first the bytes
 */
async function echoFirst(conn: EchoStream, progress: CopyProgress, first: Uint8Array): Promise<void> {
  const n = Math.min(first.length, progress.byteLimit - progress.bytes);
  progress.phase = "writing";
  for (let written = 0; written < n && !progress.closing;) {
    const more = await conn.write(first.subarray(written, n));
    written += more;
    progress.bytes += more;
    progress.lastActive = progress.clock.now;
  }
}

/**
 * The read/write loop, echosrv's default: one read, then writes until all of it is back, then the next read. It is
 * the fewest Deno operations per echoed chunk the public API allows (one `read`, usually one `write`), which is
 * what the benchmark shows matters most. The buffer follows {@link nextBufferSize}. It returns at the peer's end of
 * stream (everything read has then been written back), when the byte limit has been echoed, or at its next step
 * after the server set `progress.closing`; in every case nothing it counted is still in flight, so the caller can
 * shut the write side down behind the last counted byte.
 *
 * @param conn the connection
 * @param progress counters updated as bytes move
 * @param first bytes already read, echoed first
 * @example Echo what one client sends, until it half-closes
 * ```ts
 * import { CoarseClock } from "./clock.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const conn = await listener.accept();
 * await client.write(new TextEncoder().encode("ping"));
 * await client.closeWrite(); // the client is done: the copy ends once "ping" is back
 * const progress: CopyProgress = {
 *   bytes: 0,
 *   lastActive: 0,
 *   byteLimit: Infinity,
 *   phase: "reading",
 *   closing: undefined,
 *   peerEnded: false,
 *   clock: new CoarseClock(),
 * };
 * await copyLoop(conn, progress);
 * const echo = new Uint8Array(4);
 * await client.read(echo); // "ping"; progress.bytes is 4
 * for (const socket of [conn, client, listener]) socket.close();
 * ```
 */
export async function copyLoop(conn: EchoStream, progress: CopyProgress, first: Uint8Array = NOTHING): Promise<void> {
  const limit = progress.byteLimit;
  if (first.length > 0) {
    await echoFirst(conn, progress, first);
    if (progress.bytes >= limit || progress.closing) return;
  }
  let buffer = new Uint8Array(MIN_BUFFER);
  // What the first write sends: the buffer itself when a read fills it, else a view of the part read. The view is
  // kept while reads keep the same length (request/response traffic), sparing an allocation per echo.
  let view = buffer;
  let nagleOff = false;
  for (;;) {
    progress.phase = "reading";
    const read = await conn.read(buffer);
    if (read === null) {
      progress.peerEnded = true;
      return;
    }
    // Bytes read after the server began to close are not echoed (its lingering close discards them).
    if (progress.closing) return;
    progress.lastActive = progress.clock.now;
    const n = Math.min(read, limit - progress.bytes);
    if (view.length !== n) view = n === buffer.length ? buffer : buffer.subarray(0, n);
    // Nagle's algorithm would hold a small echo back while an earlier one is unacknowledged, so TCP_NODELAY goes
    // on before the second echo. Not at accept: the first echo has nothing unacknowledged ahead of it, and a
    // connection that echoes once (a probe, a health check) saves the system call (a few % of a connection's cost
    // at most: within the benchmark's noise).
    if (!nagleOff && progress.bytes > 0) {
      nagleOff = true;
      setNoDelay(conn);
    }
    // Waiting for each write before reading again is the backpressure: a peer that does not read stalls here.
    progress.phase = "writing";
    let written = await conn.write(view);
    progress.bytes += written;
    progress.lastActive = progress.clock.now;
    while (written < n) {
      if (progress.closing) return;
      const more = await conn.write(buffer.subarray(written, n));
      written += more;
      progress.bytes += more;
      progress.lastActive = progress.clock.now;
    }
    if (progress.bytes >= limit || progress.closing) return;
    const size = nextBufferSize(buffer.length, read);
    if (size !== buffer.length) view = buffer = new Uint8Array(size);
  }
}

/** The pipe strategy's read size: a fresh buffer per read, as Deno's own `conn.readable` allocates. */
const PIPE_CHUNK = 64 * 1024;

/**
 * The design card's shape: the connection's readable side piped into a writable side (`readable.pipeTo(writable)`).
 * Each read goes into a fresh 64 KiB buffer, as Deno's own `conn.readable` does. It ends as {@link copyLoop} does,
 * and leaves the connection open for the caller to close.
 *
 * Neither side is the connection's own stream: `conn.readable` closes the whole connection the moment it reads the
 * peer's end of stream (since Deno 2.9 that cancels a write still in flight, so a slow reader that half-closed lost
 * the tail of its echo), and `conn.writable` neither counts a partial write nor leaves the close to the server,
 * whose close must be a lingering one (lib/connection.ts).
 *
 * @param conn the connection
 * @param progress counters updated as bytes move
 * @param first bytes already read, echoed first
 */
export async function copyPipe(conn: EchoStream, progress: CopyProgress, first: Uint8Array = NOTHING): Promise<void> {
  const limit = progress.byteLimit;
  if (first.length > 0) {
    await echoFirst(conn, progress, first);
    if (progress.bytes >= limit || progress.closing) return;
  }
  setNoDelay(conn);
  let writing = false;
  const source = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!writing) progress.phase = "reading";
      const buffer = new Uint8Array(PIPE_CHUNK);
      const n = await conn.read(buffer);
      if (n === null) progress.peerEnded = true;
      if (n === null || progress.closing) return controller.close();
      progress.lastActive = progress.clock.now;
      controller.enqueue(buffer.subarray(0, n));
    },
  }, { highWaterMark: 0 });
  const sink = new WritableStream<Uint8Array>({
    async write(chunk, controller) {
      writing = true;
      progress.phase = "writing";
      const n = Math.min(chunk.length, limit - progress.bytes);
      for (let written = 0; written < n && !progress.closing;) {
        const more = await conn.write(chunk.subarray(written, n));
        written += more;
        progress.bytes += more;
        progress.lastActive = progress.clock.now;
      }
      writing = false;
      progress.phase = "reading";
      if (progress.bytes >= limit || progress.closing) controller.error(DONE);
    },
  });
  await source.pipeTo(sink).catch((error) => {
    if (error !== DONE) throw error;
  });
}

/** Ends a pipe from its writable side (the byte limit reached, or the server closing). */
const DONE = Symbol("done");

/** Turns Nagle's algorithm off, so small echoes leave at once (on every kind of connection: plain and TLS). */
function setNoDelay(conn: EchoStream): void {
  try {
    conn.setNoDelay(true);
  } catch {
    // The peer may already be gone; the next read or write will find out.
  }
}

/** The strategies by their `--copy` name. */
export const COPY_STRATEGIES: Record<"loop" | "pipe", Copy> = { loop: copyLoop, pipe: copyPipe };
