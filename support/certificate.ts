// certificate: a throwaway TLS certificate made with openssl, for the TLS tests and a stress run over TLS.

import { hasCommand } from "./tools.ts";

/** A throwaway TLS certificate for localhost/127.0.0.1/::1 made with openssl, and its key, in a temporary folder. */
export interface TestCertificate {
  dir: string;
  certFile: string;
  keyFile: string;
  cert: string;
  /** Removes the folder. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Makes a self-signed EC certificate (a leaf: CA:FALSE, so rustls accepts it as a server certificate) valid for a
 * day. Returns undefined when openssl is missing; the caller skips with a message.
 */
export async function makeTestCertificate(): Promise<TestCertificate | undefined> {
  if (!(await hasCommand("openssl"))) return undefined;
  const dir = await Deno.makeTempDir({ prefix: "echosrv-tls-" });
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  const out = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"],
      ...["-keyout", keyFile, "-out", certFile, "-subj", "/CN=localhost"],
      ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
      ...["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`openssl req failed: ${new TextDecoder().decode(out.stderr)}`);
  return {
    dir,
    certFile,
    keyFile,
    cert: await Deno.readTextFile(certFile),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}
