// faults/api: the fault control API, `--fault-api HOST:PORT`: HTTP and JSON on a listener of its own (loopback
// unless told otherwise, a bearer token required off loopback), apart from --metrics because /metrics is for
// anyone who may read and this is for whoever may change how echosrv answers. It lists the table, adds, changes
// and removes profiles, sets a listener's profile, and lists the open connections (lib/faults/control.ts does the
// changing). A bad request gets 400 with a message and changes nothing. Bearer tokens: RFC 6750.

import { formatAddress } from "../address.ts";
import { ListenError } from "../listen.ts";
import { serverLog } from "../log.ts";
import type { FaultApiConfig } from "./config.ts";
import type { FaultController } from "./control.ts";
import {
  FaultSyntaxError,
  formatImpairments,
  type Impairment,
  impairmentFromJson,
  impairmentToJson,
  parseImpairments,
} from "./profile.ts";
import { FaultRequestError, type FaultTable, parseClients, type ProfileEntry } from "./table.ts";

/** The largest request body read (bytes). */
export const MAX_BODY = 64 * 1024;

/** A profile as the API shows it. */
export function profileJson(entry: ProfileEntry, table: FaultTable): Record<string, unknown> {
  return {
    name: entry.profile.name,
    spec: formatImpairments(entry.profile.impairments),
    impairments: entry.profile.impairments.map(impairmentToJson),
    clients: entry.clients.map((c) => c.text),
    listeners: table.listenersOf(entry.profile.name),
  };
}

/** The whole table as GET /faults shows it. */
export function tableJson(controller: FaultController): Record<string, unknown> {
  const table = controller.table;
  return {
    generation: table.generation,
    seed: controller.config.seed,
    profiles: table.profiles.map((entry) => profileJson(entry, table)),
    listeners: table.listeners,
  };
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...headers },
  });
}

function problem(status: number, message: string, headers: Record<string, string> = {}): Response {
  return json({ error: message }, status, headers);
}

/**
 * Compares a secret given by a client with the expected one in constant time: every byte of the expected secret is
 * compared, whatever the given one holds and wherever the two first differ, and no comparison stops early, so the
 * time taken tells nothing about how much of a guess was right (only the expected secret's length sets it).
 */
function sameSecret(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  let difference = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) difference |= (a[i] ?? 0) ^ b[i];
  return difference === 0;
}

/** The realm of the API's challenge (RFC 6750 §3). */
const REALM = "echosrv faults";

/** Where the token the API requires is set, for the messages that refuse one. */
const TOKEN_SOURCE = "--fault-api-token or ECHOSRV_FAULT_API_TOKEN";

/**
 * Checks a request's credentials against the token the API requires, as RFC 6750 §3.1 says to answer: a request
 * with no credentials (no Authorization header, or one of another scheme such as Basic) gets 401 with the challenge
 * alone, no error code; a malformed Bearer header ("Bearer" with no token, or with more than one) gets 400 with
 * `error="invalid_request"`; a token that is not the one required gets 401 with `error="invalid_token"`. Each
 * answer's JSON `error` says which, in words. The token is compared in constant time ({@link sameSecret}).
 *
 * @param authorization the request's Authorization header, or null when it has none
 * @param token the bearer token the API requires
 * @returns undefined when the token is accepted; otherwise the response that refuses the request
 */
function refusal(authorization: string | null, token: string): Response | undefined {
  const challenge = (error?: string, description?: string) => ({
    "www-authenticate": `Bearer realm="${REALM}"` +
      (error ? `, error="${error}", error_description="${description}"` : ""),
  });
  const header = (authorization ?? "").trim();
  const scheme = header.split(/\s+/, 1)[0];
  if (!/^bearer$/i.test(scheme)) {
    const sent = header === "" ? "" : ` (the Authorization header is of the ${scheme} scheme)`;
    return problem(
      401,
      `no token was sent${sent}: this API requires Authorization: Bearer TOKEN (RFC 6750), with the token ` +
        `echosrv was started with (${TOKEN_SOURCE})`,
      challenge(),
    );
  }
  const given = /^bearer\s+(\S+)$/i.exec(header)?.[1];
  if (given === undefined) {
    return problem(
      400,
      "the Authorization header is malformed: write Authorization: Bearer TOKEN, one token without spaces",
      challenge("invalid_request", "write Authorization: Bearer TOKEN"),
    );
  }
  if (!sameSecret(given, token)) {
    return problem(
      401,
      `the token was not accepted: it is not the token echosrv was started with (${TOKEN_SOURCE})`,
      challenge("invalid_token", "the token was not accepted"),
    );
  }
  return undefined;
}

/** Reads `?open=`: whether open connections switch too. */
function openParameter(url: URL): boolean {
  const value = url.searchParams.get("open");
  if (value === null) return false;
  const v = value.toLowerCase();
  if (["1", "true", "yes", ""].includes(v)) return true;
  if (["0", "false", "no"].includes(v)) return false;
  throw new FaultRequestError(`open=${value}: use open=1 (switch open connections too) or open=0`);
}

/** Reads a JSON object body of at most {@link MAX_BODY} bytes. */
async function readBody(request: Request): Promise<Record<string, unknown>> {
  const length = Number(request.headers.get("content-length") ?? 0);
  if (length > MAX_BODY) throw new FaultRequestError(`the body is larger than ${MAX_BODY} bytes`);
  const bytes = new Uint8Array(await request.arrayBuffer());
  if (bytes.length > MAX_BODY) throw new FaultRequestError(`the body is larger than ${MAX_BODY} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new FaultRequestError(`the body is not JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FaultRequestError('the body must be a JSON object, such as {"spec": "latency 200ms"}');
  }
  return value as Record<string, unknown>;
}

/** Refuses fields the request does not know (a typo must not be ignored). */
function onlyFields(body: Record<string, unknown>, known: string[]): void {
  for (const key of Object.keys(body)) {
    if (!known.includes(key)) throw new FaultRequestError(`unknown field "${key}" (the fields: ${known.join(", ")})`);
  }
}

/** Reads the impairments of a PUT: `spec` (the text form) or `impairments` (a list of objects), not both. */
function impairmentsOf(body: Record<string, unknown>): Impairment[] | undefined {
  if (body.spec !== undefined && body.impairments !== undefined) {
    throw new FaultRequestError('give "spec" or "impairments", not both');
  }
  try {
    if (body.spec !== undefined) {
      if (typeof body.spec !== "string") throw new FaultRequestError('"spec" must be a string such as "latency 200ms"');
      return parseImpairments(body.spec);
    }
    if (body.impairments !== undefined) {
      if (!Array.isArray(body.impairments)) throw new FaultRequestError('"impairments" must be a list of objects');
      const list = body.impairments.map(impairmentFromJson);
      const text = list.length ? formatImpairments(list) : "none";
      return parseImpairments(text); // the same checks as the text (each kind at most once)
    }
  } catch (error) {
    if (error instanceof FaultSyntaxError) throw new FaultRequestError(error.message);
    throw error;
  }
  return undefined;
}

function clientsOf(body: Record<string, unknown>) {
  if (body.clients === undefined) return undefined;
  if (!Array.isArray(body.clients) || !body.clients.every((c) => typeof c === "string")) {
    throw new FaultRequestError('"clients" must be a list of networks, such as ["10.0.0.0/8"]');
  }
  return parseClients(body.clients as string[]);
}

/**
 * Answers one request of the control API.
 *
 * @param controller the table and how to change it
 * @param request the request
 * @param token the bearer token required, if any
 * @returns the response
 */
export async function answerFaultRequest(
  controller: FaultController,
  request: Request,
  token: string | undefined,
): Promise<Response> {
  if (token !== undefined) {
    const refused = refusal(request.headers.get("authorization"), token);
    if (refused) return refused;
  }
  const url = new URL(request.url);
  let parts: string[];
  try {
    parts = url.pathname.split("/").filter((p) => p !== "").map(decodeURIComponent);
  } catch {
    return problem(400, `the path ${url.pathname} is not valid percent-encoding`);
  }
  const method = request.method;
  const allow = (methods: string, handlers: Record<string, () => Promise<Response> | Response>) => {
    const handler = handlers[method] ?? (method === "HEAD" ? handlers.GET : undefined);
    if (!handler) return problem(405, `method ${method} not allowed here (allowed: ${methods})`, { allow: methods });
    return handler();
  };
  try {
    if (parts[0] !== "faults") {
      return problem(404, "not found: the API is under /faults (see GET /faults)");
    }
    if (parts.length === 1) return await allow("GET, HEAD", { GET: () => json(tableJson(controller)) });
    if (parts[1] === "connections" && parts.length === 2) {
      return await allow("GET, HEAD", {
        GET: async () => {
          const connections = await controller.connections();
          return json({ generation: controller.table.generation, connections });
        },
      });
    }
    if (parts[1] === "profiles" && parts.length === 2) {
      return await allow("GET, HEAD", {
        GET: () => {
          const table = controller.table;
          return json({ generation: table.generation, profiles: table.profiles.map((p) => profileJson(p, table)) });
        },
      });
    }
    if (parts[1] === "profiles" && parts.length === 3) {
      const name = parts[2];
      return await allow("GET, HEAD, PUT, DELETE", {
        GET: () => {
          const entry = controller.table.profile(name);
          if (!entry) throw new FaultRequestError(`no profile named ${name}`, 404);
          return json(profileJson(entry, controller.table));
        },
        PUT: async () => {
          const open = openParameter(url);
          const body = await readBody(request);
          onlyFields(body, ["spec", "impairments", "clients"]);
          const update = { impairments: impairmentsOf(body), clients: clientsOf(body) };
          if (update.impairments === undefined && update.clients === undefined) {
            throw new FaultRequestError('give "spec" (or "impairments"), "clients", or both');
          }
          const done = await controller.setProfile(name, update, open);
          serverLog.info("fault profile {profile} {what} (generation {generation}{open})", {
            profile: name,
            what: done.created ? "added" : "changed",
            generation: done.generation,
            open: done.open ? `; ${done.switched} open connection(s) switched` : "",
          });
          return json({
            generation: done.generation,
            created: done.created,
            profile: profileJson(done.table.profile(name)!, done.table),
            ...(done.open ? { switched: done.switched, unswitchable: done.unswitchable } : {}),
          }, done.created ? 201 : 200);
        },
        DELETE: async () => {
          const open = openParameter(url);
          const done = await controller.removeProfile(name, open);
          serverLog.info("fault profile {profile} removed (generation {generation})", {
            profile: name,
            generation: done.generation,
          });
          return json({
            generation: done.generation,
            removed: name,
            unbound: done.unbound,
            ...(done.open ? { switched: done.switched, unswitchable: done.unswitchable } : {}),
          });
        },
      });
    }
    if (parts[1] === "listeners" && parts.length === 2) {
      return await allow("GET, HEAD", {
        GET: () => json({ generation: controller.table.generation, listeners: controller.table.listeners }),
      });
    }
    if (parts[1] === "listeners" && parts.length === 3) {
      const id = parts[2];
      return await allow("GET, HEAD, PUT", {
        GET: () => {
          const listener = controller.table.listeners.find((l) => l.id === id);
          if (!listener) throw new FaultRequestError(`no listener ${id}`, 404);
          return json(listener);
        },
        PUT: async () => {
          const open = openParameter(url);
          const body = await readBody(request);
          onlyFields(body, ["profile"]);
          if (!("profile" in body) || (body.profile !== null && typeof body.profile !== "string")) {
            throw new FaultRequestError('give "profile": a profile\'s name, or null for none');
          }
          const profile = body.profile === "none" ? null : body.profile as string | null;
          const done = await controller.setListener(id, profile, open);
          serverLog.info("fault listener {listener}: profile {profile} (generation {generation})", {
            listener: id,
            profile: profile ?? "none",
            generation: done.generation,
          });
          return json({
            generation: done.generation,
            listener: { id, profile },
            ...(done.open ? { switched: done.switched, unswitchable: done.unswitchable } : {}),
          });
        },
      });
    }
    return problem(404, `not found: ${url.pathname} (see GET /faults)`);
  } catch (error) {
    if (error instanceof FaultRequestError) return problem(error.status, error.message);
    throw error;
  }
}

/** The running control API. */
export interface FaultApiServer {
  /** The port it listens on (the one the OS picked for port 0). */
  port: number;
  /** Stops answering and closes the port. */
  close(): Promise<void>;
}

/**
 * Serves the control API.
 *
 * @param config where, and the token
 * @param controller the table and how to change it
 * @returns the running API
 * @throws {ListenError} when the address cannot be listened on
 */
export function serveFaultApi(config: FaultApiConfig, controller: FaultController): FaultApiServer {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: config.hostname,
      port: config.port,
      onListen: () => {},
      onError: (error) => {
        serverLog.error("fault API: {error}", { error: String(error) });
        return problem(500, "internal error");
      },
    }, (request) => answerFaultRequest(controller, request, config.token));
  } catch (error) {
    const where = `the fault API address ${formatAddress(config.hostname, config.port)}`;
    if (error instanceof Deno.errors.AddrInUse) {
      throw new ListenError(`${where} is already in use; choose another --fault-api address`);
    }
    throw new ListenError(`cannot listen on ${where}: ${(error as Error).message}`);
  }
  const port = server.addr.port;
  serverLog.info("serving the fault control API on {url}{auth}", {
    url: `http://${formatAddress(server.addr.hostname, port)}/faults`,
    auth: config.token !== undefined ? " (bearer token required)" : "",
    port,
  });
  return { port, close: () => server.shutdown() };
}
