// time: bounded waits for the tests and the stress run. Every wait ends: a helper that would hang fails with a message
// naming what it waited for instead.

/** Fails after `ms` with `what` in the message; the timer never outlives the promise. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 10 ms until true (callers bound it with `within`). */
export async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(10);
}
