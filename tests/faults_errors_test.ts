// What the fault control API, `echosrv fault` and the --fault-* options say when something is wrong, as a newcomer
// trying the README meets it: a token that is missing is told apart from one that is wrong (RFC 6750 §3.1: a
// challenge without an error code, or error="invalid_token"), by the API and by `echosrv fault`, which says how to
// set the token; an address where nothing listens is explained as `echosrv stats` explains it; and an option whose
// value came from an ECHOSRV_* variable is named with that variable, as commander names one with a bad value (the
// --fault-* options, and the other options checked once read: TLS files, the PROXY protocol). echosrv runs as
// `deno task start` runs it, on loopback, port 0.

import assert from "node:assert/strict";
import { freePort, runEchosrv, type ServerProcess, spawnServer, within } from "./helpers.ts";

const TOKEN = "s3cret-token-for-tests";

/** The control API's port, from the server's log. */
async function apiPort(server: ServerProcess): Promise<number> {
  const line = await server.waitFor((r) => r.message.startsWith("serving the fault control API"), "the fault API");
  return line.properties.port as number;
}

/** GET /faults with these headers: the status, the challenge, and the error message of the JSON body. */
async function getFaults(port: number, headers: Record<string, string> = {}) {
  const response = await within(15_000, "GET /faults", fetch(`http://127.0.0.1:${port}/faults`, { headers }));
  const body = await response.json() as { error?: string };
  return { status: response.status, challenge: response.headers.get("www-authenticate"), error: body.error };
}

Deno.test("fault API: no token, another scheme, a wrong token and a malformed header are told apart (RFC 6750 §3.1)", async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--fault-api", "127.0.0.1:0"], {
    env: { ECHOSRV_FAULT_API_TOKEN: TOKEN },
  });
  const port = await apiPort(server);

  // No credentials (or credentials of a scheme the API does not take): a challenge, and no error code.
  for (const headers of [{}, { authorization: "Basic dXNlcjpwYXNz" }] as Record<string, string>[]) {
    const none = await getFaults(port, headers);
    assert.equal(none.status, 401, JSON.stringify(headers));
    assert.equal(none.challenge, 'Bearer realm="echosrv faults"', JSON.stringify(headers));
    assert.match(none.error ?? "", /^no token was sent/, JSON.stringify(headers));
    assert.match(none.error ?? "", /Authorization: Bearer/);
  }

  // A token, but not the one echosrv was started with.
  const wrong = await getFaults(port, { authorization: "Bearer wrongtoken1" });
  assert.equal(wrong.status, 401);
  assert.match(wrong.challenge ?? "", /^Bearer realm="echosrv faults", error="invalid_token"/);
  assert.match(wrong.error ?? "", /^the token was not accepted/);
  assert.doesNotMatch(wrong.error ?? "", /wrongtoken1/, "the answer does not echo the token back");

  // "Bearer" with no token, or with two: a malformed request (400, invalid_request).
  for (const authorization of ["Bearer", "Bearer two words"]) {
    const malformed = await getFaults(port, { authorization });
    assert.equal(malformed.status, 400, authorization);
    assert.match(malformed.challenge ?? "", /error="invalid_request"/, authorization);
    assert.match(malformed.error ?? "", /Authorization: Bearer TOKEN/, authorization);
  }

  const right = await getFaults(port, { authorization: `Bearer ${TOKEN}` });
  assert.equal(right.status, 200);
  const scheme = await getFaults(port, { authorization: `bearer ${TOKEN}` }); // the scheme is case-insensitive
  assert.equal(scheme.status, 200);
});

Deno.test("echosrv fault: a missing token and a wrong one (from --token or the variable) each say what to do, exit 1", async () => {
  await using server = await spawnServer(["--port", "0", "-H", "127.0.0.1", "--fault-api", "127.0.0.1:0"], {
    env: { ECHOSRV_FAULT_API_TOKEN: TOKEN },
  });
  const api = String(await apiPort(server));
  const base = `http://127.0.0.1:${api}`;

  const none = await runEchosrv(["fault", "list", "--api", api]);
  assert.equal(none.code, 1, none.stderr);
  assert.equal(
    none.stderr,
    `echosrv: the fault API at ${base} requires a token, and none was sent: give the token echosrv was started ` +
      "with (--token TOKEN or ECHOSRV_FAULT_API_TOKEN=TOKEN)\n",
  );
  assert.equal(none.stdout, "");
  // An empty token (`--token "$TOKEN"` with TOKEN unset) is no token, not a malformed header.
  const empty = await runEchosrv(["fault", "list", "--api", api, "--token", ""]);
  assert.equal([empty.code, empty.stderr].join(" "), [1, none.stderr].join(" "));

  const fromVariable = await runEchosrv(["fault", "list", "--api", api], { ECHOSRV_FAULT_API_TOKEN: "wrongtoken1" });
  assert.equal(fromVariable.code, 1, fromVariable.stderr);
  assert.equal(
    fromVariable.stderr,
    `echosrv: the fault API at ${base} did not accept the token from ECHOSRV_FAULT_API_TOKEN: give the token ` +
      "echosrv was started with (--token TOKEN or ECHOSRV_FAULT_API_TOKEN=TOKEN)\n",
  );

  const fromOption = await runEchosrv(["fault", "list", "--api", api, "--token", "wrongtoken1"]);
  assert.equal(fromOption.code, 1, fromOption.stderr);
  assert.equal(
    fromOption.stderr,
    `echosrv: the fault API at ${base} did not accept the token from --token: give the token echosrv was started ` +
      "with (--token TOKEN or ECHOSRV_FAULT_API_TOKEN=TOKEN)\n",
  );

  const right = await runEchosrv(["fault", "list", "--api", api], { ECHOSRV_FAULT_API_TOKEN: TOKEN });
  assert.equal(right.code, 0, right.stderr);
  assert.match(right.stdout, /^generation 1, seed \d+$/m);
});

Deno.test("echosrv fault: nothing listening at --api says so, as `echosrv stats` does, exit 1", async () => {
  const port = freePort(); // just closed: nothing listens there
  const result = await runEchosrv(["fault", "list", "--api", `127.0.0.1:${port}`]);
  assert.equal(result.code, 1, result.stderr);
  assert.equal(
    result.stderr,
    `echosrv: cannot reach the fault API at http://127.0.0.1:${port}: connection refused (nothing listens there) ` +
      `(is echosrv running with --fault-api 127.0.0.1:${port}?)\n`,
  );
  const stats = await runEchosrv(["stats", "--metrics-url", `127.0.0.1:${port}`, "--count", "1"]);
  assert.match(stats.stderr, /: connection refused \(nothing listens there\) /, "the same words as echosrv stats");
});

Deno.test("an option error names the ECHOSRV_* variable its value came from, and the option when it was a flag", async () => {
  const cases: Array<[string[], Record<string, string>, string]> = [
    [
      [],
      { ECHOSRV_FAULT_API: "0.0.0.0:9408" },
      "option '--fault-api <host:port>' value '0.0.0.0:9408' from env " +
      "'ECHOSRV_FAULT_API': the control API changes how echosrv answers; off loopback it needs a token " +
      "(ECHOSRV_FAULT_API_TOKEN=... or --fault-api-token)",
    ],
    [
      ["--fault-api", "0.0.0.0:9408"],
      {},
      "option '--fault-api 0.0.0.0:9408': the control API changes how echosrv " +
      "answers; off loopback it needs a token (ECHOSRV_FAULT_API_TOKEN=... or --fault-api-token)",
    ],
    [
      [],
      { ECHOSRV_FAULT_LISTEN: "0=nope" },
      "option '--fault-listen <listener=profile>' value '0=nope' from env " +
      "'ECHOSRV_FAULT_LISTEN': no profile named nope (no profile is defined: use --fault-profile)",
    ],
    [
      ["--fault-listen", "0=nope"],
      {},
      "option '--fault-listen 0=nope': no profile named nope (no profile is " +
      "defined: use --fault-profile)",
    ],
    [
      ["--fault-profile", "slow: latency 1ms"],
      { ECHOSRV_FAULT_CLIENT: "10.0.0.0/8=fast" },
      "option '--fault-client " +
      "<cidr=profile>' value '10.0.0.0/8=fast' from env 'ECHOSRV_FAULT_CLIENT': no profile named fast (the profiles: " +
      "slow)",
    ],
    [
      [],
      { ECHOSRV_TLS_CERT: "/nonexistent/cert.pem" },
      "option '--tls-cert <file>' value '/nonexistent/cert.pem' " +
      "from env 'ECHOSRV_TLS_CERT' needs --tls-key <file> as well",
    ],
    [["--tls-cert", "/nonexistent/cert.pem"], {}, "option '--tls-cert <file>' needs --tls-key <file> as well"],
    [
      [],
      { ECHOSRV_PROXY_FROM: "10.0.0.5" },
      "option '--proxy-from <cidr>' value '10.0.0.5' from env " +
      "'ECHOSRV_PROXY_FROM' has no effect without --proxy-protocol",
    ],
    [
      [],
      { ECHOSRV_PROXY_PROTOCOL: "1" },
      "option '--proxy-protocol' value '1' from env 'ECHOSRV_PROXY_PROTOCOL' " +
      "needs --proxy-from <cidr>",
    ],
  ];
  for (const [args, env, message] of cases) {
    const what = `${args.join(" ")} ${JSON.stringify(env)}`;
    const { code, stderr } = await runEchosrv(["--port", "0", "-H", "127.0.0.1", ...args], env);
    assert.equal(code, 2, `${what}: ${stderr}`);
    assert.ok(stderr.startsWith(`echosrv: error: ${message}`), `${what}:\n${stderr}`);
  }
  // A TLS file from the environment that cannot be read: the variable, then the file's problem.
  const files = await runEchosrv(["--port", "0", "-H", "127.0.0.1"], {
    ECHOSRV_TLS_CERT: "/nonexistent/cert.pem",
    ECHOSRV_TLS_KEY: "/nonexistent/key.pem",
  });
  assert.equal(files.code, 2, files.stderr);
  assert.match(
    files.stderr,
    /^echosrv: error: option '--tls-cert <file>' value '\/nonexistent\/cert\.pem' from env 'ECHOSRV_TLS_CERT': cannot read/,
  );
});
