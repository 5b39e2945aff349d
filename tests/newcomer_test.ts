// What a new user meets first, as they meet it: a first `deno task start` on a machine with nothing cached fetches
// only the packages the server needs and leaves the ready line as the last thing on the terminal; the suite itself
// never installs anything on the machine it runs on; and the smaller rough edges of the issue: values as systemd
// writes them, mistyped hosts and ports, the service commands typed without `service`, TLS file errors in plain
// words, the "port in use" error on standard error.

import assert from "node:assert/strict";
import { parseCommandLine } from "../lib/options.ts";
import { parseDuration, UnitError } from "../lib/units.ts";
import { cannotRun, hasCommand, makeTestCertificate, ROOT, runEchosrv, within } from "./helpers.ts";

const quiet = { out: () => {}, err: () => {} };

/** The npm packages (name@version) of the server's module graph, as `deno info` resolves main.ts. */
async function serverPackages(): Promise<string[]> {
  const out = await within(
    60_000,
    "deno info main.ts",
    new Deno.Command(Deno.execPath(), { args: ["info", "--json", "main.ts"], cwd: ROOT, stdout: "piped" }).output(),
  );
  assert.ok(out.success, "deno info main.ts");
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { npmPackages?: Record<string, unknown> };
  return Object.keys(info.npmPackages ?? {}).map((id) => id.replace(/_.*$/, "")).sort();
}

Deno.test("deno.lock holds only the packages the server needs (`deno task` installs every package in it)", async () => {
  const lock = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.lock`)) as { npm: Record<string, unknown> };
  const locked = Object.keys(lock.npm).map((id) => id.replace(/_.*$/, "")).sort();
  assert.deepEqual(locked, await serverPackages(), "packages in deno.lock that main.ts does not load");
});

/** Why the npm registry a first run downloads from does not answer here, or undefined when it does. */
async function whyNoRegistry(): Promise<string | undefined> {
  const registry = Deno.env.get("NPM_CONFIG_REGISTRY") || "https://registry.npmjs.org/";
  try {
    const response = await fetch(new URL("commander", registry), { signal: AbortSignal.timeout(10_000) });
    await response.body?.cancel();
    return response.ok ? undefined : `the npm registry ${registry} answers HTTP ${response.status}`;
  } catch (error) {
    return `the npm registry ${registry} cannot be reached from here (${(error as Error).message})`;
  }
}

const script = await hasCommand("script", ["--version"]);
const whyNoFirstRun = Deno.build.os !== "linux"
  ? "the pseudo-terminal is made with util-linux's script (Linux)"
  : !script
  ? "script (util-linux) is not installed"
  : await whyNoRegistry();

Deno.test({
  name:
    "a first `deno task start` (empty DENO_DIR, on a terminal) fetches only the server's packages; the ready line stays last",
  ignore: cannotRun("the first-run test", whyNoFirstRun),
  fn: async () => {
    const denoDir = await Deno.makeTempDir({ prefix: "echosrv-first-run-" });
    try {
      // A 100x40 pseudo-terminal, as a person's terminal: Deno draws its download progress bar only on one. The
      // server is stopped with SIGINT after 15 s (by then any late redraw of a progress bar would have happened).
      const deno = Deno.execPath();
      const command = `stty cols 100 rows 40; exec timeout -s INT 15 '${deno}' task start --port 0 -H 127.0.0.1`;
      const out = await within(
        120_000,
        "a first deno task start",
        new Deno.Command("script", {
          args: ["-q", "-e", "-c", command, "/dev/null"],
          cwd: ROOT,
          env: { DENO_DIR: denoDir, TERM: "xterm-256color" },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output(),
      );
      const screen = new TextDecoder().decode(out.stdout);
      const ready = screen.search(/echoing on port \d+/);
      assert.ok(ready >= 0, `the server started:\n${screen}`);
      // After the ready line: no cursor moved up and nothing erased (what a late progress bar redraw does), so the
      // line is still on screen when the person looks.
      const after = screen.slice(ready);
      const stop = after.search(/stop requested/);
      const untilStop = stop < 0 ? after : after.slice(0, stop);
      const csi = new RegExp(`${String.fromCharCode(0x1b)}\\[\\d*[AJK]`); // cursor up, erase display, erase line
      assert.doesNotMatch(untilStop, csi, `the ready line was overwritten:\n${JSON.stringify(untilStop)}`);
      // What was fetched: exactly the server's packages.
      const fetched: string[] = [];
      const registry = `${denoDir}/npm/registry.npmjs.org`;
      for (const entry of Deno.readDirSync(registry)) {
        const names = entry.name.startsWith("@")
          ? [...Deno.readDirSync(`${registry}/${entry.name}`)].map((e) => `${entry.name}/${e.name}`)
          : [entry.name];
        for (const name of names) {
          for (const version of Deno.readDirSync(`${registry}/${name}`)) {
            if (version.isDirectory) fetched.push(`${name}@${version.name}`);
          }
        }
      }
      assert.deepEqual(fetched.sort(), await serverPackages());
    } finally {
      await Deno.remove(denoDir, { recursive: true });
    }
  },
});

Deno.test("no test installs system packages (tests never change the host; .ci/run installs what they need)", () => {
  const managers = [
    "apt-get",
    "apt",
    "dpkg",
    "dnf",
    "yum",
    "apk",
    "pacman",
    "zypper",
    "brew",
    "choco",
    "winget",
    "snap",
  ];
  const starts = new RegExp(`(?:Command|spawn|exec)\\(\\s*["'\`](?:${managers.join("|")})["'\`]`);
  for (const entry of Deno.readDirSync(`${ROOT}tests`)) {
    if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
    const text = Deno.readTextFileSync(`${ROOT}tests/${entry.name}`);
    assert.doesNotMatch(text, starts, `${entry.name} runs a package manager`);
  }
});

Deno.test("durations as systemd writes them: --idle-timeout 5min, 2h 30min, 1min30s; units are checked, M is months", () => {
  const cases: Array<[string, number]> = [
    ["5min", 300_000],
    ["2h 30min", 9_000_000],
    ["1min30s", 90_000],
    ["90 seconds", 90_000],
    ["500msec", 500],
    ["1d", 86_400_000],
    ["1.5s", 1500],
    ["5m", 300_000],
    ["0", 0],
    ["0s", 0],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
  for (const text of ["30", "5 fortnights", "-1s", "1h 30", "", "100us", "5M", "4w"]) {
    assert.throws(() => parseDuration(text), UnitError, text);
  }
  assert.throws(() => parseDuration("5M"), /M is months/);
  assert.throws(() => parseDuration("100us"), /shortest is 1ms/);
  const parsed = parseCommandLine(["--idle-timeout", "5min", "--shutdown-timeout", "1min 30s"], quiet);
  assert.equal(parsed.kind, "run");
  if (parsed.kind === "run") {
    assert.deepEqual([parsed.config.server.idleTimeoutMs, parsed.config.server.shutdownTimeoutMs], [300_000, 90_000]);
  }
});

/** Runs the option parser as echosrv does, and returns the exit code and what it wrote to standard error. */
function usage(args: string[]): { code: number | undefined; err: string } {
  let err = "";
  const what = parseCommandLine(args, { out: () => {}, err: (text) => err += text });
  return { code: what.kind === "exit" ? what.code : undefined, err };
}

Deno.test("--port -1 is out of range, not 'not a whole number'", () => {
  const { code, err } = usage(["--port", "-1"]);
  assert.equal(code, 2);
  assert.match(err, /-1 is out of range: use 0 to 65535/);
  assert.doesNotMatch(err, /whole number/);
  assert.match(usage(["--max-connections", "-5"]).err, /-5 is out of range/);
  assert.match(usage(["--port", "1.5"]).err, /"1\.5" is not a whole number/);
});

Deno.test("--host 999.1.1.1 is a usage error (exit 2) that says what an IPv4 address is; names and IPv6 still pass", async () => {
  const { code, stderr, stdout } = await runEchosrv(["--host", "999.1.1.1", "--port", "0"]);
  assert.equal(code, 2, stderr);
  assert.equal(stdout, "", "nothing starts");
  assert.match(stderr, /--host.*'999\.1\.1\.1'.*not an IPv4 address: write four numbers from 0 to 255/);
  for (const bad of ["1.2.3", "010.0.0.1", "256.0.0.1", "1::2::3", "-bad", "a..b", "host_name"]) {
    assert.equal(usage(["--host", bad]).code, 2, bad);
  }
  assert.match(usage(["--metrics", "999.1.1.1:9407"]).err, /not an IPv4 address/);
  for (const good of ["127.0.0.1", "::1", "[::1]", "fe80::1%eth0", "localhost", "echo-1.example.com"]) {
    assert.equal(usage(["--host", good]).code, undefined, good);
  }
});

Deno.test("`echosrv status` (service verbs typed without `service`) points at `echosrv service status`; `help` shows help", () => {
  for (const verb of ["status", "install", "stop"]) {
    const { code, err } = usage([verb]);
    assert.equal(code, 2, verb);
    assert.match(err, new RegExp(`unknown command '${verb}'.*did you mean \`echosrv service ${verb}\`\\?`), verb);
    assert.doesNotMatch(err, /too many arguments/);
  }
  assert.match(
    usage(["--port", "7", "restart", "--name", "e2"]).err,
    /did you mean `echosrv service restart --name e2`/,
  );
  assert.match(
    usage(["extra"]).err,
    /unknown command 'extra': the commands are run \(the default\), stats and service/,
  );
  assert.equal(usage(["help"]).code, 0);
  assert.equal(usage(["run", "--port", "0"]).code, undefined, "run is still the default command");
});

const NO_OPENSSL = await hasCommand("openssl") ? undefined : "openssl is not installed (it makes the test certificate)";

Deno.test({
  name: "TLS file errors say what is wrong and what to do, never a parser's jargon",
  ignore: cannotRun("the TLS file error test", NO_OPENSSL),
}, async () => {
  await using cert = await makeTestCertificate();
  assert.ok(cert, "a test certificate was made");
  const file = async (name: string, content: string | Uint8Array) => {
    const path = `${cert.dir}/${name}`;
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
    return path;
  };
  const openssl = async (args: string[]) => {
    const out = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
  };
  const der = `${cert.dir}/cert.der`;
  await openssl(["x509", "-in", cert.certFile, "-outform", "der", "-out", der]);
  const encrypted = `${cert.dir}/encrypted.pem`;
  await openssl(["pkey", "-in", cert.keyFile, "-aes256", "-passout", "pass:secret", "-out", encrypted]);
  const cases: Array<[string, string, RegExp]> = [
    [der, cert.keyFile, /cert\.der holds no PEM certificate: it is binary \(DER\?\); convert it with: openssl x509/],
    [
      cert.keyFile,
      cert.keyFile,
      /holds no PEM certificate: it holds a private key \(are --tls-cert and --tls-key swapped\?\)/,
    ],
    [
      cert.certFile,
      cert.certFile,
      /holds no PEM private key: it holds a certificate \(are --tls-cert and --tls-key swapped\?\)/,
    ],
    [cert.certFile, encrypted, /encrypted\.pem is protected by a passphrase; echosrv needs the key unencrypted/],
    [await file("empty.pem", ""), cert.keyFile, /empty\.pem holds no PEM certificate: the file is empty/],
    [
      await file("text.pem", "hello\n"),
      cert.keyFile,
      /text\.pem holds no PEM certificate: there is no "-----BEGIN" line/,
    ],
    [
      await file("cut.pem", cert.cert.slice(0, 200)),
      cert.keyFile,
      /cut\.pem holds no PEM certificate: .* cannot be decoded/,
    ],
    [cert.dir, cert.keyFile, /--tls-cert.*cannot read .*: it is a directory$/m],
    [`${cert.dir}/missing.pem`, cert.keyFile, /--tls-cert.*cannot read .*missing\.pem: no such file$/m],
  ];
  for (const [certFile, keyFile, message] of cases) {
    const { code, err } = usage(["--tls-cert", certFile, "--tls-key", keyFile]);
    assert.equal(code, 2, err);
    assert.match(err, message);
    assert.doesNotMatch(err, /BER error|nom error|DECODER|libcrypto|os error|readfile|Unexpected Tag/, err);
  }
});

Deno.test("a port in use: the reason is on standard error (one line, exit 1), and still in the log", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = holder.addr.port;
    for (const args of [["--port", String(port)], ["--port", "0", "--metrics", `127.0.0.1:${port}`]]) {
      const { code, stdout, stderr } = await runEchosrv(["-H", "127.0.0.1", ...args]);
      assert.equal(code, 1, args.join(" "));
      assert.match(stderr, new RegExp(`^echosrv: .*${port}.* is already in use.*\\n$`), args.join(" "));
      assert.equal(stderr.split("\n").length, 2, "one line");
      assert.match(stdout, /\[ERR\].*already in use/, "the log line stays where the log goes");
    }
  } finally {
    holder.close();
  }
});
