// crowd: a client process that holds many connections open at once, for the scale test (10,000 connections, more
// than one process can hold under a default descriptor limit). Each connection echoes a message of its own when
// opened and again on command, so every one of them is proved served while all are open. Started as
// `deno run --allow-net stress/crowd.ts '<CrowdConfig as JSON>'`; commands arrive as lines on standard input
// (`echo`, `close`), reports leave as JSON lines on standard output.

/** What a crowd process is told. */
export interface CrowdConfig {
  hostname: string;
  port: number;
  /** Connections to open and hold. */
  connections: number;
  /** Connection attempts in flight at once (kept under the server's accept backlog). */
  parallel: number;
  /** This crowd's first connection number, so messages differ across processes. */
  first: number;
}

/** A line a crowd writes. */
export type CrowdMessage =
  | { type: "open"; open: number; failed: number; errors: string[] }
  | { type: "echoed"; round: number; ok: number; failed: number; errors: string[] }
  | { type: "closed" };

const MESSAGE = 64;

/** The message connection `id` sends in round `round`: its numbers, then a pattern derived from them. */
function message(id: number, round: number): Uint8Array {
  const out = new Uint8Array(MESSAGE);
  const view = new DataView(out.buffer);
  view.setUint32(0, id);
  view.setUint32(4, round);
  for (let i = 8; i < MESSAGE; i++) out[i] = (id * 31 + round * 7 + i) & 0xff;
  return out;
}

/** Sends one message and checks that exactly it comes back. */
async function echoOnce(conn: Deno.TcpConn, id: number, round: number): Promise<void> {
  const sent = message(id, round);
  for (let offset = 0; offset < sent.length;) offset += await conn.write(sent.subarray(offset));
  const back = new Uint8Array(MESSAGE);
  for (let got = 0; got < MESSAGE;) {
    const n = await conn.read(back.subarray(got));
    if (n === null) throw new Error(`connection ${id}: end of stream after ${got} of ${MESSAGE} bytes`);
    got += n;
  }
  for (let i = 0; i < MESSAGE; i++) {
    if (back[i] !== sent[i]) throw new Error(`connection ${id}: byte ${i} of round ${round} differs`);
  }
}

function write(message: CrowdMessage): void {
  console.log(JSON.stringify(message));
}

async function run(config: CrowdConfig): Promise<void> {
  const conns: Array<Deno.TcpConn | undefined> = new Array(config.connections);
  const errors: string[] = [];
  const note = (error: unknown) => {
    if (errors.length < 5) errors.push(`${(error as Error).name}: ${(error as Error).message}`);
  };

  let next = 0;
  let failedOpen = 0;
  const opener = async () => {
    while (next < config.connections) {
      const i = next++;
      try {
        const conn = await Deno.connect({ hostname: config.hostname, port: config.port });
        conns[i] = conn;
        await echoOnce(conn, config.first + i, 0);
      } catch (error) {
        failedOpen++;
        note(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(config.parallel, config.connections) }, opener));
  write({ type: "open", open: config.connections - failedOpen, failed: failedOpen, errors: [...errors] });

  let round = 0;
  for await (const line of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    for (const command of line.split("\n").map((l) => l.trim()).filter((l) => l !== "")) {
      if (command === "echo") {
        round++;
        errors.length = 0;
        const results = await Promise.allSettled(
          conns.map((conn, i) =>
            conn ? echoOnce(conn, config.first + i, round) : Promise.reject(new Error("not open"))
          ),
        );
        const failed = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
        failed.forEach((r) => note(r.reason));
        write({
          type: "echoed",
          round,
          ok: results.length - failed.length,
          failed: failed.length,
          errors: [...errors],
        });
      } else if (command === "close") {
        for (const conn of conns) {
          try {
            conn?.close();
          } catch {
            // already closed
          }
        }
        write({ type: "closed" });
        return;
      }
    }
  }
}

if (import.meta.main) {
  await run(JSON.parse(Deno.args[0]) as CrowdConfig);
}
