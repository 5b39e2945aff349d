// A minimal Deno TCP echo server for the latency-under-load reproduction (docs/latency-under-load.md): accept, then
// per connection `read` into one buffer and `write` it back, nothing else. Prints "listening on port N".
//
//   deno run --allow-net docs/repro/echo_server.ts [--backlog N]
//
// --backlog N passes `tcpBacklog: N` to Deno.listen (Deno's default is 511).

const at = Deno.args.indexOf("--backlog");
const tcpBacklog = at >= 0 ? Number(Deno.args[at + 1]) : undefined;
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, tcpBacklog });
console.log(`listening on port ${listener.addr.port}`);

async function echo(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      for (let written = 0; written < n;) written += await conn.write(buffer.subarray(written, n));
    }
  } catch {
    // a reset ends this connection only
  }
  try {
    conn.close();
  } catch {
    // already closed
  }
}

for await (const conn of listener) {
  conn.setNoDelay(true);
  echo(conn);
}
