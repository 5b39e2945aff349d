// proxy_protocol: reading the PROXY protocol header (versions 1 and 2, as HAProxy specifies them) that a load
// balancer sends at the start of a connection to carry the client's address. The parser is pure and incremental:
// given the bytes so far it says "complete", "need more" or "invalid", and never looks past the header, so the
// bytes that came in the same read as the header stay the caller's to echo. Nothing here decides whom to trust;
// lib/admission.ts does (only --proxy-from peers may send a header).
//
// Why not the npm package proxy-protocol-js: it parses a whole buffer at once (it cannot say "incomplete", which a
// socket read needs), is lenient where a server facing the network must be strict, and sees few releases.

import ipaddr from "ipaddr.js";

/** The 12 bytes that open every version 2 header. */
export const V2_SIGNATURE: Uint8Array = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);
/** The longest version 1 header, CRLF included (the specification's limit). */
export const V1_MAX_LENGTH = 107;
const V1_PREFIX = new TextEncoder().encode("PROXY ");

/** An address and port carried by the header. */
export interface ProxyAddress {
  /** The address, IPv4 or IPv6, as text. */
  hostname: string;
  /** The port. */
  port: number;
}

/** One type-length-value field of a version 2 header (ALPN, authority, unique id, TLS details, ...). */
export interface ProxyTlv {
  /** The field's type (PP2_TYPE_*). */
  type: number;
  /** The field's value. */
  value: Uint8Array;
}

/** A header read off the wire. */
export interface ProxyHeader {
  /** The protocol version the header was written in. */
  version: 1 | 2;
  /**
   * `proxy`: the connection is relayed for the client named in `source`. `local`: the connection is the proxy's
   * own (a health check: v2 LOCAL) or its client is unknown (v1 UNKNOWN, v2 UNSPEC or UNIX); the receiver uses the
   * connection's real addresses.
   */
  command: "proxy" | "local";
  /** The transport the header declares: TCP4, TCP6 (v1) or the v2 family and protocol. */
  protocol: string;
  /** The client, when `command` is `proxy`. */
  source?: ProxyAddress;
  /** The address the client connected to, when `command` is `proxy`. */
  destination?: ProxyAddress;
  /** Version 2's TLVs, in order (empty for version 1). */
  tlvs: ProxyTlv[];
  /** Bytes the header took on the wire; what follows is the client's data. */
  length: number;
}

/** What {@link parseProxyHeader} makes of the bytes so far. */
export type ProxyParse =
  | { status: "complete"; header: ProxyHeader }
  | { status: "incomplete" }
  | { status: "invalid"; reason: string };

const INCOMPLETE: ProxyParse = { status: "incomplete" };

function invalid(reason: string): ProxyParse {
  return { status: "invalid", reason };
}

/** True when the first `bytes.length` bytes (at most `prefix.length`) agree with `prefix`. */
function agrees(bytes: Uint8Array, prefix: Uint8Array): boolean {
  const n = Math.min(bytes.length, prefix.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/**
 * Reads a PROXY header from the start of `bytes`, which may hold only part of it (then the answer is
 * `incomplete`: read more and call again with everything so far) or more than it (`header.length` says where the
 * client's data begins). Anything that is not a well-formed version 1 or 2 header is `invalid`, with a reason for
 * the log; so is a v2 header whose CRC32C TLV does not match.
 *
 * @param bytes the first bytes received on the connection
 * @returns the header, or what is missing or wrong
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("PROXY TCP4 192.0.2.1 198.51.100.7 51234 40007\r\nhello");
 * const parsed = parseProxyHeader(bytes);
 * if (parsed.status === "complete") console.log(parsed.header.source, bytes.subarray(parsed.header.length));
 * ```
 */
export function parseProxyHeader(bytes: Uint8Array): ProxyParse {
  if (bytes.length === 0) return INCOMPLETE;
  if (agrees(bytes, V1_PREFIX)) return bytes.length < V1_PREFIX.length ? INCOMPLETE : parseV1(bytes);
  if (agrees(bytes, V2_SIGNATURE)) return bytes.length < 16 ? INCOMPLETE : parseV2(bytes);
  return invalid('the connection does not start with a PROXY header (v1 "PROXY ..." or the v2 signature)');
}

const PORT = /^(0|[1-9][0-9]{0,4})$/;

function parsePort(text: string): number | undefined {
  if (!PORT.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

function parseV1(bytes: Uint8Array): ProxyParse {
  const scan = Math.min(bytes.length, V1_MAX_LENGTH);
  let end = -1;
  for (let i = 0; i < scan; i++) {
    const byte = bytes[i];
    if (byte === 0x0d) {
      if (i + 1 >= bytes.length) return INCOMPLETE;
      if (bytes[i + 1] !== 0x0a) return invalid("v1 header: CR not followed by LF");
      end = i;
      break;
    }
    if (byte < 0x20 || byte > 0x7e) return invalid("v1 header: a byte that is not printable ASCII before CRLF");
  }
  if (end < 0) {
    return bytes.length >= V1_MAX_LENGTH ? invalid(`v1 header: no CRLF within ${V1_MAX_LENGTH} bytes`) : INCOMPLETE;
  }
  const line = new TextDecoder().decode(bytes.subarray(0, end));
  const length = end + 2;
  const fields = line.split(" ");
  if (fields[1] === "UNKNOWN") {
    return { status: "complete", header: { version: 1, command: "local", protocol: "UNKNOWN", tlvs: [], length } };
  }
  if (fields.length !== 6) return invalid(`v1 header: expected 6 fields separated by single spaces, got "${line}"`);
  const [, protocol, src, dst, srcPort, dstPort] = fields;
  if (protocol !== "TCP4" && protocol !== "TCP6") return invalid(`v1 header: unknown protocol "${protocol}"`);
  const valid = protocol === "TCP4"
    ? (a: string) => ipaddr.IPv4.isValidFourPartDecimal(a)
    : (a: string) => !a.includes("%") && ipaddr.IPv6.isValid(a);
  if (!valid(src) || !valid(dst)) return invalid(`v1 header: "${src}" or "${dst}" is not a ${protocol} address`);
  const sourcePort = parsePort(srcPort);
  const destinationPort = parsePort(dstPort);
  if (sourcePort === undefined || destinationPort === undefined) {
    return invalid(`v1 header: "${srcPort}" or "${dstPort}" is not a port`);
  }
  const canonical = (a: string) => ipaddr.parse(a).toString();
  return {
    status: "complete",
    header: {
      version: 1,
      command: "proxy",
      protocol,
      source: { hostname: canonical(src), port: sourcePort },
      destination: { hostname: canonical(dst), port: destinationPort },
      tlvs: [],
      length,
    },
  };
}

const FAMILIES = ["UNSPEC", "INET", "INET6", "UNIX"] as const;
const TRANSPORTS = ["UNSPEC", "STREAM", "DGRAM"] as const;
/** Bytes of the address block by family: none, 2 x (4 + 2), 2 x (16 + 2), 2 x 108. */
const ADDRESS_LENGTHS = [0, 12, 36, 216];
/** The TLV that carries a CRC32C of the whole header. */
export const PP2_TYPE_CRC32C = 0x03;

function parseV2(bytes: Uint8Array): ProxyParse {
  const versionCommand = bytes[12];
  if (versionCommand >> 4 !== 2) return invalid(`v2 header: version ${versionCommand >> 4}, expected 2`);
  const commandBits = versionCommand & 0x0f;
  if (commandBits > 1) return invalid(`v2 header: unknown command ${commandBits}`);
  const familyBits = bytes[13] >> 4;
  const transportBits = bytes[13] & 0x0f;
  if (familyBits >= FAMILIES.length || transportBits >= TRANSPORTS.length) {
    return invalid(`v2 header: unknown address family/protocol byte 0x${bytes[13].toString(16)}`);
  }
  const blockLength = (bytes[14] << 8) | bytes[15];
  const length = 16 + blockLength;
  const family = FAMILIES[familyBits];
  const protocol = `${family}/${TRANSPORTS[transportBits]}`;
  const addressLength = ADDRESS_LENGTHS[familyBits];
  if (blockLength < addressLength) {
    return invalid(`v2 header: ${blockLength} bytes of addresses, ${family} needs ${addressLength}`);
  }
  if (bytes.length < length) return INCOMPLETE;
  const block = bytes.subarray(16, length);

  // UNSPEC carries no addresses and nothing we could read as TLVs; the specification says to ignore the block.
  const tlvs = family === "UNSPEC" ? [] : readTlvs(block.subarray(addressLength));
  if (typeof tlvs === "string") return invalid(`v2 header: ${tlvs}`);
  const crc = tlvs.find((t) => t.type === PP2_TYPE_CRC32C);
  if (crc) {
    if (crc.value.length !== 4) return invalid("v2 header: the CRC32C TLV is not 4 bytes long");
    const expected = new DataView(crc.value.buffer, crc.value.byteOffset, 4).getUint32(0);
    const copy = bytes.slice(0, length);
    copy.fill(0, crc.value.byteOffset - bytes.byteOffset, crc.value.byteOffset - bytes.byteOffset + 4);
    if (crc32c(copy) !== expected) return invalid("v2 header: CRC32C mismatch");
  }

  const header: ProxyHeader = { version: 2, command: "local", protocol, tlvs, length };
  if (commandBits === 1 && (family === "INET" || family === "INET6")) {
    const view = new DataView(block.buffer, block.byteOffset, addressLength);
    const size = family === "INET" ? 4 : 16;
    const address = (offset: number) => ipaddr.fromByteArray([...block.subarray(offset, offset + size)]).toString();
    header.command = "proxy";
    header.source = { hostname: address(0), port: view.getUint16(2 * size) };
    header.destination = { hostname: address(size), port: view.getUint16(2 * size + 2) };
  }
  return { status: "complete", header };
}

/** Reads the TLVs of a v2 header, or says why they are malformed. */
function readTlvs(bytes: Uint8Array): ProxyTlv[] | string {
  const tlvs: ProxyTlv[] = [];
  for (let offset = 0; offset < bytes.length;) {
    if (offset + 3 > bytes.length) return `a TLV header is cut short at offset ${offset}`;
    const type = bytes[offset];
    const length = (bytes[offset + 1] << 8) | bytes[offset + 2];
    if (offset + 3 + length > bytes.length) return `TLV 0x${type.toString(16)} runs past the end of the header`;
    tlvs.push({ type, value: bytes.subarray(offset + 3, offset + 3 + length) });
    offset += 3 + length;
  }
  return tlvs;
}

let crcTable: Uint32Array | undefined;

/**
 * CRC32C (Castagnoli), as the PROXY v2 CRC32C TLV uses it.
 *
 * @param bytes the data
 * @returns the checksum
 */
export function crc32c(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const byte of bytes) crc = crcTable[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Thrown by {@link readProxyHeader}; `missing` when the peer closed before a whole header arrived. */
export class ProxyHeaderError extends Error {
  /** The error's name, as stack traces show it. */
  override name = "ProxyHeaderError";
  /**
   * A header that cannot be read.
   *
   * @param message what went wrong
   * @param missing true when no complete header arrived before end of stream
   */
  constructor(message: string, readonly missing: boolean) {
    super(message);
  }
}

/** The one method {@link readProxyHeader} needs of a connection. */
export interface Readable {
  /** Reads into `p`: the bytes read, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/**
 * Reads a PROXY header off a connection. It takes no timer: the caller bounds the wait by closing the connection
 * (which rejects the pending read), as the server's sweep does at --proxy-timeout.
 *
 * @param conn the connection, nothing read from it yet
 * @returns the header and the bytes that followed it in the same reads (the client's first data)
 * @throws {ProxyHeaderError} when the header is malformed or the peer closes first; what `conn.read` throws
 */
export async function readProxyHeader(conn: Readable): Promise<{ header: ProxyHeader; rest: Uint8Array }> {
  let received = new Uint8Array(0);
  const chunk = new Uint8Array(16 * 1024);
  for (;;) {
    const parsed = parseProxyHeader(received);
    if (parsed.status === "complete") return { header: parsed.header, rest: received.slice(parsed.header.length) };
    if (parsed.status === "invalid") throw new ProxyHeaderError(parsed.reason, false);
    const n = await conn.read(chunk);
    if (n === null) {
      throw new ProxyHeaderError(
        received.length === 0
          ? "the connection closed before sending its PROXY header"
          : `the connection closed after ${received.length} bytes of an incomplete PROXY header`,
        true,
      );
    }
    const grown = new Uint8Array(received.length + n);
    grown.set(received);
    grown.set(chunk.subarray(0, n), received.length);
    received = grown;
  }
}
