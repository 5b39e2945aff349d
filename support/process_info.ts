// process_info: what the kernel says about a process (Linux: /proc/PID): its resident memory and its open file
// descriptors. Elsewhere each reading is undefined, and the caller says what it cannot check.

/**
 * Runs a small reader of /proc and returns its standard output, or undefined when it fails. Deno lets only
 * `--allow-all` read /proc/PID/ directly ("Requires all access"); the test task grants `--allow-run` instead.
 */
function procOutput(command: string, args: string[]): string | undefined {
  try {
    const out = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "null" }).outputSync();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

/** The resident memory of a process in KiB (Linux: /proc/PID/status), or undefined elsewhere. */
export function residentKiB(pid: number): number | undefined {
  let status: string | undefined;
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    status = procOutput("cat", [`/proc/${pid}/status`]);
  }
  const match = /VmRSS:\s+(\d+) kB/.exec(status ?? "");
  return match ? Number(match[1]) : undefined;
}

/** What each open descriptor of a process is, as /proc/PID/fd links say (`socket:[123]`, `pipe:[4]`, ...). */
function descriptorTargets(pid: number): string[] | undefined {
  try {
    const targets: string[] = [];
    for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        targets.push(Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`));
      } catch {
        // closed between the listing and the look
      }
    }
    return targets;
  } catch {
    const listing = procOutput("find", [`/proc/${pid}/fd`, "-mindepth", "1", "-printf", "%l\\n"]);
    return listing?.split("\n").filter((line) => line !== "");
  }
}

/**
 * The open file descriptors of a process by what they are (Linux: /proc/PID/fd), e.g. `{ socket: 3, pipe: 2 }`,
 * or undefined elsewhere (or once the process is gone).
 */
export function openDescriptors(pid: number): Record<string, number> | undefined {
  const targets = descriptorTargets(pid);
  if (!targets) return undefined;
  const kinds: Record<string, number> = {};
  for (const target of targets) {
    const kind = target.replace(/[:[].*$/, "");
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

/** The number of open file descriptors of a process (Linux), or undefined elsewhere. */
export function descriptorCount(pid: number): number | undefined {
  return descriptorTargets(pid)?.length;
}
