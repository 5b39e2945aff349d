// The PROXY protocol parser on its own: version 1 (TCP4, TCP6, UNKNOWN), version 2 (IPv4, IPv6, LOCAL, TLVs,
// CRC32C), every header cut short, malformed ones, random bytes, and reading a header off a real socket with the
// client's first data in the same segment.

import assert from "node:assert/strict";
import {
  crc32c,
  parseProxyHeader,
  PP2_TYPE_CRC32C,
  ProxyHeaderError,
  type ProxyParse,
  readProxyHeader,
  V1_MAX_LENGTH,
  V2_SIGNATURE,
} from "../lib/proxy_protocol.ts";
import { pseudoRandomBytes, within } from "./helpers.ts";

const text = (s: string) => new TextEncoder().encode(s);

/** Builds a v2 header the way the specification lays it out. */
function v2Header(options: {
  command?: number;
  family?: number;
  transport?: number;
  addresses?: number[];
  tlvs?: Array<[number, number[]]>;
  version?: number;
  lengthAdjust?: number;
}): Uint8Array {
  const { command = 1, family = 1, transport = 1, addresses = [], tlvs = [], version = 2, lengthAdjust = 0 } = options;
  const tlvBytes = tlvs.flatMap(([type, value]) => [type, value.length >> 8, value.length & 0xff, ...value]);
  const block = [...addresses, ...tlvBytes];
  const length = block.length + lengthAdjust;
  return Uint8Array.from([
    ...V2_SIGNATURE,
    (version << 4) | command,
    (family << 4) | transport,
    length >> 8,
    length & 0xff,
    ...block,
  ]);
}

const port = (p: number) => [p >> 8, p & 0xff];
const V4_BLOCK = [192, 0, 2, 1, 198, 51, 100, 7, ...port(51234), ...port(40007)];
const V6_BLOCK = [
  ...[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
  ...[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02],
  ...port(65535),
  ...port(7),
];

function complete(result: ProxyParse) {
  assert.equal(result.status, "complete", JSON.stringify(result));
  if (result.status !== "complete") throw new Error("unreachable");
  return result.header;
}

function invalid(result: ProxyParse, reason?: RegExp) {
  assert.equal(result.status, "invalid", JSON.stringify(result));
  if (result.status === "invalid" && reason) assert.match(result.reason, reason);
}

/** Every strict prefix of a valid header is "incomplete", never "invalid" and never "complete". */
function assertPrefixesIncomplete(header: Uint8Array) {
  for (let n = 0; n < header.length; n++) {
    assert.equal(parseProxyHeader(header.subarray(0, n)).status, "incomplete", `prefix of ${n} bytes`);
  }
}

Deno.test("v1 TCP4: addresses, ports, length; the client's data after it is not part of the header", () => {
  const header = "PROXY TCP4 192.0.2.1 198.51.100.7 51234 40007\r\n";
  const parsed = complete(parseProxyHeader(text(header + "hello")));
  assert.equal(parsed.version, 1);
  assert.equal(parsed.command, "proxy");
  assert.equal(parsed.protocol, "TCP4");
  assert.deepEqual(parsed.source, { hostname: "192.0.2.1", port: 51234 });
  assert.deepEqual(parsed.destination, { hostname: "198.51.100.7", port: 40007 });
  assert.equal(parsed.length, header.length);
  assertPrefixesIncomplete(text(header));
});

Deno.test("v1 TCP6: addresses come out canonical", () => {
  const parsed = complete(parseProxyHeader(text("PROXY TCP6 2001:DB8:0:0::1 ::1 0 65535\r\n")));
  assert.deepEqual(parsed.source, { hostname: "2001:db8::1", port: 0 });
  assert.deepEqual(parsed.destination, { hostname: "::1", port: 65535 });
});

Deno.test("v1 UNKNOWN (with or without the rest of the line) means: use the connection's own addresses", () => {
  for (const line of ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"]) {
    const parsed = complete(parseProxyHeader(text(line)));
    assert.equal(parsed.command, "local");
    assert.equal(parsed.source, undefined);
    assert.equal(parsed.length, line.length);
  }
  // The longest header the specification allows is accepted; one byte more is not.
  const longest = "PROXY UNKNOWN " + "x".repeat(V1_MAX_LENGTH - 16) + "\r\n";
  assert.equal(longest.length, V1_MAX_LENGTH);
  complete(parseProxyHeader(text(longest)));
  invalid(parseProxyHeader(text("PROXY UNKNOWN " + "x".repeat(V1_MAX_LENGTH))), /no CRLF within 107/);
});

Deno.test("v1 malformed headers are invalid with a reason", () => {
  const cases: Array<[string, RegExp]> = [
    ["PROXY TCP4 192.0.2.1 198.51.100.7 51234\r\n", /6 fields/],
    ["PROXY TCP4  192.0.2.1 198.51.100.7 1 2\r\n", /6 fields/],
    ["PROXY TCP5 192.0.2.1 198.51.100.7 1 2\r\n", /unknown protocol/],
    ["PROXY TCP4 ::1 198.51.100.7 1 2\r\n", /not a TCP4 address/],
    ["PROXY TCP6 192.0.2.1 ::1 1 2\r\n", /not a TCP6 address/],
    ["PROXY TCP4 192.0.2.01 198.51.100.7 1 2\r\n", /not a TCP4 address/],
    ["PROXY TCP4 192.0.2.1 198.51.100.7 65536 2\r\n", /not a port/],
    ["PROXY TCP4 192.0.2.1 198.51.100.7 01 2\r\n", /not a port/],
    ["PROXY TCP4 192.0.2.1 198.51.100.7 -1 2\r\n", /not a port/],
    ["PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", /not a TCP6 address/],
    ["PROXY TCP4 192.0.2.1 198.51.100.7 1 2\rX", /CR not followed by LF/],
    ["PROXY TCP4 192.0.2.1\n198.51.100.7 1 2\r\n", /printable/],
    ["proxy TCP4 192.0.2.1 198.51.100.7 1 2\r\n", /does not start with a PROXY header/],
    ["GET / HTTP/1.1\r\n\r\n", /does not start with a PROXY header/],
    ["PROXY TCP4 192.0.2.1 198.51.100.7 1 2" + " ".repeat(80), /no CRLF/],
  ];
  for (const [line, reason] of cases) invalid(parseProxyHeader(text(line)), reason);
});

Deno.test("v2 IPv4 over TCP: addresses, ports, no TLVs; the data after it stays out", () => {
  const header = v2Header({ addresses: V4_BLOCK });
  const withData = Uint8Array.from([...header, 1, 2, 3]);
  const parsed = complete(parseProxyHeader(withData));
  assert.equal(parsed.version, 2);
  assert.equal(parsed.command, "proxy");
  assert.equal(parsed.protocol, "INET/STREAM");
  assert.deepEqual(parsed.source, { hostname: "192.0.2.1", port: 51234 });
  assert.deepEqual(parsed.destination, { hostname: "198.51.100.7", port: 40007 });
  assert.deepEqual(parsed.tlvs, []);
  assert.equal(parsed.length, 16 + 12);
  assertPrefixesIncomplete(header);
});

Deno.test("v2 IPv6 with TLVs (ALPN, authority, NOOP, unique id) read in order", () => {
  const tlvs: Array<[number, number[]]> = [
    [0x01, [...text("h2")]],
    [0x02, [...text("echo.example")]],
    [0x04, []],
    [0x05, [9, 8, 7]],
  ];
  const header = v2Header({ family: 2, addresses: V6_BLOCK, tlvs });
  const parsed = complete(parseProxyHeader(header));
  assert.equal(parsed.protocol, "INET6/STREAM");
  assert.deepEqual(parsed.source, { hostname: "2001:db8::1", port: 65535 });
  assert.deepEqual(parsed.destination, { hostname: "2001:db8::2", port: 7 });
  assert.deepEqual(parsed.tlvs.map((t) => [t.type, [...t.value]]), tlvs);
  assertPrefixesIncomplete(header);
});

Deno.test("v2 LOCAL (health check) and UNSPEC/UNIX families mean: use the connection's own addresses", () => {
  const local = complete(parseProxyHeader(v2Header({ command: 0, family: 0, transport: 0 })));
  assert.equal(local.command, "local");
  assert.equal(local.source, undefined);
  assert.equal(local.length, 16);
  // LOCAL with an address block: the addresses are ignored.
  assert.equal(complete(parseProxyHeader(v2Header({ command: 0, addresses: V4_BLOCK }))).command, "local");
  const unix = complete(parseProxyHeader(v2Header({ family: 3, addresses: new Array(216).fill(0x41) })));
  assert.equal(unix.command, "local");
  assert.equal(unix.protocol, "UNIX/STREAM");
  const unspec = complete(parseProxyHeader(v2Header({ family: 0, addresses: [1, 2, 3] })));
  assert.equal(unspec.command, "local");
});

Deno.test("v2 CRC32C TLV: a matching checksum is accepted, a wrong one is invalid", () => {
  assert.equal(crc32c(text("123456789")), 0xe3069283, "the standard check value of CRC32C");
  const withZeroCrc = v2Header({ addresses: V4_BLOCK, tlvs: [[PP2_TYPE_CRC32C, [0, 0, 0, 0]]] });
  const sum = crc32c(withZeroCrc);
  const good = withZeroCrc.slice();
  new DataView(good.buffer).setUint32(good.length - 4, sum);
  complete(parseProxyHeader(good));
  const bad = good.slice();
  bad[bad.length - 1] ^= 1;
  invalid(parseProxyHeader(bad), /CRC32C mismatch/);
  invalid(
    parseProxyHeader(v2Header({ addresses: V4_BLOCK, tlvs: [[PP2_TYPE_CRC32C, [1, 2]]] })),
    /not 4 bytes/,
  );
});

Deno.test("v2 malformed headers are invalid with a reason", () => {
  invalid(parseProxyHeader(v2Header({ version: 1, addresses: V4_BLOCK })), /version 1/);
  invalid(parseProxyHeader(v2Header({ command: 2, addresses: V4_BLOCK })), /unknown command/);
  invalid(parseProxyHeader(v2Header({ family: 4, addresses: V4_BLOCK })), /family/);
  invalid(parseProxyHeader(v2Header({ transport: 3, addresses: V4_BLOCK })), /family/);
  invalid(parseProxyHeader(v2Header({ addresses: V4_BLOCK.slice(0, 11) })), /11 bytes of addresses, INET needs 12/);
  invalid(parseProxyHeader(v2Header({ family: 2, addresses: V4_BLOCK })), /INET6 needs 36/);
  // A TLV longer than what is left, and a TLV header cut short.
  const overrun = v2Header({ addresses: V4_BLOCK, tlvs: [[0x01, [1, 2, 3]]], lengthAdjust: -1 });
  invalid(parseProxyHeader(overrun), /runs past the end/);
  const stub = Uint8Array.from([...v2Header({ addresses: [...V4_BLOCK, 0x01, 0x00] })]);
  invalid(parseProxyHeader(stub), /cut short/);
  // A bad signature is not a PROXY header at all.
  const wrong = v2Header({ addresses: V4_BLOCK });
  wrong[5] = 0x0e;
  invalid(parseProxyHeader(wrong), /does not start with a PROXY header/);
});

Deno.test("random bytes never throw, never pass for a header unless they start like one", () => {
  for (let seed = 1; seed <= 2000; seed++) {
    const bytes = pseudoRandomBytes(1 + (seed % 300), seed);
    const result = parseProxyHeader(bytes);
    assert.ok(["complete", "incomplete", "invalid"].includes(result.status));
    if (result.status !== "invalid") {
      assert.ok(bytes[0] === 0x50 || bytes[0] === 0x0d, `seed ${seed}: ${result.status}`);
    }
  }
  // Random bytes after a valid v1 prefix and after the v2 signature: still a defined answer.
  for (let seed = 1; seed <= 500; seed++) {
    for (const prefix of [text("PROXY "), V2_SIGNATURE]) {
      const bytes = Uint8Array.from([...prefix, ...pseudoRandomBytes(seed % 200, seed)]);
      const result = parseProxyHeader(bytes);
      if (result.status === "complete") assert.ok(result.header.length <= bytes.length);
    }
  }
});

Deno.test("readProxyHeader over a real socket: header and data in one segment, header split byte by byte", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const header = text("PROXY TCP4 203.0.113.9 127.0.0.1 4242 40007\r\n");
    // One write: the header and the client's first bytes arrive together.
    {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const server = await listener.accept();
      await client.write(Uint8Array.from([...header, ...text("first bytes")]));
      const { header: parsed, rest } = await within(5000, "the header", readProxyHeader(server));
      assert.deepEqual(parsed.source, { hostname: "203.0.113.9", port: 4242 });
      assert.equal(new TextDecoder().decode(rest), "first bytes".slice(0, rest.length));
      client.close();
      server.close();
    }
    // Byte by byte: the reader waits for the rest.
    {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      client.setNoDelay(true);
      const server = await listener.accept();
      const reading = readProxyHeader(server);
      for (const byte of header) await client.write(Uint8Array.of(byte));
      const { header: parsed, rest } = await within(5000, "the header", reading);
      assert.equal(parsed.source?.port, 4242);
      assert.equal(rest.length, 0);
      client.close();
      server.close();
    }
    // The peer closes before a whole header: "missing"; garbage: "invalid", without waiting for more.
    {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const server = await listener.accept();
      await client.write(text("PROXY TCP4 1.2"));
      client.close();
      const error = await within(5000, "the error", readProxyHeader(server).catch((e) => e));
      assert.ok(error instanceof ProxyHeaderError && error.missing, String(error));
      server.close();
    }
    {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const server = await listener.accept();
      await client.write(text("hello\r\n"));
      const error = await within(5000, "the error", readProxyHeader(server).catch((e) => e));
      assert.ok(error instanceof ProxyHeaderError && !error.missing, String(error));
      client.close();
      server.close();
    }
  } finally {
    listener.close();
  }
});
