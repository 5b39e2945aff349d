// The fault control API (--fault-api, lib/faults/api.ts) and `echosrv fault ...` (lib/faults/cli.ts): listing,
// adding, changing and removing profiles, a listener's profile, the open connections with theirs; a bad request
// gets 400 and changes nothing; the token; a change with open=1 that switches every connection under a profile
// before the API answers, in one server and across --workers; the counters in /metrics.

import assert from "node:assert/strict";
import { type Family, namingViolations, parseExposition } from "./exposition.ts";
import { ROOT, runEchosrv, type ServerProcess, spawnServer, within } from "./helpers.ts";

const BASE = ["--port", "0", "-H", "127.0.0.1", "--fault-api", "127.0.0.1:0"];

/** The control API's port, from the server's log. */
async function apiPort(server: ServerProcess): Promise<number> {
  const line = await server.waitFor((r) => r.message.startsWith("serving the fault control API"), "the fault API");
  return line.properties.port as number;
}

/** The port of each --fault-listen listener, by its listener id's profile, from the log. */
function faultPorts(server: ServerProcess): number[] {
  // With --workers each worker logs its listeners ("worker 1: fault listener ..."): the first worker's lines.
  return server.records().filter((r) => /^(worker 1: )?fault listener/.test(r.message))
    .map((r) => r.properties.port as number);
}

/** One request to the API; returns the status and the JSON body. */
async function api(
  port: number,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await within(
    15_000,
    `${method} ${path}`,
    fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    }),
  );
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : {} };
}

/** A client connection that times one small echo. */
async function open(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  return conn;
}

/** The time one 4-byte echo takes on a connection, in ms. */
async function roundTrip(conn: Deno.TcpConn): Promise<number> {
  const started = performance.now();
  await conn.write(Uint8Array.of(1, 2, 3, 4));
  const buffer = new Uint8Array(4);
  for (let got = 0; got < 4;) {
    const n = await within(10_000, "an echo", conn.read(buffer.subarray(got)));
    if (n === null) throw new Error("end of stream");
    got += n;
  }
  return performance.now() - started;
}

Deno.test("fault API: list, add, change and remove profiles; a listener's profile; bad requests change nothing", async () => {
  await using server = await spawnServer([
    ...BASE,
    ...["--fault-profile", "slow: latency 200ms", "--fault-listen", "0=slow"],
  ]);
  const port = await apiPort(server);
  const [slowPort] = faultPorts(server);
  const listed = await api(port, "GET", "/faults");
  assert.equal(listed.status, 200);
  assert.equal(listed.body.generation, 1);
  assert.deepEqual(listed.body.listeners, [{ id: "main", profile: null }, { id: String(slowPort), profile: "slow" }]);
  assert.deepEqual((listed.body.profiles as Array<{ spec: string }>).map((p) => p.spec), ["latency 200ms"]);

  const added = await api(port, "PUT", "/faults/profiles/flaky", { spec: "reset after 64KiB probability 10%" });
  assert.equal(added.status, 201, JSON.stringify(added.body));
  assert.equal(added.body.generation, 2);
  const changed = await api(port, "PUT", "/faults/profiles/flaky", {
    impairments: [{ type: "close", after: "1KiB" }],
    clients: ["10.0.0.0/8"],
  });
  assert.equal(changed.status, 200, JSON.stringify(changed.body));
  assert.deepEqual((changed.body.profile as Record<string, unknown>).spec, "close after 1KiB");
  assert.deepEqual((changed.body.profile as Record<string, unknown>).clients, ["10.0.0.0/8"]);
  const bound = await api(port, "PUT", "/faults/listeners/main", { profile: "flaky" });
  assert.equal(bound.status, 200, JSON.stringify(bound.body));
  assert.equal(bound.body.generation, 4);

  // Every bad request: 400 (or 404, 405, 409) with a message, and the table stays at generation 4.
  const bad: Array<[string, string, unknown, number, RegExp]> = [
    ["PUT", "/faults/profiles/x", { spec: "loss 150%" }, 400, /must be 0 to 100%/],
    ["PUT", "/faults/profiles/x", { spec: "teleport 5ms" }, 400, /"teleport" is not an impairment/],
    ["PUT", "/faults/profiles/x", { spec: "bandwidth -3Mbit" }, 400, /"-3Mbit" is not a rate/],
    ["PUT", "/faults/profiles/x", { spec: "latency 5" }, 400, /"5" is not a duration/],
    ["PUT", "/faults/profiles/x", { spec: "latency 5ms", colour: "red" }, 400, /unknown field "colour"/],
    ["PUT", "/faults/profiles/x", "{not json", 400, /not JSON/],
    ["PUT", "/faults/profiles/x", [1, 2], 400, /must be a JSON object/],
    ["PUT", "/faults/profiles/none", { spec: "latency 5ms" }, 400, /reserved/],
    ["PUT", "/faults/profiles/x", { clients: ["10.0.0.0/8"] }, 400, /does not exist yet/],
    [
      "PUT",
      "/faults/profiles/x",
      { spec: "latency 5ms", clients: ["10.0.0.0/8"] },
      409,
      /already selects profile flaky/,
    ],
    ["PUT", "/faults/profiles/x", { spec: "latency 5ms", clients: ["10.0.0.1/8"] }, 400, /host bits set/],
    ["PUT", "/faults/profiles/slow?open=maybe", { spec: "latency 5ms" }, 400, /open=maybe/],
    ["PUT", "/faults/listeners/main", { profile: "nope" }, 400, /no profile named nope/],
    ["PUT", "/faults/listeners/40999", { profile: "slow" }, 404, /no listener 40999/],
    ["DELETE", "/faults/profiles/nope", undefined, 404, /no profile named nope/],
    ["POST", "/faults/profiles/slow", { spec: "latency 5ms" }, 405, /not allowed/],
    ["GET", "/elsewhere", undefined, 404, /under \/faults/],
  ];
  for (const [method, path, body, status, message] of bad) {
    const answer = await api(port, method, path, body);
    assert.equal(answer.status, status, `${method} ${path}: ${JSON.stringify(answer.body)}`);
    assert.match(String(answer.body.error), message, `${method} ${path}`);
  }
  assert.equal((await api(port, "GET", "/faults")).body.generation, 4);

  const removed = await api(port, "DELETE", "/faults/profiles/flaky");
  assert.equal(removed.status, 200);
  assert.deepEqual(removed.body.unbound, ["main"]);
  const after = await api(port, "GET", "/faults");
  assert.equal(after.body.generation, 5);
  assert.deepEqual((after.body.profiles as Array<{ name: string }>).map((p) => p.name), ["slow"]);
});

Deno.test("fault API: a token, when set, is required; a wrong one gets 401", async () => {
  const token = "s3cret-token-for-tests";
  await using server = await spawnServer([...BASE], { env: { ECHOSRV_FAULT_API_TOKEN: token } });
  const port = await apiPort(server);
  const none = await api(port, "GET", "/faults");
  assert.equal(none.status, 401);
  const wrong = await api(port, "GET", "/faults", undefined, { authorization: "Bearer wrong-token-here" });
  assert.equal(wrong.status, 401);
  const right = await api(port, "GET", "/faults", undefined, { authorization: `Bearer ${token}` });
  assert.equal(right.status, 200);
});

/**
 * The switch of a running table: connections under a profile of none (a faithful echo, switchable), one plain
 * connection on a listener without a profile; a change with open=1 answers once every one of them is switched.
 */
async function switchEveryConnection(workers: number, connections: number): Promise<void> {
  await using server = await spawnServer([
    ...BASE,
    ...["--workers", String(workers)],
    ...["--fault-profile", "ready: none", "--fault-listen", "main=ready", "--fault-listen", "0=none"],
  ], { defaultWorkers: true });
  const port = await apiPort(server);
  const [plainPort] = faultPorts(server);
  const conns = await Promise.all(Array.from({ length: connections }, () => open(server.port)));
  const plain = await open(plainPort);
  try {
    for (const conn of [...conns, plain]) assert.ok(await roundTrip(conn) < 100);
    const switched = await api(port, "PUT", "/faults/profiles/ready?open=1", { spec: "latency 300ms" });
    assert.equal(switched.status, 200, JSON.stringify(switched.body));
    assert.deepEqual([switched.body.generation, switched.body.switched, switched.body.unswitchable], [
      2,
      connections,
      0,
    ]);
    // From the answer on, every connection under the profile, old and new, is impaired; the plain one is not.
    const fresh = await open(server.port);
    conns.push(fresh);
    const times = await Promise.all(conns.map(roundTrip));
    assert.ok(times.every((ms) => ms >= 299), `round trips after the switch: ${times.map(Math.round)}`);
    assert.ok(await roundTrip(plain) < 100);
    const listing = await api(port, "GET", "/faults/connections");
    const list = listing.body.connections as Array<Record<string, unknown>>;
    assert.equal(list.length, connections + 2, JSON.stringify(list));
    const under = list.filter((c) => c.profile === "ready");
    assert.equal(under.length, connections + 1);
    assert.ok(under.every((c) => c.generation === 2 && c.listener === "main"), JSON.stringify(under));
    const plainListed = list.filter((c) => c.profile === null);
    assert.deepEqual(plainListed.map((c) => [c.state, c.listener]), [["plain", String(plainPort)]]);
    if (workers > 1) {
      const serving = new Set(list.map((c) => c.worker));
      assert.ok(serving.size > 1, `the connections were spread over the workers: ${[...serving]}`);
    }
    // The plain listener put under the profile: its open connection cannot follow, and the answer says so.
    const bound = await api(port, "PUT", `/faults/listeners/${plainPort}?open=1`, { profile: "ready" });
    assert.deepEqual([bound.body.generation, bound.body.unswitchable], [3, 1], JSON.stringify(bound.body));
  } finally {
    for (const conn of [...conns, plain]) conn.close();
  }
}

Deno.test("fault API: open=1 switches every connection under a profile before it answers (one loop)", async () => {
  await switchEveryConnection(1, 6);
});

Deno.test({
  name: "fault API: open=1 reaches every worker before it answers (--workers 2)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // 16 connections: the kernel's SO_REUSEPORT hash puts them all on one worker once in 2^15.
    await switchEveryConnection(2, 16);
  },
});

Deno.test("/metrics: connections and bytes by profile and impairment, named by Prometheus's rules", async () => {
  await using server = await spawnServer([
    ...BASE,
    ...["--metrics", "127.0.0.1:0", "--workers", "1"],
    ...["--fault-profile", "slowish: latency 10ms, close after 100", "--fault-listen", "main=slowish"],
    ...["--fault-profile", "idle: loss 10%"],
  ]);
  const metricsLine = await server.waitFor((r) => r.message.startsWith("serving metrics on"), "metrics");
  for (let i = 0; i < 3; i++) {
    const conn = await open(server.port);
    await conn.write(new Uint8Array(150));
    const buffer = new Uint8Array(256);
    let got = 0;
    for (;;) {
      const n = await within(10_000, "the echo", conn.read(buffer));
      if (n === null) break;
      got += n;
    }
    assert.equal(got, 100);
    conn.close();
  }
  const response = await fetch(`http://127.0.0.1:${metricsLine.properties.port}/metrics`);
  const families = parseExposition(await response.text());
  assert.deepEqual(namingViolations(families), []);
  const value = (name: string, labels: Record<string, string>) => {
    const family = families.find((f: Family) => f.name === name);
    return family?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
  };
  assert.equal(value("echosrv_fault_table_generation", {}), 1);
  assert.equal(value("echosrv_fault_connections_total", { profile: "slowish" }), 3);
  assert.equal(value("echosrv_fault_echoed_bytes_total", { profile: "slowish" }), 300);
  assert.equal(value("echosrv_fault_impaired_connections_total", { profile: "slowish", impairment: "close" }), 3);
  assert.equal(value("echosrv_fault_impaired_bytes_total", { profile: "slowish", impairment: "latency" }), 300);
  assert.equal(value("echosrv_fault_events_total", { profile: "slowish", impairment: "close" }), 3);
  // A profile no connection has used yet is there at 0.
  assert.equal(value("echosrv_fault_connections_total", { profile: "idle" }), 0);
  assert.equal(value("echosrv_fault_events_total", { profile: "idle", impairment: "loss" }), 0);
});

Deno.test("echosrv fault: list, set, listener, connections, remove; bad requests exit 2, an unreachable API 1", async () => {
  await using server = await spawnServer([...BASE, "--fault-profile", "slow: latency 100ms"]);
  const port = String(await apiPort(server));
  const fault = (...args: string[]) => runEchosrv(["fault", ...args, "--api", port]);
  const listed = await fault("list");
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^generation 1, seed \d+$/m);
  assert.match(listed.stdout, /^slow\s+-\s+-\s+latency 100ms$/m);
  assert.match(listed.stdout, /^main\s+none$/m);
  const set = await fault("set", "flaky", "reset", "after", "1KiB,", "latency", "5ms", "--clients", "192.0.2.0/24");
  assert.equal(set.code, 0, set.stderr);
  assert.equal(set.stdout, "profile flaky added: reset after 1KiB, latency 5ms (generation 2)\n");
  const bound = await fault("listener", "main", "slow", "--open");
  assert.equal(bound.code, 0, bound.stderr);
  assert.equal(bound.stdout, "listener main: profile slow (generation 3; 0 open connection(s) switched)\n");
  const conn = await open(server.port);
  try {
    assert.ok(await roundTrip(conn) >= 99);
    const connections = await fault("connections");
    assert.equal(connections.code, 0, connections.stderr);
    assert.match(connections.stdout, /^127\.0\.0\.1:\d+\s+main\s+slow\s+3\s+echoing\s+latency\s+4\s+0\s+/m);
  } finally {
    conn.close();
  }
  const json = await fault("list", "--json");
  assert.equal(JSON.parse(json.stdout).generation, 3);
  const bad = await fault("set", "x", "latency", "5");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^echosrv: latency: "5" is not a duration/);
  const missing = await fault("remove", "nope");
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no profile named nope/);
  const removed = await fault("remove", "slow");
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(removed.stdout, "profile slow removed (generation 4); listener(s) main now have no profile\n");
  const unreachable = await runEchosrv(["fault", "list", "--api", "127.0.0.1:1"]);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /cannot reach the fault API at http:\/\/127\.0\.0\.1:1/);
  const noVerb = await runEchosrv(["fault"]);
  assert.equal(noVerb.code, 2);
  assert.match(noVerb.stderr, /name what to do: list, set, remove, listener or connections/);
});

Deno.test("README: the `deno task start fault ...` lines of `echosrv fault` run from source as shown", async () => {
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  const start = readme.indexOf("### `echosrv fault`");
  const section = readme.slice(start, readme.indexOf("\n### ", start + 1));
  const lines = section.split("\n").filter((line) => line.startsWith("deno task start fault "));
  assert.ok(lines.length >= 3, "the section shows how to run `echosrv fault` from source");
  await using server = await spawnServer(BASE);
  const port = await apiPort(server);
  for (const line of lines) {
    // As a shell splits it; the API's address from the variable the README names, since the lines use the default.
    const out = await within(
      60_000,
      line,
      new Deno.Command(Deno.execPath(), {
        args: ["task", ...line.split(/\s+/).slice(2)],
        cwd: ROOT,
        stdin: "null",
        env: { NO_COLOR: "1", ECHOSRV_FAULT_API: `127.0.0.1:${port}` },
      }).output(),
    );
    const [stdout, stderr] = [out.stdout, out.stderr].map((bytes) => new TextDecoder().decode(bytes));
    assert.equal(out.code, 0, `${line}: ${stderr}`);
    assert.notEqual(stdout, "", line);
  }
});
