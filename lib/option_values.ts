// option_values: reading the value of one option, as written on the command line or in its ECHOSRV_* variable: a
// host, a list of hosts or of networks, HOST:PORT, the metrics URL, a worker count, a path, a service name, a line
// of text, and any units.ts reader (durations, sizes, integers, masks). Each throws commander's InvalidArgumentError
// with what was expected, which lib/options.ts turns into a usage error naming the option (exit 2).

import { InvalidArgumentError } from "commander";
import ipaddr from "ipaddr.js";
import { CidrError, parseCidr } from "./access.ts";
import { formatAddress } from "./address.ts";
import { DEFAULT_METRICS_PORT, type MetricsConfig } from "./config.ts";
import { parseInteger, UnitError } from "./units.ts";

/** Adapts a units.ts reader to commander: its errors become commander's "invalid argument" errors. */
export function reader<T>(read: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return read(text);
    } catch (error) {
      if (error instanceof UnitError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

/**
 * Checks one host as written: an IPv6 address (a zone such as `%eth0` allowed), an IPv4 address in dotted
 * decimal (four numbers from 0 to 255, no leading zeros), or a host name by RFC 1123 (labels of letters, digits and
 * inner hyphens, up to 63 characters; the last label not all digits, which would be a mistyped IPv4 address).
 *
 * @param host the value
 * @throws {InvalidArgumentError} saying which it looked like and what is wrong
 */
export function checkHost(host: string): void {
  const examples = "(examples: ::, 0.0.0.0, 127.0.0.1, ::1, localhost)";
  if (!/^[A-Za-z0-9._:%-]+$/.test(host)) {
    throw new InvalidArgumentError(`"${host}" is not an address or host name ${examples}`);
  }
  if (host.includes(":")) {
    if (!ipaddr.IPv6.isValid(host)) throw new InvalidArgumentError(`"${host}" is not an IPv6 address ${examples}`);
    return;
  }
  if (/^[0-9.]+$/.test(host)) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(host)) {
      throw new InvalidArgumentError(
        `"${host}" is not an IPv4 address: write four numbers from 0 to 255 without leading zeros, as in 192.0.2.10`,
      );
    }
    return;
  }
  const labels = host.split(".");
  const label = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
  if (host.length > 253 || !labels.every((l) => label.test(l)) || /^\d+$/.test(labels.at(-1)!)) {
    throw new InvalidArgumentError(`"${host}" is not an address or host name ${examples}`);
  }
}

/** Reads one `--host` value (or a comma-separated list of them) and adds it to those given before. */
export function collectHosts(text: string, previous: string[] | undefined): string[] {
  const hosts = text.split(",").map((h) => h.trim()).map((h) =>
    h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h
  );
  for (const host of hosts) checkHost(host);
  return [...(previous ?? []), ...hosts];
}

/** Reads one CIDR rule (or a comma-separated list) and adds it to those given before. */
export function collectCidrs(text: string, previous: string[] | undefined): string[] {
  const rules = text.split(",").map((r) => r.trim());
  for (const rule of rules) {
    try {
      parseCidr(rule);
    } catch (error) {
      if (error instanceof CidrError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  }
  return [...(previous ?? []), ...rules];
}

/**
 * Reads `HOST:PORT`, `[IPv6]:PORT` or a bare `PORT` (meaning 127.0.0.1: metrics stay private unless asked).
 *
 * @param text the value as written
 * @returns the address
 * @throws {InvalidArgumentError} when it is not such an address
 */
export function parseHostPort(text: string): MetricsConfig {
  const value = text.trim();
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d+)$/.exec(value) ?? /^()()(\d+)$/.exec(value);
  if (!match) {
    throw new InvalidArgumentError(
      `"${text}" is not HOST:PORT (examples: 127.0.0.1:${DEFAULT_METRICS_PORT}, [::1]:${DEFAULT_METRICS_PORT}, ` +
        `0.0.0.0:${DEFAULT_METRICS_PORT}; IPv6 in brackets)`,
    );
  }
  const hostname = match[1] || match[2] || "127.0.0.1";
  checkHost(hostname);
  return { hostname, port: reader((t) => parseInteger(t, 0, 65535))(match[3]) };
}

/** Reads the metrics address `echosrv stats` polls: a URL, or HOST:PORT meaning http://HOST:PORT/metrics. */
export function parseMetricsUrl(text: string): string {
  const value = text.trim();
  if (!value.includes("://")) {
    const { hostname, port } = parseHostPort(value);
    return `http://${formatAddress(hostname, port)}/metrics`;
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(
      `"${text}" is not a URL (example: http://127.0.0.1:${DEFAULT_METRICS_PORT}/metrics)`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidArgumentError(`"${text}" is not an http:// or https:// URL`);
  }
  return url.href;
}

/** `--workers auto`, resolved by {@link autoWorkers} once the options are read. */
export const WORKERS_AUTO = 0;

/** Reads `--workers`: a count, or `auto` (see {@link autoWorkers}). */
export function readWorkers(text: string): number {
  if (text.trim().toLowerCase() === "auto") return WORKERS_AUTO;
  try {
    return parseInteger(text, 1, 1024);
  } catch (error) {
    if (error instanceof UnitError) throw new InvalidArgumentError(`${error.message} (or auto: one per core)`);
    throw error;
  }
}

/** Reads a file path option (--log-file, --tls-cert, --tls-key): any text but an empty or blank one. */
export function nonEmptyPath(text: string): string {
  if (text.trim() === "") throw new InvalidArgumentError("the path is empty");
  return text;
}

/** Reads `--name`: a name every service manager takes (systemd unit, launchd label, SCM key). */
export function serviceName(text: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(text) || text.endsWith(".service") || text.endsWith(".plist")) {
    throw new InvalidArgumentError(
      `"${text}" is not a usable service name: use 1 to 64 letters, digits, '-', '_' or '.', starting with a ` +
        "letter or digit (example: echosrv-7)",
    );
  }
  return text;
}

/**
 * A reader of one line of text (a service's display name, its description, an account).
 *
 * @param max the most characters allowed
 * @returns the reader: it refuses an empty text, a line break or another control character, and a longer text
 */
export function oneLineText(max: number): (text: string) => string {
  return (text) => {
    if (text.trim() === "") throw new InvalidArgumentError("the text is empty");
    // deno-lint-ignore no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(text)) {
      throw new InvalidArgumentError("the text must be one line, without control characters");
    }
    if (text.length > max) throw new InvalidArgumentError(`the text is longer than ${max} characters`);
    return text;
  };
}
