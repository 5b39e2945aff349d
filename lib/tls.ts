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

/** What a read error means, in a few words, without Deno's os-error codes and syscall names. */
function readError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable) {
    return "permission denied";
  }
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  return (error as Error).message.replace(/ \(os error \d+\).*$/, "");
}

function readPem(option: "--tls-cert" | "--tls-key", path: string): string {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (error) {
    throw new TlsFileError(option, `cannot read ${path}: ${readError(error)}`);
  }
  const what = option === "--tls-cert" ? "PEM certificate" : "PEM private key";
  if (bytes.length === 0) throw new TlsFileError(option, `${path} holds no ${what}: the file is empty`);
  const text = new TextDecoder().decode(bytes);
  if (!text.includes("-----BEGIN ")) {
    // DER (binary) is the usual mistake: the same content, not base64-armoured.
    const binary = bytes.some((b) => b === 0 || (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d));
    const convert = option === "--tls-cert"
      ? `openssl x509 -inform der -in ${path} -out cert.pem`
      : `openssl pkey -inform der -in ${path} -out key.pem`;
    throw new TlsFileError(
      option,
      binary
        ? `${path} holds no ${what}: it is binary (DER?); convert it with: ${convert}`
        : `${path} holds no ${what}: there is no "-----BEGIN" line in it`,
    );
  }
  return text;
}

/** The labels of the PEM blocks in a text: CERTIFICATE, PRIVATE KEY, EC PRIVATE KEY, ... */
function pemLabels(text: string): string[] {
  return [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]);
}

const SWAPPED = "(are --tls-cert and --tls-key swapped?)";

/**
 * Reads and checks a certificate and its key. The errors say what is wrong in words an operator acts on (a key
 * given as the certificate, a binary DER file, a passphrase-protected key, a damaged block), never a parser's own.
 *
 * @param certFile the PEM certificate chain (leaf first)
 * @param keyFile the PEM private key (PKCS#8, RSA or EC), not encrypted
 * @param now the current time, for the expiry check
 * @returns what Deno.listenTls needs
 * @throws {TlsFileError} naming the option whose file is unreadable, not PEM, mismatched or expired
 */
export function loadTlsFiles(certFile: string, keyFile: string, now: Date = new Date()): TlsMaterial {
  const cert = readPem("--tls-cert", certFile);
  const key = readPem("--tls-key", keyFile);
  const certLabels = pemLabels(cert);
  if (!certLabels.includes("CERTIFICATE")) {
    const isKey = certLabels.some((label) => label.endsWith("PRIVATE KEY"));
    throw new TlsFileError(
      "--tls-cert",
      `${certFile} holds no PEM certificate: ${
        isKey ? `it holds a private key ${SWAPPED}` : `its blocks are ${certLabels.join(", ")}, not CERTIFICATE`
      }`,
    );
  }
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch {
    throw new TlsFileError(
      "--tls-cert",
      `${certFile} holds no PEM certificate: its first CERTIFICATE block cannot be decoded (damaged or cut short)`,
    );
  }
  const keyLabels = pemLabels(key);
  if (keyLabels.includes("ENCRYPTED PRIVATE KEY") || /^Proc-Type: 4,ENCRYPTED/m.test(key)) {
    throw new TlsFileError(
      "--tls-key",
      `${keyFile} is protected by a passphrase; echosrv needs the key unencrypted: ` +
        `openssl pkey -in ${keyFile} -out key.pem (and keep key.pem readable only by echosrv)`,
    );
  }
  if (!keyLabels.some((label) => label.endsWith("PRIVATE KEY"))) {
    throw new TlsFileError(
      "--tls-key",
      `${keyFile} holds no PEM private key: ${
        keyLabels.includes("CERTIFICATE")
          ? `it holds a certificate ${SWAPPED}`
          : `its blocks are ${keyLabels.join(", ")}, not PRIVATE KEY`
      }`,
    );
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new TlsFileError(
      "--tls-key",
      `${keyFile} holds no PEM private key: its PRIVATE KEY block cannot be decoded (damaged, or a kind of key ` +
        "that is not RSA, EC or Ed25519)",
    );
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TlsFileError("--tls-key", `${keyFile} is not the key of the certificate in ${certFile}`);
  }
  if (new Date(leaf.validTo).getTime() < now.getTime()) {
    throw new TlsFileError("--tls-cert", `the certificate in ${certFile} expired on ${leaf.validTo}`);
  }
  return { cert, key, certFile, keyFile, subject: leaf.subject.replaceAll("\n", ", "), validTo: leaf.validTo };
}
