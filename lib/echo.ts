// echo: the copy at the heart of echosrv, moving each connection's bytes from its readable side back into its
// writable side until the peer closes. Two strategies: `loop`, a read/write loop over one reused buffer sized to
// the traffic (the default, chosen by measurement: see bench/ and the README's Performance section), and `pipe`,
// the design card's `readable.pipeTo(writable)`, kept selectable so the benchmark can show the difference.
// Both stop reading while a write is blocked, so a client that never reads stalls only its own connection. Both
// throw what the socket throws (reset, broken pipe, closed by us); the caller (lib/server.ts) sorts that out.

import type { CoarseClock } from "./clock.ts";

/** What a copy reports while it runs, read by the server for logs, the idle sweep and the counters. */
export interface CopyProgress {
  /** Bytes received and written back so far. */
  bytes: number;
  /** {@link clock}`.now` at the last byte moved in either direction. */
  lastActive: number;
  /** `--max-bytes-per-connection`: the copy echoes this many bytes at most, then ends; absent = no limit. */
  byteLimit?: number;
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

/** A copy strategy: resolves when the peer has closed and every byte it sent has been written back. */
export type Copy = (conn: Deno.Conn, progress: CopyProgress) => Promise<void>;

/**
 * The read/write loop, echosrv's default: one read, then writes until all of it is back, then the next read. It is
 * the fewest Deno operations per echoed chunk the public API allows (one `read`, usually one `write`), which is
 * what the benchmark shows matters most. The buffer follows {@link nextBufferSize}. At the peer's end of stream (a
 * close or a half-close) everything read has been written, so the caller may close the connection at once.
 *
 * @param conn the connection
 * @param progress counters updated as bytes move
 * @example
 * ```ts
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await listener.accept();
 * await copyLoop(conn, { bytes: 0, lastActive: 0, clock: new CoarseClock() });
 * conn.close();
 * ```
 */
export async function copyLoop(conn: Deno.Conn, progress: CopyProgress): Promise<void> {
  let buffer = new Uint8Array(MIN_BUFFER);
  // What the first write sends: the buffer itself when a read fills it, else a view of the part read. The view is
  // kept while reads keep the same length (request/response traffic), sparing an allocation per echo.
  let view = buffer;
  let nagleOff = false;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) return;
    progress.lastActive = progress.clock.now;
    if (progress.bytes + n >= (progress.byteLimit ?? Infinity)) return await echoLast(conn, buffer, progress);
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
    let written = await conn.write(view);
    while (written < n) written += await conn.write(buffer.subarray(written, n));
    progress.bytes += n;
    progress.lastActive = progress.clock.now;
    const size = nextBufferSize(buffer.length, n);
    if (size !== buffer.length) view = buffer = new Uint8Array(size);
  }
}

/** Writes back what is left of the byte limit from `buffer` and counts it: the end of a limited copy. */
async function echoLast(conn: Deno.Conn, buffer: Uint8Array, progress: CopyProgress): Promise<void> {
  const last = buffer.subarray(0, progress.byteLimit! - progress.bytes);
  for (let written = 0; written < last.length;) written += await conn.write(last.subarray(written));
  progress.bytes += last.length;
}

/** The pipe strategy's read size: a fresh buffer per read, as Deno's own `conn.readable` allocates. */
const PIPE_CHUNK = 64 * 1024;

/**
 * The design card's shape: the connection's readable side piped into `conn.writable`, through a pass-through that
 * keeps the counters. Each read goes into a fresh 64 KiB buffer, as Deno's own `conn.readable` does; at the end
 * of stream `pipeTo` closes the connection (through `conn.writable`) once the last write is done.
 *
 * The readable side is not `conn.readable`: that one closes the whole connection the moment it reads the peer's
 * end of stream, and since Deno 2.9 closing cancels a write still in flight, so a peer that half-closed while its
 * echo was still queued (a slow reader) lost the tail of it.
 *
 * @param conn the connection
 * @param progress counters updated as bytes move
 */
export async function copyPipe(conn: Deno.Conn, progress: CopyProgress): Promise<void> {
  setNoDelay(conn);
  const source = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buffer = new Uint8Array(PIPE_CHUNK);
      const n = await conn.read(buffer);
      if (n === null) controller.close();
      else controller.enqueue(buffer.subarray(0, n));
    },
  }, { highWaterMark: 0 });
  const count = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      const limit = progress.byteLimit ?? Infinity;
      if (progress.bytes + chunk.byteLength >= limit) {
        controller.enqueue(chunk.subarray(0, limit - progress.bytes));
        progress.bytes = limit;
        controller.terminate(); // ends the writes after this chunk and stops reading
        return;
      }
      progress.bytes += chunk.byteLength;
      progress.lastActive = progress.clock.now;
      controller.enqueue(chunk);
    },
  });
  await source.pipeThrough(count).pipeTo(conn.writable);
}

/** Turns Nagle's algorithm off, so small echoes leave at once. */
function setNoDelay(conn: Deno.Conn): void {
  try {
    // TLS connections have no such method (the option stays with the TCP socket underneath).
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  } catch {
    // The peer may already be gone; the next read or write will find out.
  }
}

/** The strategies by their `--copy` name. */
export const COPY_STRATEGIES: Record<"loop" | "pipe", Copy> = { loop: copyLoop, pipe: copyPipe };
