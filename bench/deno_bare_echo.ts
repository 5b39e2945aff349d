// deno_bare_echo: a reference row of echosrv's benchmark, the least work a Deno echo server can do with the public
// API: accept, TCP_NODELAY, then `read` into one fixed 64 KiB buffer and `write` it back, with no limits, counters,
// logging, idle timeout or buffer sizing. Its CPU time per round trip is the floor of Deno's `Conn.read`/`write`
// operations, so comparing it with echosrv shows what echosrv's features cost, and comparing it with the C epoll
// server shows what no JavaScript change can win back. Usage: deno run --allow-net bench/deno_bare_echo.ts
// (prints "listening on port N").

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`listening on port ${listener.addr.port}`);

async function echo(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      let written = 0;
      while (written < n) written += await conn.write(buffer.subarray(written, n));
    }
  } catch {
    // A reset ends this connection only.
  }
  try {
    conn.close();
  } catch {
    // closed already
  }
}

for (;;) {
  const conn = await listener.accept();
  conn.setNoDelay(true);
  echo(conn);
}
