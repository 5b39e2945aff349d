// wine_suite: runs echosrv's whole test suite on Windows, as far as Wine 10 goes: the test task's own command line
// (`deno test ... tests/`) under Deno's Windows build (deno.exe) in the Wine environment of tests/wine.ts, on a copy
// of the project. Its output is passed through, and it ends with the suite's summary line and exit status (0 only
// when nothing failed). Tests that cannot run on Windows are ignored there with their reason, as on any machine that
// lacks what they need. Not part of `deno task test` (it is that task, again, on Windows): `deno task test:wine`.

import { whyNoWine, WineMachine } from "./wine.ts";
import denoJson from "../deno.json" with { type: "json" };

const why = await whyNoWine();
if (why) {
  console.log(`SKIPPED the suite under Wine: ${why}`);
  Deno.exit(0);
}

const tests: string[] = [];
for await (const entry of Deno.readDir(new URL(".", import.meta.url))) {
  if (/_test\.ts$/.test(entry.name)) tests.push(`tests/${entry.name}`);
}
const started = performance.now();
await using machine = await WineMachine.start(["main.ts", ...tests.sort()]);
await machine.boot();
// The test task's arguments after `deno`, as on every machine.
const args = denoJson.tasks.test.split(/\s+/).slice(1);
const out = await machine.deno(args, { ms: 3_600_000, env: { NO_COLOR: "1" } });
const output = out.stdout + out.stderr;
console.log(output);
const summary = output.split("\n").filter((line) => /^(ok|FAILED) \| \d+ passed/.test(line)).at(-1);
const minutes = ((performance.now() - started) / 60_000).toFixed(1);
console.log(`== the suite under Wine's deno.exe (${minutes} min): ${summary ?? "no summary line"}`);
Deno.exitCode = out.code === 0 && summary?.startsWith("ok") ? 0 : 1;
