// The map stays true (ARCHITECTURE.md): every module of lib/ is on it and every module it names exists; and the
// module graph stays a graph without cycles (type-only imports included), as `deno info` reports it for every entry
// point of the project.

import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ROOT, within } from "./helpers.ts";

/** The project's files under `dir` with the given extension, as paths from the root with forward slashes. */
function filesUnder(dir: string, extension: string): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(join(ROOT, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...filesUnder(path, extension));
    else if (entry.name.endsWith(extension)) found.push(path);
  }
  return found.sort();
}

Deno.test("ARCHITECTURE.md names every module of lib/, and every module it names exists", () => {
  const map = Deno.readTextFileSync(join(ROOT, "ARCHITECTURE.md"));
  const named = new Set(
    [...map.matchAll(/`((?:lib|support|tests|stress|bench|scripts)\/[\w/.-]+\.ts)`/g)].map((m) => m[1]),
  );
  const missing = filesUnder("lib", ".ts").filter((path) => !named.has(path));
  assert.deepEqual(missing, [], "modules of lib/ that ARCHITECTURE.md does not name");
  const gone = [...named].filter((path) => {
    try {
      return !Deno.statSync(join(ROOT, path)).isFile;
    } catch {
      return true;
    }
  });
  assert.deepEqual(gone, [], "modules ARCHITECTURE.md names that do not exist");
});

/**
 * The project's modules and what each imports (code and type imports alike), as `deno info --json` lists them for
 * one module that imports every entry point.
 */
async function moduleGraph(entries: string[]): Promise<Map<string, Set<string>>> {
  const root = pathToFileURL(ROOT).href;
  const dir = await Deno.makeTempDir({ prefix: "echosrv-graph-" });
  try {
    const all = join(dir, "all.ts");
    await Deno.writeTextFile(all, entries.map((entry) => `import "${new URL(entry, root).href}";\n`).join(""));
    const out = await within(
      120_000,
      "deno info --json",
      new Deno.Command(Deno.execPath(), {
        // A file URL, not a path: Deno reads a Windows path (C:\Users\...) as a URL whose scheme is the drive.
        args: ["info", "--json", "--config", join(ROOT, "deno.json"), pathToFileURL(all).href],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output(),
    );
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: Array<{ specifier: string; dependencies?: Array<Record<string, { specifier?: string } | undefined>> }>;
    };
    const graph = new Map<string, Set<string>>();
    for (const module of info.modules) {
      if (!module.specifier.startsWith(root) || !module.specifier.endsWith(".ts")) continue;
      const imports = new Set<string>();
      for (const dependency of module.dependencies ?? []) {
        for (const kind of ["code", "type"]) {
          const target = dependency[kind]?.specifier;
          if (target?.startsWith(root) && target.endsWith(".ts")) imports.add(target.slice(root.length));
        }
      }
      graph.set(module.specifier.slice(root.length), imports);
    }
    return graph;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The import cycles of a graph: its strongly connected components of more than one module (Tarjan). */
function cycles(graph: Map<string, Set<string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (module: string) => {
    index.set(module, next);
    low.set(module, next++);
    stack.push(module);
    onStack.add(module);
    for (const target of graph.get(module) ?? []) {
      if (!index.has(target)) {
        visit(target);
        low.set(module, Math.min(low.get(module)!, low.get(target)!));
      } else if (onStack.has(target)) {
        low.set(module, Math.min(low.get(module)!, index.get(target)!));
      }
    }
    if (low.get(module) !== index.get(module)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== module);
    if (component.length > 1 || graph.get(module)?.has(module)) found.push(component.sort());
  };
  for (const module of graph.keys()) if (!index.has(module)) visit(module);
  return found;
}

Deno.test("no import cycle among the project's modules, type-only imports included", async () => {
  // Every entry point: the program, the worker (started by URL), and every module outside lib/ (tests, support,
  // stress, bench, scripts, docs/repro), so that nothing is left out.
  const entries = [
    "main.ts",
    "lib/worker_entry.ts",
    ...["tests", "support", "stress", "bench", "scripts", "docs/repro"].flatMap((dir) => filesUnder(dir, ".ts")),
  ];
  const graph = await moduleGraph(entries);
  assert.ok(graph.has("lib/server.ts") && graph.has("lib/worker_entry.ts"), "the graph holds lib/");
  assert.deepEqual(cycles(graph), [], "import cycles");
  // The check can fail: a cycle added by hand is found.
  const withCycle = new Map(graph);
  withCycle.set("lib/config.ts", new Set([...graph.get("lib/config.ts") ?? [], "lib/options.ts"]));
  assert.ok(cycles(withCycle).some((cycle) => cycle.includes("lib/config.ts")), "a cycle through config.ts");
});
