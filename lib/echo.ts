// echo: the copy at the heart of echosrv, moving each connection's bytes from its readable side back into its
// writable side until the peer closes. Two strategies: `loop`, a read/write loop over one reused buffer sized to
// the traffic (the default, chosen by measurement), and `pipe`, the design card's `readable.pipeTo(writable)`.
// Both stop reading while a write is blocked, so a client that never reads stalls only its own connection. Both
// throw what the socket throws (reset, broken pipe, closed by us); the caller (lib/server.ts) sorts that out.

/** What a copy reports while it runs, read by the server for logs, the idle sweep and the counters. */
export interface CopyProgress {
  /** Bytes received and written back so far. */
  bytes: number;
  /** {@link activityClock}`.now` at the last byte moved in either direction. */
  lastActive: number;
  /** `--max-bytes-per-connection`: the copy echoes this many bytes at most, then ends; absent = no limit. */
  byteLimit?: number;
}

/**
 * A coarse clock in milliseconds that the idle sweep advances; the hot path copies it instead of asking the
 * system for the time on every read.
 */
export const activityClock = { now: performance.now() };

/** The first read buffer of a connection: small, because most connections are idle most of the time. */
export const MIN_BUFFER = 1024;
/** The largest read buffer: one read of a bulk stream. */
export const MAX_BUFFER = 64 * 1024;
/** After this many reads that each used under a quarter of the buffer, it is halved. */
const SHRINK_AFTER = 16;

/** A copy strategy: resolves when the peer has closed and every byte it sent has been written back. */
export type Copy = (conn: Deno.Conn, progress: CopyProgress) => Promise<void>;

/**
 * The read/write loop: one buffer per connection, doubled when a read fills it (up to {@link MAX_BUFFER}) and
 * halved after a run of small reads. At the peer's end of stream (a close or a half-close) everything read has
 * been written, so the caller may close the connection at once.
 *
 * @param conn the connection
 * @param progress counters updated as bytes move
 * @example
 * ```ts
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await listener.accept();
 * await copyLoop(conn, { bytes: 0, lastActive: 0 });
 * conn.close();
 * ```
 */
export async function copyLoop(conn: Deno.Conn, progress: CopyProgress): Promise<void> {
  let buffer = new Uint8Array(MIN_BUFFER);
  let smallReads = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) return;
    progress.lastActive = activityClock.now;
    if (progress.bytes + n >= (progress.byteLimit ?? Infinity)) return await echoLast(conn, buffer, progress);
    let written = await conn.write(n === buffer.length ? buffer : buffer.subarray(0, n));
    while (written < n) written += await conn.write(buffer.subarray(written, n));
    progress.bytes += n;
    progress.lastActive = activityClock.now;
    if (n === buffer.length) {
      smallReads = 0;
      if (buffer.length < MAX_BUFFER) buffer = new Uint8Array(buffer.length * 2);
    } else if (n < buffer.length >> 2 && buffer.length > MIN_BUFFER && ++smallReads >= SHRINK_AFTER) {
      smallReads = 0;
      buffer = new Uint8Array(buffer.length >> 1);
    }
  }
}

/** Writes back what is left of the byte limit from `buffer` and counts it: the end of a limited copy. */
async function echoLast(conn: Deno.Conn, buffer: Uint8Array, progress: CopyProgress): Promise<void> {
  const last = buffer.subarray(0, progress.byteLimit! - progress.bytes);
  for (let written = 0; written < last.length;) written += await conn.write(last.subarray(written));
  progress.bytes += last.length;
}

/**
 * The design card's shape: `conn.readable` piped into `conn.writable`, through a pass-through that keeps the
 * counters. Deno's readable reads into a fresh 64 KiB buffer per chunk; at the end of stream it closes the
 * connection itself once the writes are done.
 *
 * @param conn the connection
 * @param progress counters updated as bytes move
 */
export async function copyPipe(conn: Deno.Conn, progress: CopyProgress): Promise<void> {
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
      progress.lastActive = activityClock.now;
      controller.enqueue(chunk);
    },
  });
  await conn.readable.pipeThrough(count).pipeTo(conn.writable);
}

/** The strategies by their `--copy` name. */
export const COPY_STRATEGIES: Record<"loop" | "pipe", Copy> = { loop: copyLoop, pipe: copyPipe };
