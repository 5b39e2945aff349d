// browser: a real headless Chromium for the tests, driven over the Chrome DevTools Protocol
// (https://chromedevtools.github.io/devtools-protocol/) with Deno's own WebSocket, so no npm package is needed. It
// starts Debian's `chromium` (or $CHROMIUM) with a fresh profile, opens pages, runs expressions in them, takes
// screenshots, and records what a person would see in the console: errors, uncaught exceptions, failed loads, and
// every request the page makes (to prove it reaches nothing but echosrv). Every wait is bounded.

import { hasCommand, within } from "./helpers.ts";

/** The flags for a headless Chromium run as root on a machine without a display, GPU or network to spare. */
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-extensions",
  "--mute-audio",
  "--hide-scrollbars",
  "--remote-debugging-port=0",
];

/**
 * Finds Chromium: $CHROMIUM, else Debian's `chromium`, else `chromium-browser` or `google-chrome`.
 *
 * @returns the command, or why there is none (for a skip message)
 */
export async function findChromium(): Promise<{ command: string } | { missing: string }> {
  const candidates = [Deno.env.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"];
  for (const command of candidates) {
    if (command && (await hasCommand(command, ["--version"]))) return { command };
  }
  return { missing: "no Chromium found (Debian: apt-get install chromium; or set CHROMIUM to its path)" };
}

/** What a page showed in its console, and what it loaded. */
export interface PageLog {
  /** console.error calls, uncaught exceptions, and the browser's own error entries (failed loads, CSP). */
  errors: string[];
  /** Every URL the page requested. */
  requests: string[];
}

type Listener = (params: Record<string, unknown>, sessionId?: string) => void;

/** A running Chromium and its DevTools connection. */
export class Chromium implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #profile: string;
  readonly #socket: WebSocket;
  readonly #closed: Promise<void>;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #listeners = new Map<string, Listener[]>();
  #nextId = 1;

  private constructor(child: Deno.ChildProcess, profile: string, socket: WebSocket, closed: Promise<void>) {
    this.#child = child;
    this.#profile = profile;
    this.#socket = socket;
    this.#closed = closed;
    socket.onmessage = (event) => this.#receive(JSON.parse(event.data as string));
  }

  /**
   * Starts Chromium with a fresh profile and connects to it.
   *
   * @param command the Chromium command (see {@link findChromium})
   * @returns the browser; dispose of it to stop it and remove its profile
   */
  static async launch(command: string): Promise<Chromium> {
    const profile = await Deno.makeTempDir({ prefix: "echosrv-chromium-" });
    const child = new Deno.Command(command, {
      args: [...FLAGS, `--user-data-dir=${profile}`, "about:blank"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Chromium says where DevTools listens on standard error; the rest of what it writes there (D-Bus complaints
    // on a machine without one) is kept for the error message only.
    let seen = "";
    const url = Promise.withResolvers<string>();
    const drained = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        seen = (seen + decoder.decode(chunk, { stream: true })).slice(-20_000);
        const match = /DevTools listening on (ws:\/\/\S+)/.exec(seen);
        if (match) url.resolve(match[1]);
      }
      url.reject(new Error(`Chromium exited before DevTools listened:\n${seen}`));
    })();
    try {
      const socket = new WebSocket(await within(30_000, "Chromium's DevTools to listen", url.promise));
      const open = Promise.withResolvers<void>();
      const closed = Promise.withResolvers<void>();
      socket.onopen = () => open.resolve();
      socket.onerror = () => open.reject(new Error("cannot connect to Chromium's DevTools"));
      socket.onclose = () => closed.resolve();
      await within(10_000, "the DevTools connection", open.promise);
      return new Chromium(child, profile, socket, Promise.all([closed.promise, drained]).then(() => {}));
    } catch (error) {
      child.kill("SIGKILL");
      await child.status;
      await drained.catch(() => {});
      await Deno.remove(profile, { recursive: true });
      throw error;
    }
  }

  #receive(
    message: {
      id?: number;
      result?: unknown;
      error?: { message: string };
      method?: string;
      params?: Record<string, unknown>;
      sessionId?: string;
    },
  ): void {
    if (message.id !== undefined) {
      const pending = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (message.error) pending?.reject(new Error(`DevTools: ${message.error.message}`));
      else pending?.resolve(message.result);
      return;
    }
    for (const listener of this.#listeners.get(message.method ?? "") ?? []) {
      listener(message.params ?? {}, message.sessionId);
    }
  }

  /**
   * Sends a DevTools command and waits for its answer (at most 30 s).
   *
   * @param method the command, e.g. `Page.navigate`
   * @param params its parameters
   * @param sessionId the page session it is for (none: the browser)
   * @returns the command's result
   */
  send<T = Record<string, unknown>>(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<T> {
    const id = this.#nextId++;
    const answer = new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
    this.#socket.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return within(30_000, `DevTools ${method}`, answer);
  }

  /** Calls `listener` for every event named `method`. */
  on(method: string, listener: Listener): void {
    this.#listeners.set(method, [...(this.#listeners.get(method) ?? []), listener]);
  }

  /**
   * Opens a new page (tab), with its console and requests recorded from the start.
   *
   * @param viewport the window size in CSS pixels, its pixel ratio, and whether it is a phone
   * @returns the page
   */
  async newPage(viewport: { width: number; height: number; scale?: number; mobile?: boolean }): Promise<Page> {
    const { targetId } = await this.send<{ targetId: string }>("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send<{ sessionId: string }>("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId);
    for (const domain of ["Page", "Runtime", "Log", "Network"]) await page.send(`${domain}.enable`);
    await page.send("Emulation.setDeviceMetricsOverride", {
      width: viewport.width,
      height: viewport.height,
      deviceScaleFactor: viewport.scale ?? 1,
      mobile: viewport.mobile ?? false,
    });
    return page;
  }

  /** Closes the browser, waits for it to exit, and removes its profile. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.send("Browser.close");
    } catch {
      // Already gone, or not answering: killed below.
    }
    this.#socket.close();
    try {
      await within(5000, "Chromium to exit", this.#child.status);
    } catch {
      this.#child.kill("SIGKILL");
    }
    await this.#child.status;
    await this.#closed;
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}

/** One page of a {@link Chromium}. */
export class Page {
  /** What the page's console showed and what it requested. */
  readonly log: PageLog = { errors: [], requests: [] };
  #loaded = Promise.withResolvers<void>();

  constructor(readonly browser: Chromium, readonly sessionId: string) {
    const mine = (listener: (params: Record<string, unknown>) => void): Listener => (params, session) => {
      if (session === sessionId) listener(params);
    };
    browser.on(
      "Runtime.consoleAPICalled",
      mine((p) => {
        if (p.type === "error" || p.type === "assert") {
          this.log.errors.push(
            `console.${p.type}: ${JSON.stringify((p.args as Array<{ value?: unknown }>).map((a) => a.value))}`,
          );
        }
      }),
    );
    browser.on(
      "Runtime.exceptionThrown",
      mine((p) => {
        const details = p.exceptionDetails as { text: string; exception?: { description?: string } };
        this.log.errors.push(`uncaught: ${details.exception?.description ?? details.text}`);
      }),
    );
    browser.on(
      "Log.entryAdded",
      mine((p) => {
        const entry = p.entry as { level: string; source: string; text: string; url?: string };
        if (entry.level === "error") this.log.errors.push(`${entry.source}: ${entry.text} ${entry.url ?? ""}`);
      }),
    );
    browser.on("Network.requestWillBeSent", mine((p) => this.log.requests.push((p.request as { url: string }).url)));
    browser.on("Page.loadEventFired", mine(() => this.#loaded.resolve()));
  }

  /** Sends a DevTools command to this page. */
  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    return this.browser.send<T>(method, params, this.sessionId);
  }

  /** Loads `url` and waits for its load event (at most 30 s). */
  async goto(url: string): Promise<void> {
    this.#loaded = Promise.withResolvers<void>();
    await this.send("Page.navigate", { url });
    await within(30_000, `loading ${url}`, this.#loaded.promise);
  }

  /**
   * Evaluates an expression in the page and returns its value (JSON-serialisable).
   *
   * @param expression JavaScript, evaluated as in the console
   * @returns its value
   * @throws {Error} when the expression throws
   */
  async evaluate<T>(expression: string): Promise<T> {
    const answer = await this.send<{ result: { value?: T }; exceptionDetails?: { text: string } }>("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    if (answer.exceptionDetails) throw new Error(`${expression}: ${answer.exceptionDetails.text}`);
    return answer.result.value as T;
  }

  /**
   * Polls `expression` every 100 ms until it is truthy (at most `ms`).
   *
   * @returns the truthy value
   */
  async waitFor<T>(expression: string, what: string, ms = 15_000): Promise<T> {
    return await within(
      ms,
      `the page: ${what}`,
      (async () => {
        for (;;) {
          const value = await this.evaluate<T>(expression);
          if (value) return value;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })(),
    );
  }

  /**
   * Takes a PNG of the whole page.
   *
   * @returns the image
   */
  async screenshot(): Promise<Uint8Array> {
    const { data } = await this.send<{ data: string }>("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: true,
    });
    return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  }
}
