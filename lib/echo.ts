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
export type Copy = (conn: Deno.TcpConn, progress: CopyProgress) => Promise<void>;

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
export async function copyLoop(conn: Deno.TcpConn, progress: CopyProgress): Promise<void> {
  let buffer = new Uint8Array(MIN_BUFFER);
  let smallReads = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) return;
    progress.lastActive = activityClock.now;
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
export async function copyPipe(conn: Deno.TcpConn, progress: CopyProgress): Promise<void> {
  const source = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buffer = new Uint8Array(MAX_BUFFER);
      const n = await conn.read(buffer);
      if (n === null) controller.close();
      else controller.enqueue(buffer.subarray(0, n));
    },
  }, { highWaterMark: 0 });
  const count = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      progress.bytes += chunk.byteLength;
      progress.lastActive = activityClock.now;
      controller.enqueue(chunk);
    },
  });
  await source.pipeThrough(count).pipeTo(conn.writable);
}

/** The strategies by their `--copy` name. */
export const COPY_STRATEGIES: Record<"loop" | "pipe", Copy> = { loop: copyLoop, pipe: copyPipe };
