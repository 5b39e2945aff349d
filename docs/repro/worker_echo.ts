// The worker of worker_server.ts: echo_server.ts's accept loop and read/write loop, started by a message that
// carries the command-line arguments.

const scope = self as unknown as { onmessage: ((event: MessageEvent<string[]>) => void) | null };

scope.onmessage = async (event) => {
  const at = event.data.indexOf("--backlog");
  const tcpBacklog = at >= 0 ? Number(event.data[at + 1]) : undefined;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, tcpBacklog });
  console.log(`listening on port ${listener.addr.port} (in a worker)`);
  for await (const conn of listener) {
    conn.setNoDelay(true);
    echo(conn);
  }
};

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
