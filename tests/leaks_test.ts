// Leak detection. Deno's test sanitizers (ops: pending reads, writes, timers; resources: sockets, files) catch a test
// that leaves something behind, but since Deno 2.8 they are off unless asked for: deno.json turns them on for
// every test. This file keeps it that way (the setting stays, no test turns them off without saying why on the
// same line, and a leaking canary really fails), and uses them on the server itself: every kind of stress session,
// resets and stalls included, against an in-process server that is then stopped, must leave nothing behind.

import assert from "node:assert/strict";
import type { CopyStrategy, ServerConfig } from "../lib/config.ts";
import { loadTlsFiles } from "../lib/tls.ts";
import { KINDS, type PlanLimits, planSession } from "../stress/kinds.ts";
import { endingOf, SessionContext, type Transport } from "../stress/session.ts";
import { havePython } from "../stress/rcvbuf_peer.ts";
import { EchoServer } from "../lib/server.ts";
import {
  cannotRun,
  CLIENT_RESET,
  hasCommand,
  makeTestCertificate,
  ROOT,
  testConfig,
  underWine,
  within,
  withServer,
} from "./helpers.ts";

Deno.test("deno.json turns the ops and resources sanitizers on, and a leaking test really fails", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  assert.deepEqual(config.test, { ...config.test, sanitizeOps: true, sanitizeResources: true });
  const canary = await Deno.makeTempFile({ prefix: "leak_canary_", suffix: "_test.ts" });
  try {
    await Deno.writeTextFile(canary, 'Deno.test("leaks a timer", () => void setTimeout(() => {}, 60_000));\n');
    const out = await within(
      60_000,
      "the canary test run",
      new Deno.Command(Deno.execPath(), {
        args: ["test", "--config", `${ROOT}deno.json`, canary],
        env: { NO_COLOR: "1" },
        stdin: "null",
      }).output(),
    );
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.success, false, text);
    assert.match(text, /Leaks detected/);
  } finally {
    await Deno.remove(canary);
  }
});

Deno.test("no test turns Deno's leak sanitizers off without a reason on the same line", async () => {
  const offenders: string[] = [];
  let files = 0;
  for await (const entry of Deno.readDir(`${ROOT}tests`)) {
    if (!entry.name.endsWith(".ts")) continue;
    files++;
    const lines = (await Deno.readTextFile(`${ROOT}tests/${entry.name}`)).split("\n");
    lines.forEach((line, i) => {
      const off = /sanitize(Ops|Resources|Exit)\s*:\s*false/.test(line) ||
        /\.sanitizer\(\s*\{[^}]*(ops|resources)\s*:\s*false/.test(line);
      if (off && !/\/\/ sanitizer off: \S/.test(line)) {
        offenders.push(`tests/${entry.name}:${i + 1}: ${line.trim()}`);
      }
    });
  }
  assert.ok(files >= 5, `read the test files (${files})`);
  assert.deepEqual(offenders, [], "write `// sanitizer off: <why>` on the line, or keep the sanitizers on");
});

const LIMITS: PlanLimits = {
  maxSize: 4 * 1024 * 1024,
  idleTimeoutMs: 1000,
  sendTimeoutMs: 1000,
  byteLimit: 64 * 1024,
  ageLimitMs: 2000,
  baseDeadlineMs: 30_000,
};
const PYTHON = await havePython();

/**
 * Every kind, three sessions each, against an in-process server configured by `overrides` (and, as the swarm has
 * them, one with a short send timeout, one with a byte limit and one with an age limit for the kinds that use
 * those); all must end as planned.
 */
async function everyKind(overrides: Partial<ServerConfig>, transport?: Transport): Promise<void> {
  const servers = {
    send: new EchoServer(testConfig({ sendTimeoutMs: LIMITS.sendTimeoutMs, ...overrides })),
    bytes: new EchoServer(testConfig({ maxBytesPerConnection: LIMITS.byteLimit, ...overrides })),
    age: new EchoServer(testConfig({ maxConnectionDurationMs: LIMITS.ageLimitMs, ...overrides })),
  };
  const at = async (server: EchoServer) => ({ hostname: "127.0.0.1", port: (await server.start()).port });
  const side = { send: await at(servers.send), bytes: await at(servers.bytes), age: await at(servers.age) };
  try {
    await kindsAgainst(overrides, side, transport);
    for (const s of Object.values(servers)) assert.equal(s.counters.unexpectedErrors, 0);
  } finally {
    await within(15_000, "the side servers to stop", Promise.all(Object.values(servers).map((s) => s.stop(0))));
  }
}

async function kindsAgainst(
  overrides: Partial<ServerConfig>,
  side: Record<"send" | "bytes" | "age", { hostname: string; port: number }>,
  transport?: Transport,
): Promise<void> {
  await withServer({ idleTimeoutMs: LIMITS.idleTimeoutMs, ...overrides }, async (port, server) => {
    const env = {
      targets: { echo: { hostname: "127.0.0.1", port }, idle: { hostname: "127.0.0.1", port }, ...side },
      idleTimeoutMs: LIMITS.idleTimeoutMs,
      stopMode: false,
      transport,
    };
    // The Python client of byte-limit-rcvbuf speaks plain TCP (or a PROXY header) only.
    const runnable = Object.keys(KINDS).filter((kind) =>
      kind !== "byte-limit-rcvbuf" || (PYTHON && transport?.tlsCaCert === undefined)
    );
    const sessions = runnable.flatMap((kind) => {
      const only = Object.fromEntries(Object.keys(KINDS).map((k) => [k, k === kind ? 1 : 0]));
      return [1, 2, 3].map((n) => planSession(0x1eac, n, only, LIMITS));
    });
    const endings = await within(
      120_000,
      "the sessions to end",
      Promise.all(sessions.map(async (plan) => {
        const ctx = new SessionContext(env, plan.deadlineMs);
        let error: unknown;
        try {
          await KINDS[plan.kind].run(plan, ctx);
        } catch (e) {
          error = e;
        } finally {
          ctx.dispose();
        }
        return `${plan.kind} ${plan.n}: ${endingOf(error, ctx)}${error ? ` (${error})` : ""}`;
      })),
    );
    assert.deepEqual(endings.filter((e) => !e.endsWith(": ok")), [], "every session ended as planned");
    const own = sessions.filter((plan) => ["echo", "idle"].includes(KINDS[plan.kind].target));
    assert.ok(server.counters.accepted >= own.length);
    assert.equal(server.counters.unexpectedErrors, 0);
    assert.equal(
      server.counters.tlsHandshakeErrors + server.counters.refusedProxyHeader,
      0,
      "every client was admitted",
    );
  });
}

for (const copy of ["loop", "pipe"] satisfies CopyStrategy[]) {
  Deno.test(`[${copy}] every stress session kind against an in-process server leaves no op, resource or timer`, {
    ignore: cannotRun("the stress session kinds against an in-process server", underWine(CLIENT_RESET)),
  }, async () => {
    await everyKind({ copy });
  });
}

Deno.test("every stress session kind after a PROXY header (v1 and v2) leaves no op, resource or timer", {
  ignore: cannotRun("the stress session kinds after a PROXY header", underWine(CLIENT_RESET)),
}, async () => {
  await everyKind(
    { proxyProtocol: { from: ["127.0.0.1/32"], timeoutMs: 5000 } },
    { proxyHeader: true },
  );
});

const openssl = await hasCommand("openssl");
if (!openssl) console.log("SKIPPED leaks_test.ts over TLS: openssl is not installed, so no certificate can be made");

Deno.test({
  name: "every stress session kind over TLS leaves no op, resource or timer, on either side",
  ignore: !openssl,
  async fn() {
    await using cert = await makeTestCertificate();
    await everyKind({ tls: loadTlsFiles(cert!.certFile, cert!.keyFile) }, { tlsCaCert: cert!.cert });
  },
});
