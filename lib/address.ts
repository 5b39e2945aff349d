// address: how echosrv writes an address for people and URLs, in one place. An IPv6 host goes in brackets (RFC 3986's
// IP-literal, `[::1]:40007`), so its colons cannot be mistaken for the port's. A peer is written as the client it is:
// the IPv4-mapped IPv6 address that a dual-stack listener reports for an IPv4 client (::ffff:192.0.2.1) is written as
// that IPv4 address, and an IPv6 address in its canonical form (RFC 5952), as the access rules and the per-client
// counts (lib/access.ts) name it.

import { clientKey } from "./access.ts";

/**
 * A host as it is written before a port or in a URL: IPv6 in brackets.
 *
 * @param hostname an address or host name
 * @returns e.g. `127.0.0.1`, `[::1]`, `localhost`
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatHost("::1"), "[::1]");
 * assert.equal(formatHost("127.0.0.1"), "127.0.0.1");
 * ```
 */
export function formatHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

/**
 * An address and port the way people write them (a listener's, the metrics endpoint's).
 *
 * @param hostname an address or host name
 * @param port the port
 * @returns e.g. `127.0.0.1:40007`, `[::1]:40007`
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatAddress("::", 40007), "[::]:40007");
 * ```
 */
export function formatAddress(hostname: string, port: number): string {
  return `${formatHost(hostname)}:${port}`;
}

/**
 * A peer's address and port as the logs name it: an IPv4 client of a dual-stack listener as `a.b.c.d`, not
 * `::ffff:a.b.c.d`.
 *
 * @param peer the address, as Deno or a PROXY header reports it
 * @returns e.g. `192.0.2.1:51000`, `[2001:db8::1]:51000`
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatPeer({ hostname: "::ffff:192.0.2.1", port: 51000 }), "192.0.2.1:51000");
 * ```
 */
export function formatPeer(peer: { hostname: string; port: number }): string {
  return formatAddress(clientKey(peer.hostname), peer.port);
}
