// plan: what a service command changes, as data: the steps (directories, files with their whole content, commands,
// calls, waits), which `--dry-run` prints exactly (describePlan) and executePlan carries out in order, undoing what
// it did, in reverse, when a step fails. The platform modules (systemd.ts, launchd.ts, windows.ts) build plans; this
// module runs them, and the service manager's tools (runTool).

import { ServiceError } from "./error.ts";

/** One thing a plan does. Steps with an `undo` are reverted (in reverse order) when a later step fails. */
export type Step =
  | { kind: "mkdir"; path: string; mode: number }
  | { kind: "write"; path: string; content: string; mode: number; undo?: Step[] }
  | { kind: "remove"; path: string }
  | {
    kind: "run";
    argv: string[];
    /** Exit codes that count as success besides 0 (e.g. "already stopped"). */
    okCodes?: number[];
    /** Turns a failure into a clear message (exit code, standard error); undefined keeps the default. */
    explain?: (code: number, stderr: string) => string | undefined;
    undo?: Step[];
  }
  | {
    kind: "call";
    /** The function called and on what, as --dry-run prints it (e.g. `CreateServiceW echosrv: start auto, ...`). */
    what: string;
    /** Calls it; may return a note for the progress line. Fails with a {@link ServiceError}. */
    run: () => Promise<string | void>;
    undo?: Step[];
  }
  | { kind: "wait"; what: string; until: () => Promise<boolean>; timeoutMs: number };

/** What a service command would change, step by step. */
export interface Plan {
  /** One line on what the plan does. */
  summary: string;
  /** What it does, in order. */
  steps: Step[];
  /** Things worth saying about the plan (printed with it). */
  notes?: string[];
}

/** Formats an argv as a POSIX shell would need it typed (for messages and --dry-run). */
export function shellQuote(argv: string[]): string {
  return argv.map((arg) => /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`)
    .join(" ");
}

/** Describes the plan exactly: every file with its whole content, every command, in order. */
export function describePlan(plan: Plan, quote: (argv: string[]) => string = shellQuote): string {
  const lines = [`# ${plan.summary}`, "# dry run: nothing was changed. A real run would do, in order:"];
  for (const step of plan.steps) {
    switch (step.kind) {
      case "mkdir":
        lines.push(`create directory ${step.path} (mode ${step.mode.toString(8)})`);
        break;
      case "write":
        lines.push(`write ${step.path} (mode ${step.mode.toString(8)}):`);
        lines.push(`----- begin ${step.path} -----`);
        lines.push(step.content.replace(/\n$/, ""));
        lines.push(`----- end ${step.path} -----`);
        break;
      case "remove":
        lines.push(`remove ${step.path}`);
        break;
      case "run":
        lines.push(`run: ${quote(step.argv)}`);
        break;
      case "call":
        lines.push(`call: ${step.what}`);
        break;
      case "wait":
        lines.push(`wait until ${step.what} (at most ${Math.round(step.timeoutMs / 1000)} s)`);
        break;
    }
  }
  for (const note of plan.notes ?? []) lines.push(`note: ${note}`);
  return lines.join("\n") + "\n";
}

/** What a tool printed and how it ended. */
export interface ToolResult {
  /** The exit code. */
  code: number;
  /** What it wrote to standard output. */
  stdout: string;
  /** What it wrote to standard error. */
  stderr: string;
}

/**
 * Runs a service manager's tool and collects its output. A missing tool becomes a {@link ServiceError}.
 *
 * @param argv the tool and its arguments
 * @returns exit code and output
 */
export async function runTool(argv: string[]): Promise<ToolResult> {
  const [program, ...args] = argv;
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new ServiceError(`${program} was not found on this machine`);
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      throw new ServiceError(`not allowed to run ${program}: ${(error as Error).message}`);
    }
    throw error;
  }
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function executeStep(step: Step, quote: (argv: string[]) => string): Promise<string> {
  switch (step.kind) {
    case "mkdir":
      try {
        await Deno.mkdir(step.path, { recursive: true, mode: step.mode });
      } catch (error) {
        throw new ServiceError(`cannot create ${step.path}: ${describeFsError(error)}`);
      }
      return `created ${step.path}`;
    case "write":
      try {
        await Deno.writeTextFile(step.path, step.content, { createNew: true, mode: step.mode });
        await Deno.chmod(step.path, step.mode);
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) {
          throw new ServiceError(`${step.path} already exists; nothing was changed`);
        }
        throw new ServiceError(`cannot write ${step.path}: ${describeFsError(error)}`);
      }
      return `wrote ${step.path}`;
    case "remove":
      try {
        await Deno.remove(step.path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) {
          throw new ServiceError(`cannot remove ${step.path}: ${describeFsError(error)}`);
        }
      }
      return `removed ${step.path}`;
    case "run": {
      const result = await runTool(step.argv);
      if (result.code !== 0 && !(step.okCodes ?? []).includes(result.code)) {
        const said = (result.stderr.trim() || result.stdout.trim()).split("\n").slice(-3).join(" / ");
        throw new ServiceError(
          step.explain?.(result.code, said) ??
            `${quote(step.argv)} failed (exit ${result.code})${said ? `: ${said}` : ""}`,
        );
      }
      return `ran: ${quote(step.argv)}`;
    }
    case "call": {
      const note = await step.run();
      return `called: ${step.what}${note ? ` (${note})` : ""}`;
    }
    case "wait": {
      const deadline = performance.now() + step.timeoutMs;
      while (!(await step.until())) {
        if (performance.now() > deadline) {
          throw new ServiceError(`gave up waiting until ${step.what} after ${Math.round(step.timeoutMs / 1000)} s`);
        }
        await sleep(250);
      }
      return `${step.what}`;
    }
  }
}

function describeFsError(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied (run as root / Administrator)";
  return (error as Error)?.message ?? String(error);
}

/**
 * Carries out a plan in order. When a step fails, the `undo` steps of the steps already done run in reverse, so
 * nothing is left half-done, and the failure is thrown as a {@link ServiceError}.
 *
 * @param plan what to do
 * @param report receives one line per step done
 * @param quote formats a command as it is typed on this system, for the progress lines (POSIX shell by default;
 *   the manager's {@link ServiceManager.formatCommand})
 */
export async function executePlan(
  plan: Plan,
  report: (line: string) => void,
  quote: (argv: string[]) => string = shellQuote,
): Promise<void> {
  const undo: Step[][] = [];
  for (const step of plan.steps) {
    try {
      report(await executeStep(step, quote));
    } catch (error) {
      for (const steps of undo.reverse()) {
        for (const undoStep of steps) {
          try {
            report(`undone: ${await executeStep(undoStep, quote)}`);
          } catch (undoError) {
            report(`could not undo (${(undoError as Error).message}); check by hand`);
          }
        }
      }
      throw error;
    }
    if ((step.kind === "write" || step.kind === "run" || step.kind === "call") && step.undo) undo.push(step.undo);
  }
}
