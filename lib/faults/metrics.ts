// faults/metrics: the impairments' counters in /metrics (Prometheus text format 0.0.4, named by Prometheus's
// rules: https://prometheus.io/docs/practices/naming/): connections and bytes per profile, and per impairment of
// each profile, plus the table's generation. Workers' counters are summed here, as lib/metrics.ts sums the rest.

import type { ProfileCounters } from "./copy.ts";
import { IMPAIRMENT_KINDS } from "./profile.ts";

/** The counters of one server (or the sum of several): per profile by name, and the table's generation. */
export interface FaultCounters {
  /** The generation of the profile table the server runs under (1 at start). */
  generation: number;
  /** The counters of each profile that has been in the table, by name (kept after it is changed or removed). */
  profiles: Record<string, ProfileCounters>;
}

/**
 * Adds up the fault counters of several servers (workers): counters sum per profile and impairment; the
 * generation is the highest (the workers apply a change before the control API answers, so they agree).
 *
 * @param all one reading per server; undefined where a server has no faults
 * @returns the sum, or undefined when none has faults
 */
export function sumFaultCounters(all: ReadonlyArray<FaultCounters | undefined>): FaultCounters | undefined {
  let total: FaultCounters | undefined;
  for (const counters of all) {
    if (!counters) continue;
    total ??= { generation: 0, profiles: {} };
    total.generation = Math.max(total.generation, counters.generation);
    for (const [name, p] of Object.entries(counters.profiles)) {
      const sum = total.profiles[name] ??= { connections: 0, echoedBytes: 0, impairments: {} };
      sum.connections += p.connections;
      sum.echoedBytes += p.echoedBytes;
      for (const [kind, i] of Object.entries(p.impairments)) {
        const s = sum.impairments[kind as keyof typeof sum.impairments] ??= { connections: 0, bytes: 0, events: 0 };
        s.connections += i.connections;
        s.bytes += i.bytes;
        s.events += i.events;
      }
    }
  }
  return total;
}

function label(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/**
 * The fault families of /metrics. Every impairment of a profile has its series (at 0 until it acts), so a rate over
 * one is 0, not missing. Counters stay with a profile's name when it changes or goes.
 *
 * @param counters the (summed) counters, or undefined when the server has no faults
 * @returns the lines, without a final line feed; none without faults
 */
export function faultMetricLines(counters: FaultCounters | undefined): string[] {
  if (!counters) return [];
  const lines: string[] = [];
  const profiles = Object.entries(counters.profiles).sort(([a], [b]) => a.localeCompare(b));
  const family = (name: string, type: "counter" | "gauge", help: string, samples: string[]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
  };
  family(
    "echosrv_fault_table_generation",
    "gauge",
    "The generation of the fault profile table: 1 at start, raised by each change through the control API.",
    [`echosrv_fault_table_generation ${counters.generation}`],
  );
  family(
    "echosrv_fault_connections_total",
    "counter",
    "Connections that came under a fault profile (at accept, or switched to it), by profile.",
    profiles.map(([name, p]) => `echosrv_fault_connections_total{profile="${label(name)}"} ${p.connections}`),
  );
  family(
    "echosrv_fault_echoed_bytes_total",
    "counter",
    "Bytes echoed under a fault profile, by profile.",
    profiles.map(([name, p]) => `echosrv_fault_echoed_bytes_total{profile="${label(name)}"} ${p.echoedBytes}`),
  );
  const perImpairment = (metric: string, field: "connections" | "bytes" | "events") =>
    profiles.flatMap(([name, p]) =>
      IMPAIRMENT_KINDS.filter((kind) => p.impairments[kind]).map((kind) =>
        `${metric}{profile="${label(name)}",impairment="${kind}"} ${p.impairments[kind]![field]}`
      )
    );
  family(
    "echosrv_fault_impaired_connections_total",
    "counter",
    "Connections an impairment applied to (drawn by its probability), by profile and impairment.",
    perImpairment("echosrv_fault_impaired_connections_total", "connections"),
  );
  family(
    "echosrv_fault_impaired_bytes_total",
    "counter",
    "Bytes an impairment acted on: delayed (latency), paced (bandwidth), sliced (slicer), dropped (loss).",
    perImpairment("echosrv_fault_impaired_bytes_total", "bytes"),
  );
  family(
    "echosrv_fault_events_total",
    "counter",
    "Times an impairment acted: chunks delayed or dropped, segments sliced, stalls, resets, closes, refusals.",
    perImpairment("echosrv_fault_events_total", "events"),
  );
  return lines;
}
