// counters: what a server counts as it works, as plain numbers cheap to bump on the per-byte path. The metrics
// (lib/metrics.ts) read them when scraped; workers (lib/workers.ts) send theirs to the main thread, which sums them.

import { type AdmissionCounters, admissionCounters } from "./admission.ts";
import { type SessionCounters, sessionCounters } from "./session_histograms.ts";

/** Counters of a server's life so far, plain numbers cheap to bump on the hot path. */
export interface ServerCounters extends AdmissionCounters, SessionCounters {
  /** Connections accepted and served (not counting those refused). */
  accepted: number;
  /** Connections closed at once because the cap was reached. */
  refusedOverCap: number;
  /** Connections closed by the idle timeout. */
  closedIdle: number;
  /** Connections closed by the send timeout: our echo in flight and none of it taken by the peer. */
  closedSendTimeout: number;
  /** Connections that ended with a reset or broken pipe from the peer. */
  resets: number;
  /** Bytes echoed by connections that have ended. */
  bytesEchoed: number;
  /** accept() failures (EMFILE and the like), each followed by a short back-off. */
  acceptErrors: number;
  /** Connections closed after echoing --max-bytes-per-connection bytes. */
  closedMaxBytes: number;
  /** Connections closed at --max-connection-duration. */
  closedMaxDuration: number;
  /** Connections that ended with an error nothing above explains (logged as "unexpected"). */
  unexpectedErrors: number;
}

/** Fresh counters, all zero. */
export function emptyCounters(): ServerCounters {
  return {
    accepted: 0,
    refusedOverCap: 0,
    closedIdle: 0,
    closedSendTimeout: 0,
    resets: 0,
    bytesEchoed: 0,
    acceptErrors: 0,
    closedMaxBytes: 0,
    closedMaxDuration: 0,
    unexpectedErrors: 0,
    ...admissionCounters(),
    ...sessionCounters(),
  };
}
