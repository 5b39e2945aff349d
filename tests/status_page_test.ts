// The live status page at GET / of the --metrics listener: its files and /status.json over HTTP (the counts are
// /metrics' counts), the history's rates, and the page itself in a real headless Chromium: it loads with no console
// error, requests nothing but echosrv, its numbers and charts move while a client echoes, it shows a stop as
// "draining", and it fits a phone's width. Screenshots are kept in tests/artifacts/ (ignored by git); with
// ECHOSRV_DOCS_SCREENSHOT=1 the test also runs a minute of varying load and writes the README's docs/status-page.png.

import assert from "node:assert/strict";
import { History, statusInfoOf } from "../lib/status_page.ts";
import { emptyCounters } from "../lib/counters.ts";
import { parseCommandLine } from "../lib/options.ts";
import { Chromium, findChromium, type Page } from "./browser.ts";
import {
  echoSession,
  metricsPortOf,
  readExactly,
  ROOT,
  scrape,
  SIGTERM_EXIT_CODE,
  spawnServer,
  within,
  writeAll,
} from "./helpers.ts";

const chromium = await findChromium();
if ("missing" in chromium) console.log(`status page browser test skipped: ${chromium.missing}`);

/** Where the screenshots go (ignored by git; CI can keep them as artifacts). */
const ARTIFACTS = `${ROOT}tests/artifacts`;

async function get(url: string): Promise<Response> {
  return await within(10_000, `GET ${url}`, fetch(url));
}

Deno.test("GET / serves the page and its files from echosrv itself, with a policy that forbids anything else", async () => {
  await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0"]);
  const base = `http://127.0.0.1:${await metricsPortOf(server)}`;
  const page = await get(`${base}/`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  const policy = page.headers.get("content-security-policy") ?? "";
  assert.match(policy, /default-src 'none'/);
  assert.match(policy, /connect-src 'self'/);
  const html = await page.text();
  // Nothing in the page points elsewhere: no scheme-qualified URL but the SVG namespace.
  for (const url of html.match(/\b[a-z]+:\/\/[^\s"'<>]+/g) ?? []) assert.fail(`the page refers to ${url}`);
  for (const asset of ["status.css", "status.js"]) {
    assert.ok(html.includes(`"${asset}"`), asset);
    const response = await get(`${base}/${asset}`);
    assert.equal(response.status, 200, asset);
    const text = await response.text();
    for (const url of text.match(/\b(?:https?|wss?):\/\/[^\s"'`]+/g) ?? []) {
      assert.ok(url.startsWith("http://www.w3.org/2000/svg"), `${asset} refers to ${url}`);
    }
  }
  const post = await within(10_000, "POST /", fetch(`${base}/`, { method: "POST", body: "x" }));
  await post.body?.cancel();
  assert.equal(post.status, 405);
  const missing = await get(`${base}/nothing`);
  assert.match(await missing.text(), /try \/, \/metrics/);
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("/status.json: the counts /metrics has, the limits in force, and a history that fills once a second", async () => {
  await using server = await spawnServer([
    ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--udp"],
    ...[
      "--max-connections",
      "50",
      "--idle-timeout",
      "90s",
      "--deny",
      "192.0.2.0/24",
      "--max-bytes-per-connection",
      "1MB",
      "--send-timeout",
      "2m",
    ],
  ]);
  const port = await metricsPortOf(server);
  await echoSession("127.0.0.1", server.port, new Uint8Array(3000));
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const status = await (await get(`http://127.0.0.1:${port}/status.json`)).json();
  const samples = await scrape(port);
  assert.equal(status.state, "serving");
  assert.equal(status.current.accepted, samples.get("echosrv_connections_accepted_total"));
  assert.equal(status.current.echoedBytes, samples.get("echosrv_echoed_bytes_total"));
  assert.equal(status.current.echoedBytes, 3000);
  assert.deepEqual(Object.keys(status.rejected).sort(), [
    "access_rule",
    "cap",
    "per_client_cap",
    "proxy_header",
    "proxy_timeout",
    "proxy_untrusted",
  ]);
  assert.equal(status.info.port, server.port);
  assert.equal(status.info.workers, 1);
  assert.deepEqual(status.info.features, { tls: false, udp: true, proxyProtocol: false });
  const limits = Object.fromEntries(status.info.limits);
  assert.equal(limits["max connections"], "50");
  assert.equal(limits["idle timeout"], "90s");
  assert.equal(limits["deny"], "192.0.2.0/24");
  assert.equal(limits["send timeout"], "2m");
  assert.equal(limits["max bytes per connection"], "1MB", "as the option was written, not 1000000");
  assert.equal(limits["UDP rate"], "100");
  // The same limits as numbers, for scripts: counts, bytes, milliseconds.
  assert.equal(status.info.limitValues.maxConnections, 50);
  assert.equal(status.info.limitValues.idleTimeoutMs, 90_000);
  assert.equal(status.info.limitValues.sendTimeoutMs, 120_000);
  assert.equal(status.info.limitValues.maxBytesPerConnection, 1_000_000);
  assert.equal(status.info.limitValues.maxConnectionDurationMs, 0, "off");
  assert.ok(status.history.length >= 1 && status.history.length <= 4, `${status.history.length} points in 2.5 s`);
  assert.ok(status.uptimeSeconds > 0 && status.uptimeSeconds < 120);
  // ?since= sends only the newer points.
  const last = status.history.at(-1).t;
  const newer = await (await get(`http://127.0.0.1:${port}/status.json?since=${last}`)).json();
  assert.ok(newer.history.every((p: { t: number }) => p.t > last));
  server.signal("SIGTERM");
  assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
});

Deno.test("History: rates in bit/s and connections/s between readings, five minutes kept, never negative", () => {
  const history = new History(3);
  const reading = (bytes: number, accepted: number, connectionsActive = 0) => ({
    connectionsActive,
    bytesEchoed: bytes,
    draining: false,
    counters: { ...emptyCounters(), accepted },
  });
  const latest = () => history.latest;
  history.record(reading(0, 0), 1000);
  assert.equal(latest(), undefined, "the first reading is only a baseline");
  history.record(reading(125_000, 10, 3), 2000);
  assert.deepEqual(latest(), {
    t: 2000,
    connections: 3,
    bitsPerSecond: 1_000_000,
    connectionsPerSecond: 10,
    udpBitsPerSecond: 0,
  });
  history.record(reading(125_000, 10), 2500);
  assert.equal(latest()?.bitsPerSecond, 0);
  history.record(reading(100, 5), 3500); // counters that went down (a worker lost): 0, not negative
  assert.equal(latest()?.bitsPerSecond, 0);
  assert.equal(latest()?.connectionsPerSecond, 0);
  history.record(reading(200, 5), 4500);
  assert.deepEqual(history.since().map((p) => p.t), [2500, 3500, 4500], "only the last 3 kept");
  assert.deepEqual(history.since(3500).map((p) => p.t), [4500]);
});

Deno.test("statusInfoOf: the limits as the options write them, off ones said so", () => {
  const info = (args: string[]) => {
    const parsed = parseCommandLine(["--port", "0", ...args], { out: () => {}, err: () => {} });
    assert.equal(parsed.kind, "run");
    if (parsed.kind !== "run") throw new Error("not a run");
    return statusInfoOf(parsed.config, 4242, 1);
  };
  const off = Object.fromEntries(info(["--max-connections", "0", "--idle-timeout", "0", "--send-timeout", "0"]).limits);
  assert.equal(off["max connections"], "unlimited");
  assert.equal(off["idle timeout"], "never");
  assert.equal(off["send timeout"], "never");
  assert.equal(off["max bytes per connection"], "unlimited");
  assert.equal(off["max connection duration"], "unlimited");
  assert.equal(off["shutdown timeout"], "10s");
  assert.equal(off["allow"], "everyone");
  const on = info([
    ...["--max-bytes-per-connection", "65536", "--max-connection-duration", "90min", "--max-connections-per-ip", "4"],
    ...["--proxy-protocol", "--proxy-from", "10.0.0.0/8", "--proxy-timeout", "1500ms"],
  ]);
  const limits = Object.fromEntries(on.limits);
  assert.equal(limits["send timeout"], "5m", "the default send timeout is shown");
  assert.equal(limits["max bytes per connection"], "64KiB", "a size as the options write it, not 65536");
  assert.equal(limits["max connection duration"], "90m");
  assert.equal(limits["max connections per IP"], "4");
  assert.equal(limits["proxy timeout"], "1500ms");
  assert.deepEqual(on.limitValues, {
    maxConnections: 10000,
    maxConnectionsPerIp: 4,
    idleTimeoutMs: 300_000,
    sendTimeoutMs: 300_000,
    maxBytesPerConnection: 65536,
    maxConnectionDurationMs: 5_400_000,
    proxyTimeoutMs: 1500,
    shutdownTimeoutMs: 10_000,
  });
});

/** The numbers the page shows, read from its DOM. */
function shown(page: Page): Promise<Record<string, string>> {
  return page.evaluate(`Object.fromEntries([...document.querySelectorAll("[data-field]")]
    .map((e) => [e.dataset.field, e.textContent]))`);
}

/** Echoes 64 KiB chunks over one connection until `stop` resolves (at most 120 s); returns the bytes echoed. */
async function echoUntil(
  port: number,
  stop: Promise<void>,
  pauseMs: () => number = () => 2,
): Promise<{ conn: Deno.TcpConn; done: Promise<number> }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunk = new Uint8Array(64 * 1024).fill(7);
  let stopped = false;
  stop.then(() => stopped = true);
  const done = (async () => {
    let echoed = 0;
    const until = Date.now() + 120_000;
    while (!stopped && Date.now() < until) {
      await writeAll(conn, chunk);
      await readExactly(conn, chunk.length);
      echoed += chunk.length;
      await new Promise((resolve) => setTimeout(resolve, pauseMs())); // a steady stream, not a flood
    }
    return echoed;
  })();
  return { conn, done };
}

/**
 * For the README's picture (ECHOSRV_DOCS_SCREENSHOT=1): a minute of load that rises and falls, so the charts have
 * something to show. Short sessions arrive at 1 to 7 a second; the streaming client's pace varies.
 */
async function varyingLoad(port: number, seconds: number): Promise<void> {
  for (let i = 0; i < seconds * 4; i++) {
    const perSecond = 4 + 3 * Math.sin(i / 20);
    if (Math.random() < perSecond / 4) {
      await echoSession("127.0.0.1", port, new Uint8Array(20_000 + Math.floor(Math.random() * 200_000)));
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Set ECHOSRV_DOCS_SCREENSHOT=1 to also write docs/status-page.png after a minute of varying load. */
const DOCS_SCREENSHOT = Deno.env.get("ECHOSRV_DOCS_SCREENSHOT") === "1";

Deno.test({
  name:
    "the status page in headless Chromium: no console error, only echosrv requested, live numbers, draining, a phone's width",
  ignore: "missing" in chromium,
  fn: async () => {
    if ("missing" in chromium) return;
    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await using server = await spawnServer([
      ...["--port", "0", "--host", "127.0.0.1", "--metrics", "127.0.0.1:0", "--udp", "--max-connections", "500"],
      ...["--shutdown-timeout", "30s", "--max-bytes-per-connection", "16GiB"],
    ]);
    const origin = `http://127.0.0.1:${await metricsPortOf(server)}`;
    await using browser = await Chromium.launch(chromium.command);
    const page = await browser.newPage({ width: 1280, height: 1000 });
    await page.goto(`${origin}/`);
    await page.waitFor(`document.querySelector('[data-field="state"]').textContent === "serving"`, "serving");
    const before = await shown(page);
    assert.equal(before.connections, "0");
    assert.equal(before.version.length > 0, true);
    assert.equal(before.workers, "1");
    assert.equal(before.connectionsOf, "of at most 500");
    const limits: Record<string, string> = await page.evaluate(`Object.fromEntries(
      [...document.querySelectorAll('[data-table="limits"] tr')].map((r) => [r.cells[0].textContent, r.cells[1].textContent]))`);
    assert.equal(limits["send timeout"], "5m", "the send timeout is listed");
    assert.equal(limits["max bytes per connection"], "16GiB", "the byte limit as the option writes it");

    // A client echoes steadily: the page must show it open, a throughput, a rate of new connections, a chart.
    const stop = Promise.withResolvers<void>();
    const started = Date.now();
    const pace = () => (DOCS_SCREENSHOT ? 2 + 6 * (1 + Math.sin((Date.now() - started) / 9000)) : 2);
    const client = await echoUntil(server.port, stop.promise, pace);
    let echoed = 0;
    try {
      await echoSession("127.0.0.1", server.port, new Uint8Array(100)); // one more accepted connection
      await page.waitFor(
        `document.querySelector('[data-field="connections"]').textContent === "1" &&
         /^[1-9][0-9.]* [kMG]?bit\\/s$/.test(document.querySelector('[data-field="bitsPerSecond"]').textContent) &&
         document.querySelector('[data-chart="bitsPerSecond"] .line').getAttribute("d")?.length > 10`,
        "one open connection, a throughput and its chart",
      );
      const during = await shown(page);
      assert.notEqual(during.echoedBytes, before.echoedBytes, "the echoed total moves");
      const later = await page.waitFor<string>(
        `(t => t !== ${
          JSON.stringify(during.echoedBytes)
        } && t)(document.querySelector('[data-field="echoedBytes"]').textContent)`,
        "the echoed total to keep moving",
      );
      assert.ok(later, "the numbers keep changing while the client echoes");
      await Deno.writeFile(`${ARTIFACTS}/status-page-desktop.png`, await page.screenshot());
      if (DOCS_SCREENSHOT) {
        await varyingLoad(server.port, 60);
        await Deno.writeFile(`${ROOT}docs/status-page.png`, await page.screenshot());
      }

      // A stop begins while the client is still connected: the page says so.
      server.signal("SIGTERM");
      await page.waitFor(`document.querySelector('[data-field="state"]').textContent === "draining"`, "draining");

      // The same page on a phone: nothing wider than the screen, numbers large enough to read.
      const phone = await browser.newPage({ width: 390, height: 844, scale: 2, mobile: true });
      await phone.goto(`${origin}/`);
      await phone.waitFor(`document.querySelector('[data-field="state"]').textContent === "draining"`, "phone");
      const layout = await phone.evaluate<{ scroll: number; width: number; value: number }>(`({
        scroll: document.documentElement.scrollWidth,
        width: window.innerWidth,
        value: parseFloat(getComputedStyle(document.querySelector(".value")).fontSize),
      })`);
      assert.ok(layout.scroll <= layout.width, `no sideways scrolling: ${layout.scroll} > ${layout.width} px`);
      assert.ok(layout.value >= 18, `the numbers are ${layout.value} px`);
      await Deno.writeFile(`${ARTIFACTS}/status-page-phone.png`, await phone.screenshot());

      for (const p of [page, phone]) {
        assert.deepEqual(p.log.errors, [], "nothing in the console");
        const elsewhere = p.log.requests.filter((url) => !url.startsWith(`${origin}/`) && !url.startsWith("data:"));
        assert.deepEqual(elsewhere, [], "the page requests nothing but echosrv");
        assert.ok(p.log.requests.some((url) => url.startsWith(`${origin}/status.json`)), "it polls /status.json");
      }
    } finally {
      stop.resolve();
      echoed = await client.done.catch(() => echoed);
      client.conn.close();
    }
    assert.ok(echoed > 0);
    assert.equal(await server.exited(), SIGTERM_EXIT_CODE);
  },
});
