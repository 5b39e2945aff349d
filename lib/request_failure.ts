// request_failure: a failed HTTP request to a running echosrv, said in a few plain words, for the commands that are
// its clients (`echosrv stats`, lib/stats_command.ts; `echosrv fault`, lib/faults/cli.ts). Deno's fetch throws
// "fetch failed" for every way a connection fails, with the real reason only in its cause; an operator needs to
// know which: nothing listens there, the name does not resolve, no route, no answer in time.

/**
 * Says in a few plain words why a request failed, from what Deno's fetch reports.
 *
 * @param error what fetch threw (or the HTTP status, as an Error)
 * @param timeoutMs the time allowed for an answer, in milliseconds (a timeout is reported with it, in seconds)
 * @returns the reason, e.g. "connection refused (nothing listens there)"
 */
export function reasonOf(error: unknown, timeoutMs: number): string {
  const err = error as Error & { cause?: unknown };
  if (err?.name === "TimeoutError" || err?.name === "AbortError") return `no answer within ${timeoutMs / 1000} s`;
  const text = `${err?.message ?? error} ${err?.cause ?? ""}`;
  if (/Connection refused/i.test(text)) return "connection refused (nothing listens there)";
  if (/dns error|failed to lookup|Name or service not known|nodename nor servname/i.test(text)) {
    return "the host name does not resolve";
  }
  if (/Network is unreachable|No route to host/i.test(text)) return "no route to that address";
  if (/Connection reset/i.test(text)) return "the connection was reset";
  if (/certificate|tls|handshake/i.test(text)) return `TLS failed: ${text.replace(/^.*?: /, "").trim()}`;
  return (err?.message ?? String(error)).replace(/^fetch failed$/, "the request failed");
}
