// session_histograms: how long served connections lasted and how many bytes each echoed, counted into fixed
// buckets when a connection ends, for the two Prometheus histograms of lib/metrics.ts. The counts are plain number
// fields of the server's counters (lib/server.ts spreads them in), so everything that already handles those counters
// handles these too: the sums over --workers (lib/metrics.ts, lib/workers.ts), a worker's final counters posted to
// the main thread, the metrics snapshot. Each bucket counts the sessions at or under its bound (cumulative, as
// the text format writes `le` buckets), so a sum over workers is still a valid histogram.
//
// The bucket bounds (Prometheus advises few buckets, chosen for the questions asked of them:
// https://prometheus.io/docs/practices/histograms/):
// - Duration, seconds: 1 ms, 10 ms, 100 ms, 1 s, 10 s step by tens through what a health check, a request and
//   reply or a short test takes (a loopback health check ends within 1 ms, one across a WAN within 100 ms); then
//   60 s and 300 s, because idle timeouts cut sessions there (60 s is a common load balancer idle timeout, 300 s
//   echosrv's own --idle-timeout default: a pile-up just above one of them shows who closes the sessions); then
//   15 min, 1 h, 4 h and 1 day for soak tests. 11 bounds.
// - Bytes echoed per connection: 0, then powers of 16 from 64 B to 16 GiB. `le="0"` alone counts connections that
//   echoed nothing (TCP health checks, port scans: often most connections behind a load balancer); 64 B is a probe
//   line, 1 KiB to 256 KiB request and reply sizes around a socket buffer, 4 MiB to 16 GiB bulk throughput runs.
//   Each step is 16x, so 9 bounds cover 11 orders of magnitude.

/** Upper bounds of the connection duration buckets, in seconds. */
export const DURATION_BUCKETS_SECONDS = [0.001, 0.01, 0.1, 1, 10, 60, 300, 900, 3600, 14400, 86400] as const;

/** Upper bounds of the bytes-per-connection buckets, in bytes. */
export const SIZE_BUCKETS_BYTES = [
  0,
  64,
  1024,
  16384,
  262144,
  4194304,
  67108864,
  1073741824,
  17179869184,
] as const;

/** The counter of one duration bucket: `sessionsUpTo_<bound>s`. */
export type DurationKey = `sessionsUpTo_${(typeof DURATION_BUCKETS_SECONDS)[number]}s`;
/** The counter of one bytes bucket: `sessionsUpTo_<bound>B`. */
export type SizeKey = `sessionsUpTo_${(typeof SIZE_BUCKETS_BYTES)[number]}B`;

/**
 * The histogram counters: `sessionsUpTo_<bound>s` and `sessionsUpTo_<bound>B` count ended sessions at or under
 * each bound (cumulative), `sessionsEnded` all of them (the +Inf bucket), and the two sums.
 */
export type SessionCounters = Record<
  DurationKey | SizeKey | "sessionsEnded" | "sessionSecondsTotal" | "sessionBytesTotal",
  number
>;

/** The key of a duration bucket. */
export function durationKey(bound: (typeof DURATION_BUCKETS_SECONDS)[number]): DurationKey {
  return `sessionsUpTo_${bound}s`;
}

/** The key of a bytes bucket. */
export function sizeKey(bound: (typeof SIZE_BUCKETS_BYTES)[number]): SizeKey {
  return `sessionsUpTo_${bound}B`;
}

/** Fresh counters, all zero. */
export function sessionCounters(): SessionCounters {
  const counters = { sessionsEnded: 0, sessionSecondsTotal: 0, sessionBytesTotal: 0 } as SessionCounters;
  for (const bound of DURATION_BUCKETS_SECONDS) counters[durationKey(bound)] = 0;
  for (const bound of SIZE_BUCKETS_BYTES) counters[sizeKey(bound)] = 0;
  return counters;
}

/**
 * Counts one ended session (once per connection, when it closes; never on the per-byte path).
 *
 * @param counters the server's counters
 * @param seconds how long the connection was open, from accept to close, in seconds
 * @param bytes the bytes it echoed
 */
export function countEndedSession(counters: SessionCounters, seconds: number, bytes: number): void {
  counters.sessionsEnded++;
  counters.sessionSecondsTotal += seconds;
  counters.sessionBytesTotal += bytes;
  for (const bound of DURATION_BUCKETS_SECONDS) if (seconds <= bound) counters[durationKey(bound)]++;
  for (const bound of SIZE_BUCKETS_BYTES) if (bytes <= bound) counters[sizeKey(bound)]++;
}
