// The access rules on their own: strict CIDR reading, matching (IPv4-mapped IPv6 as IPv4, deny wins, any allow
// rule denies the rest), and the per-client count.

import assert from "node:assert/strict";
import {
  AccessControl,
  CidrError,
  CidrList,
  clientKey,
  LocalClientCounts,
  parseCidr,
  parseClientAddress,
} from "../lib/access.ts";
import ipaddr from "ipaddr.js";

const list = (...rules: string[]) => new CidrList(rules.map(parseCidr));

Deno.test("parseCidr reads IPv4 and IPv6 networks and single addresses", () => {
  assert.equal(parseCidr("10.0.0.0/8").text, "10.0.0.0/8");
  assert.equal(parseCidr(" 192.0.2.7 ").text, "192.0.2.7/32");
  assert.equal(parseCidr("0.0.0.0/0").text, "0.0.0.0/0");
  assert.equal(parseCidr("2001:DB8::/32").text, "2001:db8::/32");
  assert.equal(parseCidr("::1").text, "::1/128");
  assert.equal(parseCidr("::/0").text, "::/0");
  assert.equal(parseCidr("::ffff:10.0.0.0/104").text, "10.0.0.0/8", "a mapped network is an IPv4 network");
  assert.equal(parseCidr("::ffff:192.0.2.1").text, "192.0.2.1/32");
});

Deno.test("parseCidr refuses anything loose, with a reason", () => {
  const cases: Array<[string, RegExp]> = [
    ["", /not an IPv4 address/],
    ["10.0.0.0/33", /prefix length must be 0 to 32/],
    ["::/129", /0 to 128/],
    ["10.0.0.0/", /prefix length/],
    ["10.0.0.0/08", /prefix length/],
    ["10.0.0.0/8/8", /prefix length/],
    ["10.0.0.0/-1", /prefix length/],
    ["10.0.0.0/ 8", /prefix length/],
    ["10/8", /not an IPv4 address/],
    ["127.1", /not an IPv4 address/],
    ["0x7f.0.0.1/8", /not an IPv4 address/],
    ["010.0.0.0/8", /not an IPv4 address/],
    ["256.0.0.0/8", /not an IPv4 address/],
    ["fe80::1%eth0/64", /not an IPv6 address/],
    ["2001:db8:::/48", /not an IPv6 address/],
    ["example.com/24", /not an IPv4 address/],
    ["10.0.0.1/8", /host bits set: did you mean 10\.0\.0\.0\/8/],
    ["2001:db8::1/32", /did you mean 2001:db8::\/32/],
  ];
  for (const [text, reason] of cases) {
    assert.throws(() => parseCidr(text), (e) => e instanceof CidrError && reason.test(e.message), text);
  }
});

Deno.test("CidrList matches by family; IPv4-mapped client addresses match IPv4 rules", () => {
  const rules = list("10.0.0.0/8", "2001:db8::/32");
  assert.equal(rules.has(parseClientAddress("10.1.2.3")), true);
  assert.equal(rules.has(parseClientAddress("::ffff:10.1.2.3")), true);
  assert.equal(rules.has(parseClientAddress("11.0.0.1")), false);
  assert.equal(rules.has(parseClientAddress("2001:db8:ffff::1")), true);
  assert.equal(rules.has(parseClientAddress("2001:db9::1")), false);
  assert.equal(rules.has(parseClientAddress("not an address")), false);
  assert.equal(list("::/0").has(parseClientAddress("::ffff:10.1.2.3")), false, "::/0 is IPv6 only");
  assert.equal(list("0.0.0.0/0").has(parseClientAddress("::ffff:10.1.2.3")), true);
  assert.equal(list("::ffff:10.0.0.0/104").has(parseClientAddress("10.9.9.9")), true);
});

Deno.test("parseClientAddress reads IPv4 peers, plain and IPv4-mapped, exactly as ipaddr.js's general parser does", () => {
  // parseClientAddress takes dotted quads by a quicker path (it runs for every new connection under access rules);
  // its answers must be those of the general reading, edge cases included.
  const general = (hostname: string) => {
    if (!ipaddr.isValid(hostname)) return undefined;
    const address = ipaddr.parse(hostname);
    return address instanceof ipaddr.IPv6 && address.isIPv4MappedAddress() ? address.toIPv4Address() : address;
  };
  const cases = [
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "10.1.2.3",
    "::ffff:127.0.0.1",
    "::ffff:192.0.2.255",
    "::ffff:0.0.0.0",
    "256.0.0.1",
    "1.2.3.256",
    "::ffff:1.2.3.999",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.4 ",
    "::FFFF:10.1.2.3",
    "::ffff:0:10.1.2.3",
    "2001:db8::1",
    "::1",
    "",
    "not an address",
  ];
  for (const hostname of cases) {
    const fast = parseClientAddress(hostname);
    const slow = general(hostname);
    assert.equal(fast?.kind(), slow?.kind(), hostname);
    assert.equal(fast?.toString(), slow?.toString(), hostname);
  }
  assert.equal(parseClientAddress("::ffff:10.1.2.3")?.toString(), "10.1.2.3");
});

Deno.test("AccessControl: deny wins over allow; any allow rule denies the rest; no rule allows all", () => {
  const none = new AccessControl({ allow: [], deny: [], maxPerClient: 0 });
  assert.equal(none.active, false);
  assert.equal(none.enter("203.0.113.1"), undefined);
  const rules = new AccessControl({ allow: ["10.0.0.0/8", "::1"], deny: ["10.6.0.0/16"], maxPerClient: 0 });
  assert.equal(rules.active, true);
  assert.equal(rules.enter("10.1.1.1"), undefined);
  assert.equal(rules.enter("::ffff:10.1.1.1"), undefined);
  assert.equal(rules.enter("10.6.1.1"), "access_rule", "deny wins");
  assert.equal(rules.enter("::ffff:10.6.1.1"), "access_rule", "deny wins for the mapped form too");
  assert.equal(rules.enter("192.0.2.1"), "access_rule", "not allowed");
  assert.equal(rules.enter("::1"), undefined);
  assert.equal(rules.enter("::2"), "access_rule");
  const denyOnly = new AccessControl({ allow: [], deny: ["127.0.0.0/8"], maxPerClient: 0 });
  assert.equal(denyOnly.enter("::ffff:127.0.0.1"), "access_rule");
  assert.equal(denyOnly.enter("::1"), undefined, "IPv6 loopback is another network");
});

Deno.test("AccessControl: the per-client cap counts one client in all its spellings and frees up on leave", () => {
  const counts = new LocalClientCounts(2);
  const access = new AccessControl({ allow: [], deny: [], maxPerClient: 2 }, counts);
  assert.equal(access.enter("192.0.2.1"), undefined);
  assert.equal(access.enter("::ffff:192.0.2.1"), undefined);
  assert.equal(access.enter("192.0.2.1"), "per_client_cap");
  assert.equal(access.enter("192.0.2.2"), undefined, "another client is not affected");
  assert.equal(counts.size, 2);
  access.leave("::ffff:192.0.2.1");
  assert.equal(access.enter("192.0.2.1"), undefined);
  access.leave("192.0.2.1");
  access.leave("192.0.2.1");
  access.leave("192.0.2.2");
  assert.equal(counts.size, 0, "the table forgets clients with nothing open");
  assert.equal(clientKey("2001:DB8:0::1"), "2001:db8::1");
  assert.equal(clientKey("::ffff:127.0.0.1"), "127.0.0.1");
});
