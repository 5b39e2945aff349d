// process_metrics: the process's own health as the standard `process_*` metrics that every Prometheus client
// library exports, with their names, units and meanings
// (https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics): CPU seconds, resident and virtual
// memory, open and maximum file descriptors, start time. It reads them when /metrics is scraped, for the whole
// process (every --workers thread included), and knows nothing of echo.
//
// Where each one comes from:
// - CPU seconds: getrusage(RUSAGE_SELF) through node:process's cpuUsage(), user plus system, on every OS.
// - Resident memory: Deno.memoryUsage().rss on every OS (the kernel's figure: /proc/self/statm on Linux, the task's
//   resident size on macOS, the working set on Windows).
// - On Linux, when Deno lets the program read /proc: the start time, virtual memory, open and maximum descriptors
//   from /proc/self/stat, /proc/self/status, /proc/self/fd and /proc/self/limits, as the Go and Node.js clients
//   read them. Deno 2.9 allows reading anything under /proc only with --allow-all (its permission checker
//   treats /proc as special: "Requires all access"); under `deno task start`'s narrower permissions these three are
//   left out, and the start time falls back to the process's time origin.
// - Elsewhere: the start time is performance.timeOrigin (set when Deno starts the process); virtual memory and
//   descriptors are not exposed, because Deno has no API for them on macOS or Windows.
// A metric that cannot be read is left out rather than written as 0, so a dashboard shows "no data", not a lie.

import process from "node:process";

/** One reading of the process's health. Absent fields could not be read here (see the module comment). */
export interface ProcessSample {
  /** User plus system CPU time since the process started, in seconds. */
  cpuSeconds: number;
  /** Resident set size, in bytes. */
  residentMemoryBytes: number;
  /** When the process started, in seconds since the Unix epoch. */
  startTimeSeconds: number;
  /** Virtual memory size, in bytes (Linux with /proc readable). */
  virtualMemoryBytes?: number;
  /** Open file descriptors (Linux with /proc readable). */
  openFds?: number;
  /** The soft limit on open file descriptors, RLIMIT_NOFILE (Linux with /proc readable). */
  maxFds?: number;
  /** Where the optional fields came from, or why they are missing: for the README's claims and the tests. */
  source: "proc" | "deno";
}

/**
 * Linux reports CPU times in /proc in clock ticks of USER_HZ, which is 100 on every architecture Deno builds for
 * (x86_64 and aarch64); the Go client's procfs library makes the same assumption.
 */
const USER_HZ = 100;

/** Whether reading /proc worked the first time; undefined until tried. Deno's answer does not change later. */
let procReadable: boolean | undefined;

/**
 * The fields of /proc/self/stat after the command name (which may itself hold spaces and parentheses), so that
 * `fields[n - 3]` is field n as proc(5) numbers them.
 */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(")") + 2).trim().split(/\s+/);
}

/** The value of a `Name:  123 kB` line of /proc/self/status, in bytes. */
function statusKiB(status: string, name: string): number | undefined {
  const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(status);
  return match ? Number(match[1]) * 1024 : undefined;
}

/**
 * Reads the /proc part of a sample (Linux only).
 *
 * @returns the fields, or undefined when /proc cannot be read (not Linux, or Deno's permissions forbid it)
 */
function readProc(): Pick<ProcessSample, "startTimeSeconds" | "virtualMemoryBytes" | "openFds" | "maxFds"> | undefined {
  if (Deno.build.os !== "linux" || procReadable === false) return undefined;
  try {
    const stat = statFields(Deno.readTextFileSync("/proc/self/stat"));
    const status = Deno.readTextFileSync("/proc/self/status");
    const bootTime = Number(/^btime (\d+)$/m.exec(Deno.readTextFileSync("/proc/stat"))?.[1]);
    const limit = /^Max open files\s+(\S+)/m.exec(Deno.readTextFileSync("/proc/self/limits"))?.[1];
    let openFds = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) openFds++;
    procReadable = true;
    return {
      // Field 22: the start time in clock ticks after boot.
      startTimeSeconds: bootTime + Number(stat[22 - 3]) / USER_HZ,
      virtualMemoryBytes: statusKiB(status, "VmSize") ?? Number(stat[23 - 3]),
      openFds,
      maxFds: limit === undefined ? undefined : limit === "unlimited" ? Infinity : Number(limit),
    };
  } catch {
    procReadable = false;
    return undefined;
  }
}

/**
 * Reads the process's health now (a few system calls; on Linux with /proc readable, four small files and one
 * directory listing).
 *
 * @returns the sample; fields that cannot be read on this OS or with these permissions are absent
 * @example
 * ```ts
 * const { cpuSeconds, residentMemoryBytes, openFds } = sampleProcess();
 * ```
 */
export function sampleProcess(): ProcessSample {
  const cpu = process.cpuUsage(); // microseconds, every thread of the process
  const sample: ProcessSample = {
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    residentMemoryBytes: Deno.memoryUsage().rss,
    startTimeSeconds: performance.timeOrigin / 1000,
    source: "deno",
  };
  const proc = readProc();
  if (!proc) return sample;
  for (const [key, value] of Object.entries(proc)) {
    if (value !== undefined && !Number.isNaN(value)) (sample as unknown as Record<string, number>)[key] = value;
  }
  sample.source = "proc";
  return sample;
}
