// The impairment profiles' written forms (lib/faults/profile.ts), the profile table's choice of a profile
// (lib/faults/table.ts) and the randomness behind the impairments (lib/faults/random.ts): what is read, what is
// refused and with which message, and that the random draws have the distributions they promise (with fixed seeds,
// so these checks are exact and cannot flake).

import assert from "node:assert/strict";
import { parseCidr, parseClientAddress } from "../lib/access.ts";
import { initialTable } from "../lib/faults/table.ts";
import {
  FaultSyntaxError,
  formatImpairments,
  impairmentFromJson,
  impairmentToJson,
  parseImpairments,
  parseProfile,
  parseProfiles,
  parseRate,
  parseTrigger,
} from "../lib/faults/profile.ts";
import { LossChain, mix32, Random, streamSeed } from "../lib/faults/random.ts";
import { FaultRequestError } from "../lib/faults/table.ts";

Deno.test("profiles: each impairment is read with its units, and written back the same way", () => {
  const canonical = [
    "latency 200ms",
    "latency 200ms jitter 50ms",
    "latency 1s jitter 100ms distribution normal",
    "bandwidth 1Mbit",
    "bandwidth 64kbit burst 4KiB",
    "slicer 1-16 delay 5ms",
    "slicer 100",
    "stall after 64KiB forever",
    "stall after 5s for 10s",
    "stall after 0 for 5s then close",
    "stall after 1000 for 1s then reset probability 50%",
    "reset after 64KiB",
    "reset after 250ms probability 10%",
    "close after 1MiB",
    "close after 2min",
    "refuse fin",
    "refuse rst probability 30%",
    "loss 5%",
    "loss 5% burst 4",
    "loss gemodel p 1% r 30%",
    "loss gemodel p 1% r 30% bad 90% good 0.5%",
  ];
  for (const text of canonical) {
    assert.equal(formatImpairments(parseImpairments(text)), text, text);
    const again = parseImpairments(formatImpairments(parseImpairments(text)));
    assert.deepEqual(again, parseImpairments(text), text);
  }
  assert.deepEqual(parseImpairments("latency 200ms jitter 50ms")[0], {
    kind: "latency",
    delayMs: 200,
    jitterMs: 50,
    distribution: "uniform",
    probability: 1,
  });
  assert.deepEqual(parseImpairments("bandwidth 8Mbit")[0], {
    kind: "bandwidth",
    bitsPerSecond: 8e6,
    burstBytes: 10_000,
    probability: 1,
  });
  assert.equal(parseRate("125kB/s"), 1e6);
  assert.equal(parseRate("1MiB/s"), 8 * 1024 * 1024);
  assert.equal(parseRate("10Mbit/s"), 1e7);
  assert.deepEqual(parseTrigger("64KiB"), { bytes: 65536 });
  assert.deepEqual(parseTrigger("1500"), { bytes: 1500 });
  assert.deepEqual(parseTrigger("5s"), { ms: 5000 });
  assert.deepEqual(parseTrigger("2min"), { ms: 120_000 });
});

Deno.test("profiles: a list of several, none, and the whole NAME: form", () => {
  const profile = parseProfile("slow: latency 200ms jitter 50ms, bandwidth 1Mbit");
  assert.equal(profile.name, "slow");
  assert.deepEqual(profile.impairments.map((i) => i.kind), ["latency", "bandwidth"]);
  assert.deepEqual(parseProfile("ready: none").impairments, []);
  const two = parseProfiles("slow: latency 200ms; flaky: reset after 64KiB probability 10%");
  assert.deepEqual(two.map((p) => p.name), ["slow", "flaky"]);
  assert.equal(two[1].impairments[0].probability, 0.1);
});

Deno.test("profiles: bad input is refused with a message that says what is wrong", () => {
  const refused: Array<[string, RegExp]> = [
    ["jitter 5ms", /"jitter" is not an impairment: the impairments are latency, bandwidth/],
    ["latency 20", /"20" is not a duration/],
    ["latency fast", /"fast" is not a duration/],
    ["bandwidth -1Mbit", /"-1Mbit" is not a rate/],
    ["bandwidth 0bit", /must be 1bit or more/],
    ["bandwidth 1000", /"1000" is not a rate/],
    ["bandwidth 10Mbps", /ambiguous: tc reads bps as bytes per second/],
    ["loss 150%", /it must be 0 to 100%/],
    ["loss 1.5", /it must be 0 to 100%/],
    ["loss -5%", /"-5%" is not a probability/],
    ["refuse probability 2", /it must be 0 to 100%/],
    ["reset after 1m", /ambiguous: write 1min or 1MiB/],
    ["reset 64KiB", /expected "after BYTES\|DURATION", found "64KiB"/],
    ["close", /"after BYTES\|DURATION" is missing/],
    ["stall after 1KiB for 0", /stalls for no time/],
    ["stall after 1KiB forever then close", /"then close" needs "for DURATION"/],
    ["slicer 16-1", /goes down/],
    ["latency 10ms colour blue", /"colour" is not one of its keywords/],
    ["latency 10ms, latency 20ms", /latency is given twice/],
    ["latency 10ms,", /an empty impairment between commas/],
    ["loss 10% burst 0.5", /mean burst length of 1 chunk or more/],
    ["latency 10ms distribution normal", /a distribution needs a jitter/],
  ];
  for (const [text, message] of refused) {
    assert.throws(() => parseImpairments(text), (error: Error) => {
      assert.ok(error instanceof FaultSyntaxError, `${text}: ${error}`);
      assert.match(error.message, message, text);
      return true;
    });
  }
  assert.throws(() => parseProfile("latency 200ms"), /is not a profile: write NAME: IMPAIRMENTS/);
  assert.throws(() => parseProfile("none: latency 1ms"), /"none" is reserved/);
  assert.throws(() => parseProfile("a b: latency 1ms"), /is not a profile name/);
});

Deno.test("profiles: the API's JSON form reads back to the same impairment", () => {
  for (const text of ["latency 200ms jitter 50ms distribution normal", "stall after 1KiB for 5s then close"]) {
    const [impairment] = parseImpairments(text);
    assert.deepEqual(impairmentFromJson(impairmentToJson(impairment)), impairment, text);
  }
  for (const text of ["loss gemodel p 1% r 30% bad 90%", "refuse rst probability 25%", "stall after 0 forever"]) {
    const [impairment] = parseImpairments(text);
    assert.deepEqual(impairmentFromJson(impairmentToJson(impairment)), impairment, text);
  }
  assert.deepEqual(impairmentToJson(parseImpairments("latency 200ms jitter 50ms")[0]), {
    type: "latency",
    delay: "200ms",
    jitter: "50ms",
    probability: 1,
  });
  assert.deepEqual(impairmentFromJson({ type: "reset", after: 1024, probability: 0.5 }), {
    kind: "reset",
    after: { bytes: 1024 },
    probability: 0.5,
  });
  assert.throws(() => impairmentFromJson({ type: "latency", delay: 200 }), /"200" is not a duration/);
  assert.throws(() => impairmentFromJson({ type: "teleport" }), /"type" must be one of latency/);
  assert.throws(() => impairmentFromJson({ type: "latency", delay: "1 s" }), /must be a number or a word/);
});

Deno.test("profile table: the longest client prefix wins, then the listener's profile, then none", () => {
  const config = {
    profiles: parseProfiles("slow: latency 200ms; flaky: reset after 1KiB; one: close after 0"),
    clients: [
      { cidr: "10.0.0.0/8", profile: "flaky" },
      { cidr: "10.1.2.3", profile: "one" },
      { cidr: "2001:db8::/32", profile: "flaky" },
    ],
    listeners: [{ port: 40017, profile: "slow" }],
    mainProfile: null,
    seed: 1,
  };
  const table = initialTable(config, [40017]);
  const at = (listener: string, client: string) => table.select(listener, parseClientAddress(client))?.name;
  assert.equal(at("main", "10.1.2.3"), "one");
  assert.equal(at("main", "::ffff:10.1.2.3"), "one");
  assert.equal(at("40017", "10.9.9.9"), "flaky");
  assert.equal(at("main", "2001:db8::1"), "flaky");
  assert.equal(at("40017", "192.0.2.1"), "slow");
  assert.equal(at("main", "192.0.2.1"), undefined);
  assert.equal(table.generation, 1);
  const { table: changed } = table.withProfile("slow", { impairments: parseImpairments("latency 10ms") });
  assert.equal(changed.generation, 2);
  assert.equal(changed.profile("slow")?.profile.impairments[0].kind, "latency");
  assert.throws(() => table.withProfile("slow", { clients: [parseCidr("10.0.0.0/8")] }), FaultRequestError);
  assert.throws(() => table.withListener("40099", "slow"), /no listener 40099/);
  assert.throws(() => table.withListener("main", "nope"), /no profile named nope/);
  const { table: without, unbound } = table.withoutProfile("slow");
  assert.deepEqual(unbound, ["40017"]);
  assert.equal(without.select("40017", parseClientAddress("192.0.2.1")), undefined);
});

Deno.test("random: the same seed gives the same sequence; streams of different connections differ", () => {
  const a = new Random(42);
  const b = new Random(42);
  const sequence = Array.from({ length: 100 }, () => a.nextUint32());
  assert.deepEqual(Array.from({ length: 100 }, () => b.nextUint32()), sequence);
  assert.notDeepEqual(
    Array.from({ length: 10 }, () => new Random(43).nextUint32()),
    sequence.slice(0, 10),
  );
  assert.notEqual(streamSeed(42, 0, 1), streamSeed(42, 0, 2));
  assert.notEqual(streamSeed(42, 0, 1), streamSeed(42, 1, 1));
  assert.equal(streamSeed(42, 0, 1), streamSeed(42, 0, 1));
  assert.notEqual(mix32(1), mix32(2));
});

Deno.test("random: uniform and normal draws have the distribution they promise (fixed seed, 100000 draws)", () => {
  const random = new Random(7);
  const n = 100_000;
  const bins = new Array(10).fill(0);
  for (let i = 0; i < n; i++) bins[Math.floor(random.float() * 10)]++;
  // Chi-square with 9 degrees of freedom: 27.9 is its 99.9th percentile.
  const chi = bins.reduce((sum, observed) => sum + (observed - n / 10) ** 2 / (n / 10), 0);
  assert.ok(chi < 27.9, `chi-square ${chi}`);
  let sum = 0;
  let squares = 0;
  for (let i = 0; i < n; i++) {
    const x = random.normal();
    sum += x;
    squares += x * x;
  }
  const mean = sum / n;
  const sd = Math.sqrt(squares / n - mean * mean);
  assert.ok(Math.abs(mean) < 0.02, `mean ${mean}`);
  assert.ok(Math.abs(sd - 1) < 0.02, `standard deviation ${sd}`);
});

Deno.test("loss: plain loss drops its rate; a burst model keeps the rate with longer runs of losses", () => {
  const runs = (text: string, seed: number) => {
    const [impairment] = parseImpairments(text);
    if (impairment.kind !== "loss") throw new Error("not loss");
    const chain = new LossChain(impairment.model);
    const random = new Random(seed);
    let lost = 0;
    let runsOfLoss = 0;
    let previous = false;
    const n = 200_000;
    for (let i = 0; i < n; i++) {
      const drop = chain.drop(random);
      if (drop) lost++;
      if (drop && !previous) runsOfLoss++;
      previous = drop;
    }
    return { rate: lost / n, meanRun: lost / runsOfLoss };
  };
  const plain = runs("loss 10%", 3);
  assert.ok(Math.abs(plain.rate - 0.1) < 0.005, JSON.stringify(plain));
  assert.ok(Math.abs(plain.meanRun - 1 / 0.9) < 0.05, JSON.stringify(plain));
  const bursty = runs("loss 10% burst 4", 3);
  assert.ok(Math.abs(bursty.rate - 0.1) < 0.01, JSON.stringify(bursty));
  assert.ok(Math.abs(bursty.meanRun - 4) < 0.3, JSON.stringify(bursty));
  // netem's gemodel: p 5%, r 50%, every chunk lost in Bad: mean loss p/(p+r) = 9.1%, mean run 1/r = 2.
  const ge = runs("loss gemodel p 5% r 50%", 3);
  assert.ok(Math.abs(ge.rate - 0.05 / 0.55) < 0.01, JSON.stringify(ge));
  assert.ok(Math.abs(ge.meanRun - 2) < 0.15, JSON.stringify(ge));
});
