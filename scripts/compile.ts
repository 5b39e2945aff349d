// compile: builds echosrv into one executable with `deno compile`, for this machine (`deno task compile`) or for
// another system (`deno task compile:windows`, `compile:linux`, `compile:macos`), with the permissions that
// executable needs on its system baked in and nothing more (see executablePermissions in lib/service/contract.ts).
// `deno compile` fetches a runtime base binary (denort) for the target from Deno's download site; where that site
// cannot be reached, set DENORT_BIN to a local denort of the same Deno version and target.

import { parseArgs } from "node:util";
import { executablePermissions } from "../lib/service/launcher.ts";

/** A system `deno compile` can build for. */
export interface Target {
  /** Deno's target triple. */
  triple: string;
  /** The system, as Deno.build.os names it (it decides the permissions). */
  os: typeof Deno.build.os;
  /** The output file, under dist/. */
  output: string;
}

/** The targets of each `compile:*` task. */
export const TARGETS: Record<"windows" | "linux" | "macos", Target[]> = {
  windows: [{ triple: "x86_64-pc-windows-msvc", os: "windows", output: "dist/echosrv-windows-x86_64.exe" }],
  linux: [
    { triple: "x86_64-unknown-linux-gnu", os: "linux", output: "dist/echosrv-linux-x86_64" },
    { triple: "aarch64-unknown-linux-gnu", os: "linux", output: "dist/echosrv-linux-aarch64" },
  ],
  macos: [
    { triple: "aarch64-apple-darwin", os: "darwin", output: "dist/echosrv-macos-aarch64" },
    { triple: "x86_64-apple-darwin", os: "darwin", output: "dist/echosrv-macos-x86_64" },
  ],
};

/**
 * The `deno compile` arguments for one target.
 *
 * @param os the system the executable runs on
 * @param output the file to write
 * @param triple the target triple, or undefined for this machine
 * @returns the arguments after `deno`
 */
export function compileArgs(os: typeof Deno.build.os, output: string, triple?: string): string[] {
  return [
    "compile",
    ...executablePermissions(os),
    // --workers starts lib/worker_entry.ts by URL; deno compile only bundles what it can see imported.
    "--include",
    "lib/worker_entry.ts",
    ...(triple ? ["--target", triple] : []),
    "--output",
    output,
    "main.ts",
  ];
}

/**
 * Tells whether `deno compile` failed because it could not download the runtime base binary (and only that: a
 * DENORT_BIN that points nowhere is a different failure).
 *
 * @param output what deno compile printed
 * @returns true for a failed download of denort
 */
export function isBaseBinaryDownloadFailure(output: string): boolean {
  return /Setting up base binary/.test(output) && /Download|error sending request|dns error|connect/i.test(output) &&
    !/Could not find denort/.test(output);
}

async function compileOne(args: string[]): Promise<boolean> {
  console.log(`$ deno ${args.join(" ")}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: new URL("..", import.meta.url),
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  Deno.stderr.writeSync(out.stderr);
  if (out.code === 0) return true;
  if (isBaseBinaryDownloadFailure(stderr)) {
    console.error(
      "\ncompile: deno compile could not download its runtime base binary (denort) from Deno's download site. " +
        "Set DENORT_BIN to the path of a local denort of Deno " + Deno.version.deno + " for this target and run " +
        "again (DENORT_BIN=/path/to/denort deno task compile).",
    );
  }
  return false;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { target: { type: "string" }, output: { type: "string" } },
  });
  let builds: string[][];
  if (values.target === undefined) {
    const output = values.output ?? (Deno.build.os === "windows" ? "dist/echosrv.exe" : "dist/echosrv");
    builds = [compileArgs(Deno.build.os, output)];
  } else if (values.target in TARGETS) {
    const targets = TARGETS[values.target as keyof typeof TARGETS];
    if (Deno.env.get("DENORT_BIN")) {
      console.error("compile: DENORT_BIN is set; it must be a denort for the target (" + targets[0].triple + ")");
    }
    builds = targets.map((t) => compileArgs(t.os, t.output, t.triple));
  } else {
    console.error(`compile: --target must be windows, linux or macos, not "${values.target}"`);
    Deno.exit(2);
  }
  let ok = true;
  for (const args of builds) ok = (await compileOne(args)) && ok;
  Deno.exit(ok ? 0 : 1);
}
