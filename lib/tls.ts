// tls: the certificate and key of --tls-cert/--tls-key, read and checked when the options are read, so that a
// missing file, a file that is not PEM, a key that does not belong to the certificate or an expired certificate
// is reported as a usage error naming the option, not as a failure deep inside Deno.listenTls. The TLS itself is
// Deno's (rustls), opened by lib/listen.ts.

import { createPrivateKey, X509Certificate } from "node:crypto";

/** The PEM text Deno.listenTls takes, and what the log says about it. */
export interface TlsMaterial {
  /** The certificate chain, PEM. */
  cert: string;
  /** The private key, PEM. */
  key: string;
  /** The files they came from, for logs. */
  certFile: string;
  keyFile: string;
  /** The leaf certificate's subject and expiry, for the startup log. */
  subject: string;
  validTo: string;
}

/** Thrown when the files cannot be used; `option` names the option at fault. */
export class TlsFileError extends Error {
  override name = "TlsFileError";
  /** @param option `--tls-cert` or `--tls-key` @param message what is wrong */
  constructor(readonly option: "--tls-cert" | "--tls-key", message: string) {
    super(message);
  }
}

function readPem(option: "--tls-cert" | "--tls-key", path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    throw new TlsFileError(option, `cannot read ${path}: ${(error as Error).message}`);
  }
}

/**
 * Reads and checks a certificate and its key.
 *
 * @param certFile the PEM certificate chain (leaf first)
 * @param keyFile the PEM private key (RSA, EC, PKCS#8)
 * @param now the current time, for the expiry check
 * @returns what Deno.listenTls needs
 * @throws {TlsFileError} naming the option whose file is unreadable, not PEM, mismatched or expired
 */
export function loadTlsFiles(certFile: string, keyFile: string, now: Date = new Date()): TlsMaterial {
  const cert = readPem("--tls-cert", certFile);
  const key = readPem("--tls-key", keyFile);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (error) {
    throw new TlsFileError("--tls-cert", `${certFile} holds no PEM certificate (${(error as Error).message})`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new TlsFileError("--tls-key", `${keyFile} holds no PEM private key (${(error as Error).message})`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TlsFileError("--tls-key", `${keyFile} is not the key of the certificate in ${certFile}`);
  }
  if (new Date(leaf.validTo).getTime() < now.getTime()) {
    throw new TlsFileError("--tls-cert", `the certificate in ${certFile} expired on ${leaf.validTo}`);
  }
  return { cert, key, certFile, keyFile, subject: leaf.subject.replaceAll("\n", ", "), validTo: leaf.validTo };
}
