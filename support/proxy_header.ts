// proxy_header: PROXY protocol v2 headers as a load balancer sends them (the PROXY spec, haproxy.org's
// proxy-protocol.txt), for the PROXY tests and a stress run behind a PROXY header.

import ipaddr from "ipaddr.js";

/**
 * A PROXY v2 header as a load balancer sends it: PROXY command, TCP over IPv4 or IPv6 (by the source address),
 * or LOCAL when `source` is undefined.
 */
export function proxyV2Header(
  source?: { hostname: string; port: number },
  destination = { hostname: "127.0.0.1", port: 40007 },
): Uint8Array {
  const signature = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  if (!source) return Uint8Array.from([...signature, 0x20, 0x00, 0, 0]);
  const v6 = source.hostname.includes(":");
  const bytes = (hostname: string) => ipaddr.parse(hostname).toByteArray();
  const dst = v6 && !destination.hostname.includes(":") ? `::ffff:${destination.hostname}` : destination.hostname;
  const block = [
    ...bytes(source.hostname),
    ...(v6 ? ipaddr.IPv6.parse(dst).toByteArray() : bytes(dst)),
    source.port >> 8,
    source.port & 0xff,
    destination.port >> 8,
    destination.port & 0xff,
  ];
  return Uint8Array.from([...signature, 0x21, v6 ? 0x21 : 0x11, block.length >> 8, block.length & 0xff, ...block]);
}
