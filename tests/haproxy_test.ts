// Scaling out, with a real HAProxy: two echosrv instances behind deploy/haproxy.cfg (TCP mode, send-proxy-v2,
// health checks on /healthz), all on loopback. Echo works through HAProxy over IPv4 and IPv6; each instance logs
// the real client (its address and source port, carried by PROXY v2), not HAProxy's; and when one instance stops
// gracefully, HAProxy marks it down from its /healthz (503 while draining) and no new session is lost, while the
// session still open on the stopping instance finishes. Waits end on events (log lines), bounded by count and time.
// HAProxy comes from Debian's packages, installed by .ci/run; where it is missing the test skips and says why (a
// test never installs anything on the machine it runs on).

import assert from "node:assert/strict";
import {
  freePort,
  hasCommand,
  pseudoRandomBytes,
  readAll,
  readExactly,
  ROOT,
  sameBytes,
  type ServerProcess,
  spawnServer,
  waitUntil,
  within,
  writeAll,
} from "./helpers.ts";

/** Why the test cannot run here (no haproxy), or undefined. Tests never install it: .ci/run does. */
const whyNot = (await hasCommand("haproxy", ["-v"]))
  ? undefined
  : "haproxy is not installed (Debian: apt-get install haproxy; .ci/run installs it)";
if (whyNot) console.log(`haproxy_test skipped: ${whyNot}`);

/** HAProxy started on deploy/haproxy.cfg, its output collected line by line. */
class Haproxy {
  readonly lines: string[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<unknown>;
  exited = false;

  constructor(env: Record<string, string>) {
    this.#child = new Deno.Command("haproxy", {
      args: ["-db", "-f", `${ROOT}deploy/haproxy.cfg`],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      const decoder = new TextDecoder();
      let partial = "";
      for await (const chunk of stream) {
        const text = partial + decoder.decode(chunk, { stream: true });
        const parts = text.split("\n");
        partial = parts.pop()!;
        this.lines.push(...parts);
      }
    };
    this.#done = Promise.all([
      pump(this.#child.stdout),
      pump(this.#child.stderr),
      this.#child.status.then(() => this.exited = true),
    ]);
  }

  async waitFor(pattern: RegExp, what: string): Promise<string> {
    await within(30_000, `${what}; HAProxy said:\n${this.lines.join("\n")}`, waitUntil(() => this.#find(pattern)));
    return this.lines.find((l) => pattern.test(l))!;
  }

  #find(pattern: RegExp): boolean {
    return this.lines.some((l) => pattern.test(l));
  }

  has(pattern: RegExp): boolean {
    return this.#find(pattern);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // exited already
    }
    await within(15_000, "HAProxy to exit", this.#done);
  }
}

/** A session through HAProxy: returns the client's own port (what the instance should log) once echoed. */
async function session(hostname: string, port: number, seed: number): Promise<number> {
  const conn = await Deno.connect({ hostname, port });
  try {
    const data = pseudoRandomBytes(2000 + seed % 1000, seed);
    const reading = readAll(conn, 15_000);
    await writeAll(conn, data);
    await conn.closeWrite();
    const echoed = await reading;
    assert.equal(sameBytes(echoed, data), true, `session ${seed} through HAProxy`);
    return conn.localAddr.port;
  } finally {
    conn.close();
  }
}

/** The instance whose log says it opened a session for this client, or undefined. */
function servedBy(instances: ServerProcess[], client: string): number | undefined {
  const index = instances.findIndex((s) => s.lines.some((l) => l.includes(`"message":"opened ${client} via `)));
  return index < 0 ? undefined : index;
}

Deno.test({
  name: "HAProxy: echo through it, real client addresses via PROXY v2, an instance stops without losing new sessions",
  ignore: whyNot !== undefined,
  async fn() {
    const ports = new Set<number>();
    while (ports.size < 5) ports.add(freePort());
    const [echo1, check1, echo2, check2, front] = [...ports];
    const instance = (echo: number, check: number) =>
      spawnServer([
        ...["--port", String(echo), "--host", "127.0.0.1", "--metrics", `127.0.0.1:${check}`],
        ...["--proxy-protocol", "--proxy-from", "127.0.0.1", "--log-level", "debug", "--shutdown-timeout", "60s"],
      ]);
    await using one = await instance(echo1, check1);
    await using two = await instance(echo2, check2);
    const instances = [one, two];
    await using haproxy = new Haproxy({
      ECHOSRV_LB_BIND: `127.0.0.1:${front},[::1]:${front}`,
      ECHOSRV_1: `127.0.0.1:${echo1}`,
      ECHOSRV_1_CHECK_PORT: String(check1),
      ECHOSRV_2: `127.0.0.1:${echo2}`,
      ECHOSRV_2_CHECK_PORT: String(check2),
    });
    // Ready when a health check has reached each instance's /healthz (its Deno.serve answers; nothing to log), and
    // when the frontend accepts: wait for the first session to go through.
    let seed = 1;
    const firstPort = await within(
      30_000,
      "HAProxy to accept",
      (async () => {
        for (;;) {
          try {
            return await session("127.0.0.1", front, seed++);
          } catch {
            await new Promise((r) => setTimeout(r, 50));
          }
        }
      })(),
    );

    // Real client addresses: each instance logs the client's own address and port, IPv6 included, although
    // HAProxy reaches the instances over IPv4 from ports of its own.
    const clients = [`127.0.0.1:${firstPort}`];
    for (let i = 0; i < 4; i++) {
      clients.push(`127.0.0.1:${await session("127.0.0.1", front, seed++)}`);
      clients.push(`[::1]:${await session("::1", front, seed++)}`);
    }
    await within(
      10_000,
      "every client in an instance's log",
      waitUntil(() => clients.every((c) => servedBy(instances, c) !== undefined)),
    );
    const used = new Set(clients.map((c) => servedBy(instances, c)));
    assert.equal(used.size, 2, "both instances served clients");

    // Two sessions held open: with leastconn, one lands on each instance.
    const held = [
      await Deno.connect({ hostname: "127.0.0.1", port: front }),
      await Deno.connect({ hostname: "127.0.0.1", port: front }),
    ];
    try {
      for (const conn of held) {
        await writeAll(conn, Uint8Array.of(7));
        assert.deepEqual(await readExactly(conn, 1, 10_000), Uint8Array.of(7));
      }
      const heldBy = (conn: Deno.TcpConn) => servedBy(instances, `127.0.0.1:${conn.localAddr.port}`);
      await within(
        10_000,
        "the held sessions in the logs",
        waitUntil(() => held.every((c) => heldBy(c) !== undefined)),
      );
      const onOne = held.find((c) => heldBy(c) === 0);
      assert.ok(onOne, "a held session is on the first instance");

      // Stop the first instance gracefully. It refuses new connections at once, keeps its open session, and
      // answers /healthz with 503; HAProxy must mark it down and route every new session to the second.
      one.signal("SIGTERM");
      await one.waitFor((r) => r.message.startsWith("stopped accepting"), "the first instance to drain");
      let during = 0;
      const down = /Server echosrv\/echo1 is DOWN/;
      await within(
        30_000,
        "HAProxy to mark echo1 down",
        (async () => {
          for (let i = 0; i < 3000 && !haproxy.has(down); i++) {
            await session(i % 2 ? "::1" : "127.0.0.1", front, seed++); // fails the test if one is lost
            during++;
            await new Promise((r) => setTimeout(r, 10));
          }
        })(),
      );
      const downLine = await haproxy.waitFor(down, "echo1 DOWN");
      assert.match(downLine, /503/, "marked down by its /healthz answer (503 draining)");
      // After: every new session goes to the second instance.
      const after: string[] = [];
      for (let i = 0; i < 6; i++) after.push(`127.0.0.1:${await session("127.0.0.1", front, seed++)}`);
      await within(
        10_000,
        "the later sessions in the second instance's log",
        waitUntil(() => after.every((c) => servedBy([two], c) === 0)),
      );
      assert.ok(after.every((c) => servedBy([one], c) === undefined), "none reached the stopped instance");
      console.log(`  ${during} new session(s) while echo1 was draining and not yet marked down: none lost`);

      // The session held on the stopping instance still echoes, then ends; the instance exits cleanly.
      await writeAll(onOne, Uint8Array.of(8));
      assert.deepEqual(await readExactly(onOne, 1, 10_000), Uint8Array.of(8));
    } finally {
      for (const conn of held) conn.close();
    }
    assert.equal(await one.exited(), 0);
    two.signal("SIGTERM");
    assert.equal(await two.exited(), 0);
  },
});
