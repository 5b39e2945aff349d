// TLS echo as users try it: Deno's TLS client and `openssl s_client` against `echosrv --tls-cert --tls-key`, with a
// throwaway certificate made by openssl (the tests skip, saying why, where openssl is missing). Plaintext sent to
// the TLS port ends that connection only, and is counted; bad certificate files are usage errors.

import assert from "node:assert/strict";
import {
  hasCommand,
  makeTestCertificate,
  metricsPortOf,
  pseudoRandomBytes,
  readAll,
  readExactly,
  runEchosrv,
  sameBytes,
  scrape,
  serverSocketsOpen,
  sleep,
  spawnServer,
  within,
  writeAll,
  writeUntilStalled,
} from "./helpers.ts";

const skip = !(await hasCommand("openssl"));
if (skip) console.log("tls_test: openssl is not installed, so no test certificate can be made: TLS tests skipped");

Deno.test({
  name: "TLS: Deno's TLS client gets every byte back, half-close included; plaintext is refused and counted",
  ignore: skip,
  async fn() {
    await using cert = await makeTestCertificate();
    await using server = await spawnServer([
      ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"],
      ...["--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile],
    ]);
    const metricsPort = await metricsPortOf(server);
    assert.ok(server.records().some((r) => /listening on 127\.0\.0\.1:\d+ \(TLS\)/.test(r.message)));

    const data = pseudoRandomBytes(2 * 1024 * 1024, 11);
    const conn = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [cert!.cert] });
    try {
      const reading = readAll(conn, 60_000);
      await writeAll(conn, data, 60_000);
      await conn.closeWrite();
      assert.equal(sameBytes(await reading, data), true);
    } finally {
      conn.close();
    }

    // Plaintext to the TLS port: that connection ends (the server answers with a TLS alert and closes), no crash.
    const plain = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await plain.write(new TextEncoder().encode("hello, is this echo?\r\n\r\n"));
      const answer = await readAll(plain, 10_000).catch(() => new Uint8Array(0));
      assert.ok(!new TextDecoder().decode(answer).includes("hello"), "plaintext is never echoed");
    } finally {
      plain.close();
    }
    const samples = await scrape(metricsPort);
    assert.equal(samples.get('echosrv_errors_total{kind="tls_handshake"}'), 1);
    assert.equal(samples.get("echosrv_connections_accepted_total"), 1);

    // Still serving TLS afterwards.
    const again = await Deno.connectTls({ hostname: "127.0.0.1", port: server.port, caCerts: [cert!.cert] });
    try {
      await writeAll(again, Uint8Array.of(1, 2, 3));
      await again.closeWrite();
      assert.deepEqual(await readAll(again, 10_000), Uint8Array.of(1, 2, 3));
    } finally {
      again.close();
    }
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});

Deno.test({
  name: "TLS: openssl s_client verifies the certificate and gets its line echoed",
  ignore: skip,
  async fn() {
    await using cert = await makeTestCertificate();
    await using server = await spawnServer([
      ...["--port", "0", "--host", "127.0.0.1", "--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile],
      ...["--metrics", "127.0.0.1:0"],
    ]);
    const metricsPort = await metricsPortOf(server);
    const client = new Deno.Command("openssl", {
      args: [
        ...["s_client", "-connect", `127.0.0.1:${server.port}`, "-servername", "localhost"],
        ...["-CAfile", cert!.certFile, "-verify_return_error", "-quiet", "-no_ign_eof"],
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = client.stdin.getWriter();
    const decoder = new TextDecoder();
    let echoed = "";
    try {
      await writer.write(new TextEncoder().encode("hello over TLS\n"));
      // Read until the line comes back (bounded), then end the input: s_client closes and exits.
      const reader = client.stdout.getReader();
      await within(
        15_000,
        "the echoed line from openssl s_client",
        (async () => {
          while (!echoed.includes("hello over TLS\n")) {
            const { value, done } = await reader.read();
            if (done) break;
            echoed += decoder.decode(value, { stream: true });
          }
        })(),
      );
      reader.releaseLock();
    } finally {
      await writer.close().catch(() => {});
    }
    const status = await within(15_000, "openssl s_client to exit", client.output());
    const stderr = decoder.decode(status.stderr);
    assert.equal(echoed, "hello over TLS\n", stderr);
    assert.match(stderr, /verify return:1/, "the certificate chain verified");

    // A client killed without a TLS close_notify (what many clients do): an ordinary end, not an error.
    const killed = new Deno.Command("openssl", {
      args: ["s_client", "-connect", `127.0.0.1:${server.port}`, "-quiet", "-ign_eof"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const killedWriter = killed.stdin.getWriter();
    await killedWriter.write(new TextEncoder().encode("x\n"));
    const killedReader = killed.stdout.getReader();
    await within(15_000, "the echo to the second s_client", killedReader.read());
    killedReader.releaseLock();
    killed.kill("SIGKILL");
    await killedWriter.close().catch(() => {});
    await within(15_000, "the killed s_client", killed.output());
    await within(
      15_000,
      "the killed client's session to end",
      (async () => {
        while ((await scrape(metricsPort)).get("echosrv_connections_active") !== 0) await sleep(50);
      })(),
    );
    const samples = await scrape(metricsPort);
    assert.equal(samples.get('echosrv_errors_total{kind="unexpected"}'), 0, "no close_notify is no error");
    assert.equal(samples.get("echosrv_connections_accepted_total"), 2);
    server.signal("SIGTERM");
    assert.equal(await server.exited(), 0);
  },
});

Deno.test({
  name: "TLS: unusable certificate or key files exit 2 naming the option",
  ignore: skip,
  async fn() {
    await using cert = await makeTestCertificate();
    await using other = await makeTestCertificate();
    const cases: Array<[string[], RegExp]> = [
      [["--tls-cert", cert!.certFile], /--tls-cert.*needs --tls-key/],
      [["--tls-key", cert!.keyFile], /--tls-key.*needs --tls-cert/],
      [["--tls-cert", `${cert!.dir}/missing.pem`, "--tls-key", cert!.keyFile], /--tls-cert.*cannot read/],
      [["--tls-cert", cert!.keyFile, "--tls-key", cert!.keyFile], /--tls-cert.*no PEM certificate/],
      [["--tls-cert", cert!.certFile, "--tls-key", cert!.certFile], /--tls-key.*no PEM private key/],
      [["--tls-cert", cert!.certFile, "--tls-key", other!.keyFile], /--tls-key.*is not the key of the certificate/],
    ];
    for (const [args, message] of cases) {
      const { code, stderr } = await runEchosrv(args);
      assert.equal(code, 2, args.join(" "));
      assert.match(stderr, message, args.join(" "));
      assert.doesNotMatch(stderr, /\n\s+at /);
    }
  },
});

Deno.test({
  name: "TLS: the handshake deadline closes the TCP socket itself, and it counts against --max-connections till then",
  ignore: skip || Deno.build.os !== "linux",
  async fn() {
    await using cert = await makeTestCertificate();
    await using server = await spawnServer([
      ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--max-connections", "6"],
      ...["--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile, "--tls-handshake-timeout", "1s"],
    ]);
    const metricsPort = await metricsPortOf(server);
    // Five clients connect and say nothing: no ClientHello ever comes.
    const silent = await Promise.all(
      Array.from({ length: 5 }, () => Deno.connect({ hostname: "127.0.0.1", port: server.port })),
    );
    try {
      await sleep(300);
      assert.equal((await scrape(metricsPort)).get("echosrv_connections_active"), 5, "counted while handshaking");
      assert.equal(await serverSocketsOpen(server.port), 5);
      await sleep(2000); // the 1 s deadline, plus its sweep, plus a margin
      assert.equal(await serverSocketsOpen(server.port), 0, "the server's sockets are gone within the deadline + 1 s");
      assert.equal((await scrape(metricsPort)).get("echosrv_connections_active"), 0);
      for (const conn of silent) {
        const ended = await readAll(conn, 5_000).then(() => "end of stream", (e: Error) => e.name);
        assert.ok(["end of stream", "ConnectionReset"].includes(ended), `the client sees its connection end: ${ended}`);
      }
    } finally {
      for (const conn of silent) conn.close();
    }
    const samples = await scrape(metricsPort);
    assert.equal(samples.get('echosrv_errors_total{kind="tls_handshake"}'), 5);
  },
});

const HAVE_PYTHON = await hasCommand("python3", ["--version"]);

/** Runs tests/fixtures/latency_client.py: back-to-back 1-byte messages, each pair's echo awaited. */
async function nagleRounds(port: number, ...flags: string[]): Promise<{ rounds: number; slow: number }> {
  const out = await within(
    60_000,
    "latency_client.py",
    new Deno.Command("python3", {
      args: [new URL("./fixtures/latency_client.py", import.meta.url).pathname, "--port", `${port}`, ...flags],
      stdout: "piped",
      stderr: "piped",
    }).output(),
  );
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test({
  name: "TCP_NODELAY on every path: two small messages back to back never wait for a delayed ACK (plain, TLS, " +
    "after a PROXY header, --workers 2)",
  ignore: skip || !HAVE_PYTHON,
  async fn() {
    await using cert = await makeTestCertificate();
    const paths: Array<[string, string[], string[]]> = [
      ["plain", [], []],
      ["TLS", ["--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile], ["--tls"]],
      ["PROXY v1", ["--proxy-protocol", "--proxy-from", "127.0.0.1/32"], ["--proxy-v1"]],
      ["TLS, 2 workers", ["--workers", "2", "--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile], ["--tls"]],
    ];
    for (const [name, serverArgs, clientArgs] of paths) {
      await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", ...serverArgs]);
      const result = await nagleRounds(server.port, "--rounds", "200", ...clientArgs);
      // A delayed ACK holds a round 40 ms; a busy machine can slow a round or two past 30 ms on its own.
      assert.ok(result.slow <= 2, `${name}: ${result.slow} of ${result.rounds} rounds took over 30 ms`);
      server.signal("SIGTERM");
      await server.exited();
    }
  },
});

Deno.test({
  name: "TLS backpressure: a client that sends without reading stalls its own connection; the server stops reading",
  ignore: skip,
  async fn() {
    await using cert = await makeTestCertificate();
    await using server = await spawnServer([
      ...["--port", "0", "--host", "127.0.0.1", "--tls-cert", cert!.certFile, "--tls-key", cert!.keyFile],
    ]);
    const conn = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [cert!.cert] });
    try {
      const max = 256 * 1024 * 1024;
      const written = await writeUntilStalled(conn, max);
      // Kernel buffers on both sides, the server's 256 KiB read queue and one echo chunk: some MiB, never all of it.
      assert.ok(written < 64 * 1024 * 1024, `the client's writes stalled after ${written} bytes`);
      // Stalled, not cut: reading now, the echo flows.
      const echo = await readExactly(conn, 1024 * 1024, 10_000);
      assert.equal(echo[0], 0x61);
    } finally {
      conn.close();
    }
  },
});
