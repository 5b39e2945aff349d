// Impairment profiles measured against what each promises, with echosrv started as `deno task start` starts it and
// a real client (tests/fixtures/fault_client.py, Python's socket module) on loopback: added latency, paced rate,
// segments and their delay, stall length, reset and close after exactly N bytes, refusals, loss and the
// probability per connection (within a statistical bound), the same seed giving the same sequence, a profile by
// listener and by client network. The control API and `echosrv fault` are in tests/faults_api_test.ts.
//
// Timing tolerances, honest for a shared 2-core machine: a delay is never shorter than asked (timers do not fire
// early), so lower bounds are strict; upper bounds allow what a busy machine adds, on medians where a single
// late wake-up could otherwise fail a test (each bound is stated where it is checked).

import assert from "node:assert/strict";
import {
  cannotRun,
  freePort,
  hasCommand,
  makeTestCertificate,
  NO_STOP_SIGNALS,
  proxyV2Header,
  readAll,
  readExactly,
  ROOT,
  type ServerProcess,
  spawnServer,
  within,
} from "./helpers.ts";

const HAVE_PYTHON = await hasCommand("python3", ["--version"]);
const NO_PYTHON = HAVE_PYTHON
  ? undefined
  : "needs python3 for its real socket clients (Debian: apt-get install python3)";
const CLIENT = `${ROOT}tests/fixtures/fault_client.py`;
const HAVE_HAPROXY = Deno.build.os === "linux" && await hasCommand("haproxy", ["-v"]);
const BASE = ["--port", "0", "-H", "127.0.0.1"];
const HAVE_NC = Deno.build.os !== "windows" && await hasCommand("nc", ["-h"]);
const HAVE_SOCAT = Deno.build.os !== "windows" && await hasCommand("socat", ["-V"]);
const HAVE_OPENSSL = await hasCommand("openssl", ["version"]);

/** Runs the Python client; returns its JSON. */
async function client<T = Record<string, unknown>>(
  mode: string,
  port: number,
  options: Record<string, string | number | true> = {},
): Promise<T> {
  const args = [CLIENT, mode, "--port", String(port)];
  for (const [name, value] of Object.entries(options)) {
    args.push(`--${name}`);
    if (value !== true) args.push(String(value));
  }
  const out = await within(
    90_000,
    `fault_client.py ${args.slice(1).join(" ")}`,
    new Deno.Command("python3", { args, stdout: "piped", stderr: "piped" }).output(),
  );
  const decoder = new TextDecoder();
  assert.ok(out.success, `fault_client.py ${args.slice(1).join(" ")}: ${decoder.decode(out.stderr)}`);
  return JSON.parse(decoder.decode(out.stdout)) as T;
}

/** The port of each --fault-listen listener, by its profile, from the server's log. */
function faultPorts(server: ServerProcess): Record<string, number> {
  const ports: Record<string, number> = {};
  for (const r of server.records()) {
    if (/^(worker \d+: )?fault listener/.test(r.message)) {
      ports[r.properties.profile as string] = r.properties.port as number;
    }
  }
  return ports;
}

/** The closing lines of the server's log: bytes and reason. */
async function closings(server: ServerProcess, count: number): Promise<Array<{ bytes: number; reason: string }>> {
  const lines = () =>
    server.records().filter((r) => r.message.startsWith("closed ")).map((r) => ({
      bytes: r.properties.bytes as number,
      reason: r.properties.reason as string,
    }));
  await server.waitFor(() => lines().length >= count, `${count} closing line(s)`, 30_000);
  return lines();
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

interface Stream {
  received: number;
  end: string;
  intact: boolean;
  first_ms: number;
  last_ms: number;
  max_gap_ms: number;
  gap_at: number;
  recvs: number;
  max_recv: number;
  after_end: string;
}

Deno.test({
  name: "latency: a clean port and a slow port side by side; the slow echo is never early, its median within 30 ms",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      ...["--fault-profile", "slow: latency 150ms", "--fault-listen", "0=slow"],
      ...["--fault-profile", "jittery: latency 150ms jitter 50ms", "--fault-listen", "0=jittery"],
    ]);
    const ports = faultPorts(server);
    const clean = await client<{ rtts_ms: number[] }>("rtt", server.port, { count: 15 });
    const slow = await client<{ rtts_ms: number[] }>("rtt", ports.slow, { count: 15 });
    const jittery = await client<{ rtts_ms: number[] }>("rtt", ports.jittery, { count: 20 });
    // The clean port is not slowed: a loopback round trip takes well under the delay (50 ms allows a busy machine).
    assert.ok(median(clean.rtts_ms) < 50, `clean: ${clean.rtts_ms}`);
    // Never early (timers do not fire before their time; 1 ms for the clocks' rounding); the median within 30 ms.
    assert.ok(slow.rtts_ms.every((ms) => ms >= 149), `slow: ${slow.rtts_ms}`);
    assert.ok(median(slow.rtts_ms) <= 180, `slow: median ${median(slow.rtts_ms)} of ${slow.rtts_ms}`);
    // Uniform jitter of ±50 ms: never below 100 ms, and (with 20 draws) some below the delay and some above it: the
    // chance that all 20 fall on one side is 2^-19.
    assert.ok(jittery.rtts_ms.every((ms) => ms >= 99), `jittery: ${jittery.rtts_ms}`);
    assert.ok(jittery.rtts_ms.some((ms) => ms < 150), `jittery: ${jittery.rtts_ms}`);
    assert.ok(jittery.rtts_ms.some((ms) => ms > 151), `jittery: ${jittery.rtts_ms}`);
  },
});

Deno.test({
  name: "bandwidth: the echo is paced to within 10% of 1 Mbit/s and of 8 Mbit/s",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      ...["--fault-profile", "slow: bandwidth 1Mbit", "--fault-listen", "0=slow"],
      ...["--fault-profile", "faster: bandwidth 8Mbit", "--fault-listen", "0=faster"],
    ]);
    const ports = faultPorts(server);
    // About 2 s each. The rate is taken from the first byte to the last, so the bucket's first burst (10 ms at the
    // rate) counts a little in its favour: 0.5% here.
    for (const [name, bits, bytes] of [["slow", 1e6, 250_000], ["faster", 8e6, 2_000_000]] as const) {
      const result = await client<Stream>("stream", ports[name], { send: bytes, "half-close": true });
      assert.equal(result.received, bytes, JSON.stringify(result));
      assert.ok(result.intact);
      const rate = bytes * 8 / ((result.last_ms - result.first_ms) / 1000);
      assert.ok(Math.abs(rate - bits) <= 0.1 * bits, `${name}: ${Math.round(rate)} bit/s, expected ${bits}`);
    }
  },
});

Deno.test({
  name: "slicer: the echo comes in segments of at most 10 bytes, 20 ms apart",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      "--fault-profile",
      "sliced: slicer 10 delay 20ms",
      "--fault-listen",
      "0=sliced",
    ]);
    const result = await client<Stream>("stream", faultPorts(server).sliced, { send: 100, "half-close": true });
    assert.equal(result.received, 100);
    assert.ok(result.intact);
    assert.ok(result.max_recv <= 10, JSON.stringify(result));
    // 10 segments, 9 delays of 20 ms between them.
    assert.ok(result.last_ms - result.first_ms >= 179, JSON.stringify(result));
  },
});

Deno.test({
  name: "stall: after exactly 1000 bytes the echo stops for 1 s (at most 300 ms more), then the rest comes intact",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      ...["--fault-profile", "stuck: stall after 1000 for 1s", "--fault-listen", "0=stuck"],
    ]);
    const result = await client<Stream>("stream", faultPorts(server).stuck, { send: 3000, "half-close": true });
    assert.equal(result.received, 3000, JSON.stringify(result));
    assert.ok(result.intact);
    assert.equal(result.gap_at, 1000, JSON.stringify(result));
    assert.ok(result.max_gap_ms >= 999 && result.max_gap_ms <= 1300, JSON.stringify(result));
  },
});

Deno.test({
  name: "reset after 100000 bytes: the client gets exactly 100000, then the connection is reset (its writes fail)",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      "--log-level",
      "debug",
      ...["--fault-profile", "cut: reset after 100000", "--fault-listen", "0=cut"],
    ]);
    for (let i = 0; i < 5; i++) {
      const result = await client<Stream>("stream", faultPorts(server).cut, { send: 1_000_000 });
      assert.equal(result.received, 100_000, JSON.stringify(result));
      assert.ok(result.intact);
      // Deno's close sends FIN, and the kernel then RST, at once (the client's further input was unread): Linux
      // reports the FIN as end of stream (or the reset), and the client's next writes fail.
      assert.ok(result.end === "eof" || result.end === "reset", JSON.stringify(result));
      assert.match(result.after_end, /BrokenPipeError|ConnectionResetError/, JSON.stringify(result));
    }
    const logged = await closings(server, 5);
    assert.ok(logged.every((c) => c.bytes === 100_000 && c.reason === "fault reset"), JSON.stringify(logged));
  },
});

Deno.test({
  name: "close after 100000 bytes: exactly 100000, then end of stream, for fast, late and small-buffer readers",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      "--log-level",
      "debug",
      ...["--fault-profile", "short: close after 100000", "--fault-listen", "0=short"],
    ]);
    const port = faultPorts(server).short;
    const readers: Array<Record<string, number>> = [{}, { "read-after": 1 }, { "read-after": 1, rcvbuf: 4096 }];
    for (const reader of readers) {
      const result = await client<Stream>("stream", port, { send: 1_000_000, ...reader });
      assert.equal(result.received, 100_000, JSON.stringify({ reader, result }));
      assert.ok(result.intact);
      assert.equal(result.end, "eof", JSON.stringify(result));
      // A lingering close: what the client sends after is read and discarded, never answered by a reset, while the
      // server lingers. A late reader was silent for longer than the linger's quiet time (LINGER_QUIET_MS, 0.75 s)
      // before it read: the server had closed by then, and TCP answers its later writes with a reset, which takes
      // nothing from it (it has read everything).
      if (!reader["read-after"]) assert.equal(result.after_end, "ok", JSON.stringify(result));
    }
    const logged = await closings(server, 3);
    assert.ok(logged.every((c) => c.bytes === 100_000 && c.reason === "fault close"), JSON.stringify(logged));
  },
});

Deno.test({
  name: "refuse: fin closes at once with end of stream; rst closes at once and the client's writes fail",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      ...["--fault-profile", "door: refuse", "--fault-listen", "0=door"],
      ...["--fault-profile", "slam: refuse rst", "--fault-listen", "0=slam"],
    ]);
    const ports = faultPorts(server);
    const fin = await client<Stream>("stream", ports.door, { send: 64 });
    assert.deepEqual([fin.received, fin.end, fin.after_end], [0, "eof", "ok"], JSON.stringify(fin));
    const rst = await client<Stream>("stream", ports.slam, { send: 64 });
    assert.equal(rst.received, 0, JSON.stringify(rst));
    assert.match(rst.after_end, /BrokenPipeError|ConnectionResetError/, JSON.stringify(rst));
  },
});

/** The bounds within which a binomial count falls but for a chance of about 6 in 10 million (5 standard deviations). */
function binomialBounds(n: number, p: number): [number, number] {
  const sd = Math.sqrt(n * p * (1 - p));
  return [n * p - 5 * sd, n * p + 5 * sd];
}

Deno.test({
  name: "probability: refuse probability 30% refuses 30% of 300 connections, within 5 standard deviations",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      "--fault-profile",
      "some: refuse probability 30%",
      "--fault-listen",
      "main=some",
    ]);
    const { outcomes } = await client<{ outcomes: string[] }>("connections", server.port, { count: 300 });
    const refused = outcomes.filter((o) => o === "eof").length;
    assert.equal(refused + outcomes.filter((o) => o === "echo").length, 300, JSON.stringify(outcomes));
    const [low, high] = binomialBounds(300, 0.3);
    assert.ok(
      refused >= low && refused <= high,
      `${refused} of 300 refused, expected ${low.toFixed(0)}-${high.toFixed(0)}`,
    );
  },
});

Deno.test({
  name: "loss 25%: about a quarter of 240 echoed chunks never come back, within 5 standard deviations",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      "--fault-profile",
      "lossy: loss 25%",
      "--fault-listen",
      "main=lossy",
    ]);
    // Four clients at once, each 60 requests, one at a time (so each read is one chunk), 300 ms for each echo.
    const runs = await Promise.all(
      [0, 1, 2, 3].map(() => client<{ echoed: boolean[] }>("requests", server.port, { count: 60, "wait-ms": 300 })),
    );
    const lost = runs.flatMap((r) => r.echoed).filter((ok) => !ok).length;
    const [low, high] = binomialBounds(240, 0.25);
    assert.ok(lost >= low && lost <= high, `${lost} of 240 lost, expected ${low.toFixed(0)}-${high.toFixed(0)}`);
  },
});

Deno.test({
  name: "--fault-seed: the same seed gives the same refusals and the same losses; another seed, others",
  ignore: cannotRun("faults_test", NO_PYTHON),
  async fn() {
    const run = async (seed: number) => {
      await using server = await spawnServer([
        ...BASE,
        ...["--fault-seed", String(seed)],
        ...["--fault-profile", "coin: refuse probability 50%", "--fault-listen", "main=coin"],
        ...["--fault-profile", "lossy: loss 30%", "--fault-listen", "0=lossy"],
      ]);
      const { outcomes } = await client<{ outcomes: string[] }>("connections", server.port, { count: 40 });
      const { echoed } = await client<{ echoed: boolean[] }>("requests", faultPorts(server).lossy, {
        count: 30,
        "wait-ms": 300,
      });
      return { outcomes, echoed };
    };
    const first = await run(1234);
    const again = await run(1234);
    assert.deepEqual(again.outcomes, first.outcomes);
    assert.deepEqual(again.echoed, first.echoed);
    assert.ok(first.outcomes.includes("eof") && first.outcomes.includes("echo"), JSON.stringify(first.outcomes));
    assert.ok(first.echoed.includes(false) && first.echoed.includes(true), JSON.stringify(first.echoed));
    // 40 fair coins agree by chance once in 2^40.
    const other = await run(1235);
    assert.notDeepEqual(other.outcomes, first.outcomes);
  },
});

Deno.test({
  name: "--fault-client: one client network gets its profile on the main port; every other client, the plain echo",
  ignore: cannotRun(
    "faults_test",
    NO_PYTHON || (Deno.build.os !== "linux" ? "needs 127.0.0.2 as a source (Linux)" : undefined),
  ),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      ...["--fault-profile", "short: close after 10", "--fault-client", "127.0.0.2/32=short"],
    ]);
    const picked = await client<Stream>("stream", server.port, { send: 1000, source: "127.0.0.2" });
    assert.deepEqual([picked.received, picked.end], [10, "eof"], JSON.stringify(picked));
    const other = await client<Stream>("stream", server.port, { send: 1000, "half-close": true });
    assert.equal(other.received, 1000, JSON.stringify(other));
  },
});

Deno.test({
  name: "options: a bad profile exits 2 naming the option (unknown impairment, negative rate, probability, units)",
  async fn() {
    const { runEchosrv } = await import("./helpers.ts");
    const cases: Array<[string[], RegExp]> = [
      [
        ["--fault-profile", "x: jitter 5ms"],
        /option '--fault-profile <profile>' argument .* "jitter" is not an impairment/,
      ],
      [["--fault-profile", "x: bandwidth -1Mbit"], /option '--fault-profile <profile>'.*"-1Mbit" is not a rate/],
      [["--fault-profile", "x: loss 150%"], /option '--fault-profile <profile>'.*it must be 0 to 100%/],
      [["--fault-profile", "x: latency 20"], /option '--fault-profile <profile>'.*"20" is not a duration/],
      [
        ["--fault-profile", "x: latency 1ms", "--fault-listen", "0=y"],
        /option '--fault-listen 0=y': no profile named y/,
      ],
      [["--fault-client", "10.0.0.1/8=x"], /option '--fault-client <cidr=profile>'.*host bits set/],
      [["--fault-api", "0.0.0.0:0"], /option '--fault-api 0.0.0.0:0'.*needs a token/],
      [["--fault-seed", "-1"], /option '--fault-seed <n>'.*out of range/],
    ];
    for (const [args, message] of cases) {
      const result = await runEchosrv(["--port", "0", ...args]);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, message, args.join(" "));
      assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    }
    const fromEnv = await runEchosrv(["--port", "0"], { ECHOSRV_FAULT_PROFILE: "x: reset after 1m" });
    assert.equal(fromEnv.code, 2, fromEnv.stderr);
    assert.match(fromEnv.stderr, /ambiguous: write 1min or 1MiB/);
  },
});

Deno.test({
  name: "nc and socat as a new user runs them: close after 5 gives them 5 bytes and end of stream",
  ignore: cannotRun(
    "faults_test nc/socat",
    HAVE_NC && HAVE_SOCAT ? undefined : "needs nc (netcat-openbsd) and socat (Unix tools; Debian: apt-get install ...)",
  ),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      "--fault-profile",
      "short: close after 5",
      "--fault-listen",
      "main=short",
    ]);
    for (
      const [tool, shell] of [
        ["nc", `printf 'hello world\\n' | nc -N 127.0.0.1 ${server.port}`],
        ["socat", `printf 'hello world\\n' | socat - TCP:127.0.0.1:${server.port}`],
      ]
    ) {
      const out = await within(10_000, tool, new Deno.Command("sh", { args: ["-c", shell], stdout: "piped" }).output());
      assert.equal(new TextDecoder().decode(out.stdout), "hello", tool);
    }
  },
});

Deno.test({
  name: "TLS: close after 5000 bytes gives a TLS client exactly 5000 bytes, then the end of the stream",
  ignore: cannotRun("faults_test TLS", NO_PYTHON ?? (HAVE_OPENSSL ? undefined : "needs openssl for a certificate")),
  async fn() {
    await using cert = await makeTestCertificate();
    assert.ok(cert, "openssl made no certificate");
    await using server = await spawnServer([
      ...BASE,
      ...["--log-level", "debug", "--tls-cert", cert.certFile, "--tls-key", cert.keyFile],
      ...["--fault-profile", "short: close after 5000", "--fault-listen", "0=short"],
    ]);
    const result = await client<Stream>("stream", faultPorts(server).short, { send: 100_000, tls: true });
    const logged = await closings(server, 1);
    assert.deepEqual(
      [result.received, result.end, result.intact],
      [5000, "eof", true],
      JSON.stringify({ result, logged }),
    );
    assert.deepEqual(logged, [{ bytes: 5000, reason: "fault close" }]);
  },
});

Deno.test({
  name: "a stop is not held up by a stall forever: the stalled connection is closed within the stop's bounds",
  ignore: cannotRun("faults_test stop", NO_PYTHON || NO_STOP_SIGNALS),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      ...["--shutdown-timeout", "1s"],
      ...["--fault-profile", "stuck: stall after 100 forever", "--fault-listen", "main=stuck"],
    ]);
    const reading = client<Stream>("stream", server.port, { send: 1000, timeout: 15 });
    // The client connects and gets its 100 bytes (the server logs nothing per connection at this level).
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const started = performance.now();
    server.signal("SIGTERM");
    assert.equal(await server.exited(15_000), 0);
    // 1 s of grace, then a lingering close of at most 2 s (lib/connection.ts's STOP_LINGER_MS), and start-up slack.
    assert.ok(performance.now() - started < 6000, `stopped after ${Math.round(performance.now() - started)} ms`);
    const result = await reading;
    assert.deepEqual([result.received, result.end], [100, "eof"], JSON.stringify(result));
  },
});

/** Runs HAProxy (TCP mode) in front of one echosrv port; returns its log lines as they come. */
async function haproxyInFront(front: number, backend: number): Promise<{ lines: string[] } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "echosrv-faults-haproxy-" });
  const config = [
    "global",
    "    log stdout format raw local0 info",
    "defaults",
    "    mode tcp",
    "    log global",
    "    option tcplog",
    "    timeout connect 2s",
    "    timeout client 30s",
    "    timeout server 30s",
    "frontend echo",
    `    bind 127.0.0.1:${front}`,
    "    default_backend echosrv",
    "backend echosrv",
    `    server e1 127.0.0.1:${backend}`,
  ].join("\n") + "\n";
  await Deno.writeTextFile(`${dir}/haproxy.cfg`, config);
  const child = new Deno.Command("haproxy", {
    args: ["-db", "-f", `${dir}/haproxy.cfg`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) lines.push(...chunk.split("\n"));
  };
  const done = Promise.all([pump(child.stdout), pump(child.stderr), child.status]);
  return {
    lines,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch {
        // exited already
      }
      await within(15_000, "HAProxy to exit", done);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name: "HAProxy in front: a backend that resets mid-stream is logged SD (server abort), one that closes --",
  ignore: cannotRun(
    "faults_test HAProxy",
    NO_PYTHON || (HAVE_HAPROXY ? undefined : "haproxy is not installed (Debian: apt-get install haproxy)"),
  ),
  async fn() {
    await using server = await spawnServer([
      ...BASE,
      ...["--fault-profile", "cut: reset after 4KiB", "--fault-listen", "main=cut"],
      ...["--fault-profile", "short: close after 4KiB", "--fault-listen", "0=short"],
    ]);
    for (const [backend, flags] of [[server.port, "SD"], [faultPorts(server).short, "--"]] as const) {
      const front = freePort();
      await using haproxy = await haproxyInFront(front, backend);
      await within(
        10_000,
        "HAProxy to listen",
        (async () => {
          for (;;) {
            try {
              (await Deno.connect({ hostname: "127.0.0.1", port: front })).close();
              return;
            } catch {
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
          }
        })(),
      );
      const seen = haproxy.lines.length;
      const result = await client<Stream>("stream", front, { send: 65536, timeout: 10 });
      assert.equal(result.received, 4096, JSON.stringify(result));
      // HAProxy's tcplog: bytes read from the server, then the termination state (SD: the server aborted).
      const pattern = new RegExp(` echo echosrv/e1 \\S+ 4096 ${flags} `);
      await within(
        10_000,
        `HAProxy's log line with ${flags}`,
        (async () => {
          while (!haproxy.lines.slice(seen).some((l) => pattern.test(l))) {
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        })(),
      ).catch((error) => {
        throw new Error(`${error.message}; HAProxy said:\n${haproxy.lines.join("\n")}`);
      });
    }
  },
});

Deno.test("behind a load balancer: the profile follows the client a PROXY header names, bytes after it included", async () => {
  await using server = await spawnServer([
    ...BASE,
    ...["--proxy-protocol", "--proxy-from", "127.0.0.1"],
    ...["--fault-profile", "short: close after 3", "--fault-client", "192.0.2.0/24=short"],
  ]);
  const session = async (source: string) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      const header = proxyV2Header({ hostname: source, port: 5555 });
      // The header and the first bytes in one write: they arrive together, before the profile is chosen.
      await conn.write(new Uint8Array([...header, ...new TextEncoder().encode("hello")]));
      return new TextDecoder().decode(await readAll(conn, 10_000));
    } finally {
      conn.close();
    }
  };
  assert.equal(await session("192.0.2.7"), "hel");
  const other = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await other.write(new Uint8Array([...proxyV2Header({ hostname: "198.51.100.1", port: 5555 }), 104, 105]));
    assert.equal(new TextDecoder().decode(await readExactly(other, 2, 10_000)), "hi");
  } finally {
    other.close();
  }
});
