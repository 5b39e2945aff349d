// The status page's script (served by echosrv as /status.js; see lib/status_page.ts). It polls status.json once a
// second (one request at a time, never overlapping), keeps five minutes of points for the charts, and writes the
// numbers into the page with textContent only. Nothing here reaches anything but the echosrv that served the page.
"use strict";

const POLL_MS = 1000;
const WINDOW_MS = 5 * 60 * 1000;

/** Reasons as /metrics labels them, in words. */
const WORDS = {
  cap: "over --max-connections",
  per_client_cap: "over --max-connections-per-ip",
  access_rule: "--allow / --deny",
  proxy_untrusted: "PROXY header from outside --proxy-from",
  proxy_header: "malformed PROXY header",
  proxy_timeout: "PROXY header too slow",
  idle_timeout: "idle timeout",
  send_timeout: "send timeout (the peer takes no echo)",
  max_bytes: "--max-bytes-per-connection",
  max_duration: "--max-connection-duration",
  accept: "accept failed",
  peer_reset: "reset by the peer",
  tls_handshake: "TLS handshake failed",
  unexpected: "unexpected",
  udp_send: "UDP send",
  udp_receive: "UDP receive",
  source_port: "from a blocked source port",
  own_port: "from the echo's own port",
  loop: "an echo loop partner",
  rate_limit: "over --udp-rate",
};

/** @type {Array<{t: number, connections: number, bitsPerSecond: number, connectionsPerSecond: number}>} */
let points = [];
let lastPoint = 0;

/** A number with a unit and SI prefixes, three significant digits: 1234567 -> "1.23 M". */
function si(value, unit) {
  const prefixes = ["", "k", "M", "G", "T", "P"];
  let scaled = value;
  let i = 0;
  while (Math.abs(scaled) >= 1000 && i < prefixes.length - 1) {
    scaled /= 1000;
    i++;
  }
  const digits = i === 0 && Number.isInteger(scaled) ? 0 : scaled >= 100 ? 0 : scaled >= 10 ? 1 : 2;
  return `${scaled.toFixed(digits)} ${prefixes[i]}${unit}`;
}

/** A count with thousands separators. */
function count(value) {
  return Math.round(value).toLocaleString("en-US");
}

/** Seconds as "3d 4h", "5m 12s", "42s". */
function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function field(name) {
  return document.querySelector(`[data-field="${name}"]`);
}

function setText(name, text) {
  const element = field(name);
  if (element && element.textContent !== text) element.textContent = text;
}

/** Fills a table with [name, value, hint] rows. */
function fillTable(name, rows) {
  const table = document.querySelector(`[data-table="${name}"]`);
  if (!table) return;
  const body = document.createElement("tbody");
  for (const [label, value, hint] of rows) {
    const row = body.insertRow();
    const head = document.createElement("th");
    head.scope = "row";
    head.textContent = label;
    if (hint) {
      const code = document.createElement("code");
      code.textContent = hint;
      head.append(" ", code);
    }
    row.append(head);
    const cell = row.insertCell();
    cell.textContent = value;
    if (typeof value === "string" && /^[1-9]/.test(value) && name !== "limits" && name !== "process") {
      row.className = "nonzero";
    }
  }
  table.replaceChildren(body);
}

function reasonRows(counts) {
  return Object.entries(counts).map(([reason, n]) => [WORDS[reason] ?? reason, count(n), reason]);
}

/** Draws one series of the last five minutes into its SVG as a filled line; returns its largest value. */
function drawChart(key, now) {
  const svg = document.querySelector(`[data-chart="${key}"]`);
  if (!svg) return 0;
  const shown = points.filter((p) => p.t > now - WINDOW_MS);
  const max = Math.max(1, ...shown.map((p) => p[key]));
  const x = (t) => (300 * (t - (now - WINDOW_MS))) / WINDOW_MS;
  const y = (v) => 78 - (74 * v) / max;
  let line = "";
  for (const p of shown) line += `${line ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`;
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "path");
  const stroke = document.createElementNS(ns, "path");
  if (shown.length > 0) {
    area.setAttribute("d", `${line}L${x(shown.at(-1).t).toFixed(1)},78L${x(shown[0].t).toFixed(1)},78Z`);
    stroke.setAttribute("d", line);
  }
  area.setAttribute("class", "area");
  stroke.setAttribute("class", "line");
  svg.replaceChildren(area, stroke);
  return shown.length > 0 ? Math.max(...shown.map((p) => p[key])) : 0;
}

function render(status) {
  document.title = `echosrv ${status.state} · ${status.current.connections} open · ${
    si(status.rates.bitsPerSecond, "bit/s")
  }`;
  setText("version", status.version);
  const state = field("state");
  state.dataset.state = status.state;
  setText("state", status.state);
  const info = status.info;
  setText("where", `port ${info.port} on ${info.hosts.join(", ")} · Deno ${status.deno} · ${status.os}`);
  setText("connections", count(status.current.connections));
  const cap = info.limitValues.maxConnections;
  setText("connectionsOf", cap > 0 ? `of at most ${count(cap)}` : "no cap");
  setText("bitsPerSecond", si(status.rates.bitsPerSecond, "bit/s"));
  setText("connectionsPerSecond", `${si(status.rates.connectionsPerSecond, "/s")}`);
  setText("accepted", `${count(status.current.accepted)} accepted since start`);
  setText("echoedBytes", si(status.current.echoedBytes, "B"));
  const ended = status.current.connectionsEnded;
  setText("ended", `${count(ended)} connection${ended === 1 ? "" : "s"} ended`);
  setText("uptime", duration(status.uptimeSeconds));
  setText("started", `since ${new Date(status.startedAt).toLocaleString()}`);
  setText("workers", count(info.workers));
  const names = { tls: "TLS", udp: "UDP", proxyProtocol: "PROXY protocol" };
  const on = Object.entries(info.features).filter(([, value]) => value).map(([name]) => names[name] ?? name);
  setText("features", on.length > 0 ? `with ${on.join(", ")}` : "TCP echo");

  for (const point of status.history) {
    if (point.t > lastPoint) {
      points.push(point);
      lastPoint = point.t;
    }
  }
  points = points.filter((p) => p.t > status.now - WINDOW_MS);
  setText("bitsMax", `(peak ${si(drawChart("bitsPerSecond", status.now), "bit/s")})`);
  setText("connectionsMax", `(peak ${si(drawChart("connectionsPerSecond", status.now), "/s")})`);
  setText("openMax", `(peak ${count(drawChart("connections", status.now))})`);

  fillTable("rejected", reasonRows(status.rejected));
  fillTable("closed", reasonRows(status.closed));
  fillTable("errors", reasonRows(status.errors));
  const udp = document.querySelector('[data-show="udp"]');
  udp.hidden = !info.features.udp;
  if (info.features.udp) {
    fillTable("udp", [
      ["datagrams echoed", count(status.current.udpDatagrams)],
      ["echoed", si(status.current.udpEchoedBytes, "B")],
      ["throughput", si(status.rates.udpBitsPerSecond, "bit/s")],
      ...reasonRows(status.udpDropped).map(([label, value, hint]) => [`dropped: ${label}`, value, hint]),
    ]);
  }
  fillTable("limits", info.limits);
  const p = status.process;
  const processRows = [
    ["resident memory", si(p.residentMemoryBytes, "B")],
    ["CPU time", `${p.cpuSeconds.toFixed(1)} s`],
  ];
  if (p.openFds !== undefined) {
    processRows.push(["open descriptors", `${count(p.openFds)} of ${p.maxFds === null ? "∞" : count(p.maxFds)}`]);
  }
  if (p.virtualMemoryBytes !== undefined) processRows.push(["virtual memory", si(p.virtualMemoryBytes, "B")]);
  fillTable("process", processRows);
  setText("updated", new Date(status.now).toLocaleTimeString());
}

function showBanner(text) {
  const banner = field("banner");
  banner.hidden = text === "";
  banner.textContent = text;
  if (text !== "") {
    field("state").dataset.state = "unreachable";
    setText("state", "unreachable");
  }
}

async function poll() {
  try {
    const response = await fetch(`status.json?since=${lastPoint}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    showBanner("");
  } catch (error) {
    showBanner(`Cannot reach echosrv (${error.message}); retrying every second.`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
