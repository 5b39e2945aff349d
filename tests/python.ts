// python: reading YAML and property lists in the tests with Python's own parsers rather than npm packages, so that
// the project's lockfile holds only what the server needs (`deno task` installs every package in deno.lock before
// it runs any task, `start` included). Python's plistlib is the standard library's property-list reader and parses
// the XML with expat, a strict, conforming XML parser (malformed XML is an error, not guessed at); PyYAML
// (Debian's python3-yaml) reads Kubernetes manifests as kubectl's YAML 1.1 would. .ci/run installs both; where
// one is missing the tests that need it skip and say why.

import { hasCommand, within } from "./helpers.ts";

/** The Python command, or why there is none. */
async function python(module: string): Promise<{ command: string } | { missing: string }> {
  for (const command of ["python3", "python"]) {
    if (await hasCommand(command, ["-c", `import ${module}`])) return { command };
  }
  return {
    missing: module === "yaml"
      ? "python3 with PyYAML is not installed (Debian: apt-get install python3 python3-yaml)"
      : `python3 is not installed, or lacks ${module} (Debian: apt-get install python3)`,
  };
}

/** Runs a Python script that reads standard input and prints JSON; throws with Python's message on failure. */
async function runJson(command: string, script: string, input: string): Promise<unknown> {
  const child = new Deno.Command(command, {
    args: ["-c", script],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const out = await within(30_000, "python3", child.output());
  const decoder = new TextDecoder();
  if (!out.success) throw new Error(decoder.decode(out.stderr).trim().split("\n").at(-1));
  return JSON.parse(decoder.decode(out.stdout));
}

/** A reader of some format through Python, or why it is not available here. */
export type Reader = { read(text: string): Promise<unknown> } | { missing: string };

/**
 * The YAML reader: every document of a multi-document file (`---` separated), empty ones left out.
 *
 * @returns the reader, or why it is missing
 */
export async function yamlReader(): Promise<Reader> {
  const found = await python("yaml");
  if ("missing" in found) return found;
  const script = "import json, sys, yaml\n" +
    "print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))";
  return { read: (text) => runJson(found.command, script, text) };
}

/**
 * The property list reader (XML format only): strict XML, then the plist's structure. Dates come back as ISO
 * strings, data as base64.
 *
 * @returns the reader, or why it is missing
 */
export async function plistReader(): Promise<Reader> {
  const found = await python("plistlib");
  if ("missing" in found) return found;
  const script = "import base64, json, plistlib, sys\n" +
    "value = plistlib.loads(sys.stdin.buffer.read(), fmt=plistlib.FMT_XML)\n" +
    "print(json.dumps(value, default=lambda o: base64.b64encode(o).decode() if isinstance(o, bytes) " +
    "else o.isoformat()))";
  return { read: (text) => runJson(found.command, script, text) };
}
