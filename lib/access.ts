// access: who may use the server. It reads the CIDR rules of --allow, --deny and --proxy-from strictly, matches a
// client address against them (an IPv4-mapped IPv6 address such as ::ffff:192.0.2.1 counts as the IPv4 address it
// carries, so a dual-stack listener obeys IPv4 rules), and counts open connections per client address for
// --max-connections-per-ip. The address arithmetic is ipaddr.js's (npm, no dependencies); the strict reading is
// ours, because ipaddr.js also accepts forms such as `127.1` or `0x7f.0.0.1` that nobody writing a rule means.

import ipaddr from "ipaddr.js";
import type { AccessRules } from "./config.ts";

/** Thrown when a rule cannot be read; the message says what is wrong and what was expected. */
export class CidrError extends Error {
  /** The error's name, as stack traces show it. */
  override name = "CidrError";
}

/** An IPv4 or IPv6 address, as ipaddr.js parses it. */
export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;

/** One network: an address and a prefix length, as in `192.0.2.0/24` or `2001:db8::/32`. */
export interface Cidr {
  /** The rule in its canonical form, for logs (`10.0.0.0/8`; a mapped IPv6 rule is shown as IPv4). */
  readonly text: string;
  /** The network address. */
  readonly address: IpAddress;
  /** The prefix length in bits. */
  readonly bits: number;
}

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Reads one network written as `ADDRESS/BITS`, or a bare address (one host: /32 or /128). IPv4 must be four
 * decimal parts without leading zeros; IPv6 has no zone (`%eth0`). A network with host bits set (`10.0.0.1/8`) is
 * refused, naming the network that was probably meant, because such a rule usually hides a typing mistake.
 * An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is read as the IPv4 network it maps (`10.0.0.0/8`).
 *
 * @param text the rule as written
 * @returns the network
 * @throws {CidrError} when the text is not such a network
 * @example
 * ```ts
 * parseCidr("192.0.2.0/24").text; // "192.0.2.0/24"
 * parseCidr("::1").text; // "::1/128"
 * ```
 */
export function parseCidr(text: string): Cidr {
  const value = text.trim();
  const slash = value.indexOf("/");
  const addressText = slash < 0 ? value : value.slice(0, slash);
  const prefixText = slash < 0 ? undefined : value.slice(slash + 1);
  const expected = "write an IPv4 or IPv6 network such as 192.0.2.0/24, 2001:db8::/32, or one address";
  let address: IpAddress;
  if (addressText.includes(":")) {
    if (addressText.includes("%") || !ipaddr.IPv6.isValid(addressText)) {
      throw new CidrError(`"${text}" is not a network: "${addressText}" is not an IPv6 address; ${expected}`);
    }
    address = ipaddr.IPv6.parse(addressText);
  } else {
    if (!ipaddr.IPv4.isValidFourPartDecimal(addressText)) {
      throw new CidrError(`"${text}" is not a network: "${addressText}" is not an IPv4 address; ${expected}`);
    }
    address = ipaddr.IPv4.parse(addressText);
  }
  const maxBits = address.kind() === "ipv4" ? 32 : 128;
  let bits = maxBits;
  if (prefixText !== undefined) {
    if (!PREFIX.test(prefixText) || Number(prefixText) > maxBits) {
      throw new CidrError(`"${text}" is not a network: the prefix length must be 0 to ${maxBits}`);
    }
    bits = Number(prefixText);
  }
  const network = address.kind() === "ipv4"
    ? ipaddr.IPv4.networkAddressFromCIDR(`${address}/${bits}`)
    : ipaddr.IPv6.networkAddressFromCIDR(`${address}/${bits}`);
  if (network.toString() !== address.toString()) {
    throw new CidrError(`"${text}" has host bits set: did you mean ${network}/${bits}?`);
  }
  if (address instanceof ipaddr.IPv6 && bits >= 96 && address.isIPv4MappedAddress()) {
    address = address.toIPv4Address();
    bits -= 96;
  }
  return { text: `${address}/${bits}`, address, bits };
}

/** A dotted-quad IPv4 address without leading zeros, alone or IPv4-mapped (`::ffff:192.0.2.1`). */
const DOTTED_QUAD = /^(?:::ffff:)?(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

/**
 * Reads a client address as Deno or a PROXY header reports it, unwrapping IPv4-mapped IPv6 addresses.
 *
 * @param hostname an IPv4 or IPv6 address (`192.0.2.1`, `::ffff:192.0.2.1`, `2001:db8::1`)
 * @returns the address, or undefined when `hostname` is not an IP address
 */
export function parseClientAddress(hostname: string): IpAddress | undefined {
  // The common case first, without ipaddr.js's general parser: an IPv4 peer as Deno reports it, plain or
  // IPv4-mapped (every IPv4 client of the dual-stack [::] listener). With access rules on this runs for every new
  // connection, and the general parse (which tries each IPv4 and IPv6 form in turn, twice: isValid, then parse)
  // measured 0.9 us for 127.0.0.1 and 3.9 us for ::ffff:127.0.0.1 in a loop, against 0.1 us here. Measured with
  // `deno task bench` (15 interleaved rounds of new connections, --allow on, server on [::]): this path takes 11%
  // off the server's CPU time per connection for IPv4 clients of the dual-stack listener (no round slower); for
  // plain IPv4 listeners the gain is within the noise.
  // Anything this pattern does not take (leading zeros, an octet over 255, other forms) goes the general way.
  const quad = DOTTED_QUAD.exec(hostname);
  if (quad) {
    const octets = [Number(quad[1]), Number(quad[2]), Number(quad[3]), Number(quad[4])];
    if (octets[0] <= 255 && octets[1] <= 255 && octets[2] <= 255 && octets[3] <= 255) return new ipaddr.IPv4(octets);
  }
  if (!ipaddr.isValid(hostname)) return undefined;
  const address = ipaddr.parse(hostname);
  return address instanceof ipaddr.IPv6 && address.isIPv4MappedAddress() ? address.toIPv4Address() : address;
}

/**
 * The canonical text of a client address, the key of the per-client count: `::ffff:192.0.2.1` and `192.0.2.1`
 * are one client; `2001:DB8:0::1` and `2001:db8::1` too.
 *
 * @param hostname the address as reported
 * @returns the canonical form (the input itself when it is not an IP address)
 */
export function clientKey(hostname: string): string {
  if (hostname.startsWith("::ffff:") && hostname.includes(".")) return hostname.slice(7);
  if (!hostname.includes(":")) return hostname;
  return parseClientAddress(hostname)?.toString() ?? hostname;
}

/**
 * Reads a list of networks written as {@link parseCidr} reads them (the configuration keeps them as text).
 *
 * @param rules the networks
 * @returns the list
 * @throws {CidrError} when one is not a network
 */
export function cidrList(rules: readonly string[]): CidrList {
  return new CidrList(rules.map(parseCidr));
}

/** A list of networks and the question "is this address in one of them?". */
export class CidrList {
  readonly #v4: Cidr[];
  readonly #v6: Cidr[];

  /**
   * A list of the given networks.
   *
   * @param cidrs the networks
   */
  constructor(readonly cidrs: readonly Cidr[]) {
    this.#v4 = cidrs.filter((c) => c.address.kind() === "ipv4");
    this.#v6 = cidrs.filter((c) => c.address.kind() === "ipv6");
  }

  /** True when the list has no network. */
  get empty(): boolean {
    return this.cidrs.length === 0;
  }

  /**
   * Tells whether an address lies in one of the networks (IPv4-mapped addresses are matched as IPv4).
   *
   * @param address the address, parsed by {@link parseClientAddress}
   * @returns true when one network holds it
   */
  has(address: IpAddress | undefined): boolean {
    if (address === undefined) return false;
    if (address instanceof ipaddr.IPv4) return this.#v4.some((c) => address.match(c.address as ipaddr.IPv4, c.bits));
    return this.#v6.some((c) => address.match(c.address as ipaddr.IPv6, c.bits));
  }

  /** The networks, comma-separated, for logs. */
  toString(): string {
    return this.cidrs.map((c) => c.text).join(", ");
  }
}

/**
 * The --allow/--deny rule for one address: a denied network never gets in (deny wins over allow); otherwise an
 * empty or absent allow list lets everyone in, and a non-empty one only its networks. TCP admission and the UDP echo
 * both ask this.
 *
 * @param address the client, parsed by {@link parseClientAddress} (undefined, not an IP address, matches no network)
 * @param allow the `--allow` networks; absent = everyone
 * @param deny the `--deny` networks; absent = no one
 * @returns true when the rules let the address in
 */
export function allowedByRules(address: IpAddress | undefined, allow?: CidrList, deny?: CidrList): boolean {
  if (deny?.has(address)) return false;
  return !allow || allow.empty || allow.has(address);
}

/** Why the access rules or the per-client cap refuse a client. */
export type AccessRefusal = "access_rule" | "per_client_cap";

/**
 * Open connections per client, for `--max-connections-per-ip`: one table per process, however many workers serve
 * (lib/workers.ts keeps it in the main thread and its workers ask it), so the cap is exact.
 */
export interface ClientCounts {
  /**
   * Counts one more connection of `key`, unless it already has the most allowed.
   *
   * @param key the client's address, as {@link clientKey} writes it
   * @returns true when counted, false when the client is at its cap
   */
  enter(key: string): boolean | Promise<boolean>;
  /** Counts the end of a connection {@link enter} counted. */
  leave(key: string): void;
}

/** {@link ClientCounts} in this thread's memory. */
export class LocalClientCounts implements ClientCounts {
  readonly #open = new Map<string, number>();

  /**
   * Empty counts.
   *
   * @param max connections allowed per client; 0 = no limit
   */
  constructor(readonly max: number) {}

  enter(key: string): boolean {
    const open = this.#open.get(key) ?? 0;
    if (this.max > 0 && open >= this.max) return false;
    this.#open.set(key, open + 1);
    return true;
  }

  leave(key: string): void {
    const open = this.#open.get(key) ?? 0;
    if (open <= 1) this.#open.delete(key);
    else this.#open.set(key, open - 1);
  }

  /** Client addresses with at least one open connection. */
  get size(): number {
    return this.#open.size;
  }
}

/**
 * Access control: the access rules and the per-client cap, applied to each new connection before a byte is echoed
 * (one of the admission steps of lib/admission.ts).
 *
 * @example
 * ```ts
 * const access = new AccessControl({ allow: ["10.0.0.0/8"], deny: [], maxPerClient: 2 });
 * access.enter("::ffff:10.1.2.3"); // undefined: let in (and counted)
 * access.enter("192.0.2.1"); // "access_rule"
 * access.leave("::ffff:10.1.2.3"); // when that connection ends
 * ```
 */
export class AccessControl {
  readonly #allow: CidrList;
  readonly #deny: CidrList;
  readonly #maxPerClient: number;
  readonly #open: ClientCounts;

  /**
   * Access control with these rules.
   *
   * @param rules what to enforce (the configuration's text, read here)
   * @param counts where the per-client cap counts (a worker's are its process's; see {@link ClientCounts})
   * @throws {CidrError} when a rule is not a network (lib/options.ts checked them already)
   */
  constructor(rules: AccessRules, counts: ClientCounts = new LocalClientCounts(rules.maxPerClient)) {
    this.#allow = cidrList(rules.allow);
    this.#deny = cidrList(rules.deny);
    this.#maxPerClient = rules.maxPerClient;
    this.#open = counts;
  }

  /** True when there is anything to enforce; otherwise callers can skip access control entirely. */
  get active(): boolean {
    return !this.#allow.empty || !this.#deny.empty || this.#maxPerClient > 0;
  }

  /**
   * Decides whether a client may open one more connection; when it may, counts it (call {@link leave} when
   * that connection ends).
   *
   * @param hostname the client's address
   * @returns undefined when let in, otherwise why not (a promise when the counts are another thread's)
   */
  enter(hostname: string): AccessRefusal | undefined | Promise<AccessRefusal | undefined> {
    const allow = this.#allow;
    const deny = this.#deny;
    if (!allow.empty || !deny.empty) {
      if (!allowedByRules(parseClientAddress(hostname), allow, deny)) return "access_rule";
    }
    if (this.#maxPerClient > 0) {
      const entered = this.#open.enter(clientKey(hostname));
      if (entered instanceof Promise) return entered.then((ok) => ok ? undefined : "per_client_cap");
      if (!entered) return "per_client_cap";
    }
    return undefined;
  }

  /**
   * Counts the end of a connection let in by {@link enter}.
   *
   * @param hostname the same address given to {@link enter}
   */
  leave(hostname: string): void {
    if (this.#maxPerClient <= 0) return;
    this.#open.leave(clientKey(hostname));
  }
}
