// The reproduction's driver (docs/latency-under-load.md): builds the C load client (bench/loadgen.c) and the C epoll
// server (bench/epoll_echo.c) with cc, then measures, in interleaved rounds, the tiny Deno echo server of
// echo_server.ts with and without DENO_TOKIO_MAX_IO_EVENTS_PER_TICK and with a larger listen backlog, the same server
// in a Web Worker with the variable set from JavaScript before the worker is spawned, and the C server. Prints one
// Markdown table per connection count: the round trip's percentiles after a warm-up, and in the first second, when
// every connection is opened at once (its set-up counted in its first round trip).
//
//   deno run --allow-run --allow-read --allow-write --allow-env=DENO_TOKIO_MAX_IO_EVENTS_PER_TICK \
//     docs/repro/drive.ts [--conns 400,1000] [--rounds 3] [--seconds 2]
//
// Linux only (loadgen reads /proc); needs cc. The machine should be otherwise idle: compare within a round.

const REPRO = new URL(".", import.meta.url).pathname;
const BENCH = new URL("../../bench/", import.meta.url).pathname;
const OUT = `${BENCH}out/`;
const VARIABLE = "DENO_TOKIO_MAX_IO_EVENTS_PER_TICK";

function option(name: string, otherwise: string): string {
  const at = Deno.args.indexOf(name);
  return at >= 0 ? Deno.args[at + 1] : otherwise;
}
if (Deno.env.get(VARIABLE) !== undefined) {
  console.error(`unset ${VARIABLE} first: every variant would inherit it`);
  Deno.exit(2);
}
const conns = option("--conns", "400,1000").split(",").map(Number);
const rounds = Number(option("--rounds", "3"));
const seconds = option("--seconds", "2");

async function build(name: string): Promise<string> {
  await Deno.mkdir(OUT, { recursive: true });
  const out = await new Deno.Command("cc", {
    args: ["-O2", "-pthread", "-o", `${OUT}${name}`, `${BENCH}${name}.c`],
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return `${OUT}${name}`;
}

const deno = Deno.execPath();
const server = ["run", "--allow-net", `${REPRO}echo_server.ts`];
const inWorker = ["run", "--allow-net", "--allow-env", "--allow-read", `${REPRO}worker_server.ts`];
const variants: Array<{ name: string; command: string[]; env?: Record<string, string> }> = [
  { name: "C epoll server (backlog 4096)", command: [await build("epoll_echo"), "0"] },
  { name: "Deno, defaults", command: [deno, ...server] },
  { name: `Deno, ${VARIABLE}=64`, command: [deno, ...server], env: { [VARIABLE]: "64" } },
  { name: "Deno, tcpBacklog 4096", command: [deno, ...server, "--backlog", "4096"] },
  {
    name: `Deno, ${VARIABLE}=64 and tcpBacklog 4096`,
    command: [deno, ...server, "--backlog", "4096"],
    env: { [VARIABLE]: "64" },
  },
  { name: "Deno in a Worker, defaults", command: [deno, ...inWorker, "--backlog", "4096"] },
  {
    name: `Deno in a Worker, Deno.env.set(${VARIABLE}, 64) before new Worker`,
    command: [deno, ...inWorker, "--backlog", "4096", "--set", "64"],
  },
];
const loadgen = await build("loadgen");

interface Result {
  ok: boolean;
  error?: string;
  round_trips_per_s: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  max_us: number;
  starved_conns: number;
  burst: { p99_us: number; p999_us: number; max_us: number; connect_max_us: number };
}

/** Starts a variant, waits for "port N", runs loadgen's latency mode against it, stops it. */
async function measure(variant: typeof variants[number], n: number): Promise<Result> {
  const child = new Deno.Command(variant.command[0], {
    args: variant.command.slice(1),
    env: variant.env ?? {},
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/port \d+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${variant.name} ended before listening`);
    text += value;
  }
  const port = /port (\d+)/.exec(text)![1];
  const out = await new Deno.Command(loadgen, {
    args: ["latency", port, seconds, `${n}`],
    env: { LOADGEN_WARMUP: "1", LOADGEN_SERVER_PID: `${child.pid}` },
    stdout: "piped",
  }).output();
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").pop()!;
  return JSON.parse(line) as Result;
}

const results = new Map<string, Result[]>();
for (let round = 0; round < rounds; round++) {
  for (const n of conns) {
    // Rotate the order each round, so a disturbance does not always hit the same variant.
    const order = variants.map((_, i) => variants[(i + round) % variants.length]);
    for (const variant of order) {
      const r = await measure(variant, n);
      if (!r.ok) throw new Error(`${variant.name}: ${r.error}`);
      const key = `${n} ${variant.name}`;
      results.set(key, [...(results.get(key) ?? []), r]);
      console.error(`round ${round + 1}, ${n} connections, ${variant.name}: p99 ${r.p99_us} us`);
    }
  }
}

const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
const ms = (us: number) => (us / 1000).toFixed(us < 10_000 ? 2 : 0);
console.log(`Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores; medians of ${rounds} round(s), ms.`);
for (const n of conns) {
  console.log(`\n**${n} connections**\n`);
  console.log("| server | round trips/s | p50 | p99 | p999 | max | starved conns | first s: p99 / p999 / max |");
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const variant of variants) {
    const rs = results.get(`${n} ${variant.name}`)!;
    const m = (f: (r: Result) => number) => median(rs.map(f));
    console.log(
      `| ${variant.name} | ${Math.round(m((r) => r.round_trips_per_s))} | ${ms(m((r) => r.p50_us))} | ` +
        `${ms(m((r) => r.p99_us))} | ${ms(m((r) => r.p999_us))} | ${ms(m((r) => r.max_us))} | ` +
        `${m((r) => r.starved_conns)} | ${ms(m((r) => r.burst.p99_us))} / ${ms(m((r) => r.burst.p999_us))} / ` +
        `${ms(m((r) => r.burst.max_us))} |`,
    );
  }
}
