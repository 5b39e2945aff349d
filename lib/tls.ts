// tls: the certificate and key of --tls-cert/--tls-key, read and checked when the options are read, so that a
// missing file, a file that is not PEM, a key that does not belong to the certificate or an expired certificate
// is reported as a usage error naming the option, not as a failure deep inside the TLS stack; and the TLS listener
// and connections (see TlsListener for why they are node:tls sessions over Deno's TCP, not Deno.listenTls).

import type { Buffer } from "node:buffer";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { createSecureContext, type SecureContext, TLSSocket } from "node:tls";
import type { TlsMaterial } from "./config.ts";

/** Thrown when the files cannot be used; `option` names the option at fault. */
export class TlsFileError extends Error {
  /** The error's name, as stack traces show it. */
  override name = "TlsFileError";
  /**
   * A file that cannot be used.
   *
   * @param option `--tls-cert` or `--tls-key`
   * @param message what is wrong
   */
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

/**
 * Opens a TLS listener: a TCP server of node:net (which Deno provides) whose connections are server-side TLS sessions
 * of node:tls. Not Deno.listenTls, because Deno's TLS connection drives its handshake in a task of its own that
 * keeps the TCP socket open until the handshake ends, whatever the program does: closing a connection whose client
 * never finished its handshake left the socket ESTABLISHED until the client went away (an unauthenticated way to
 * hold the server's descriptors, unseen by the limits), and a Deno TLS connection offers no TCP_NODELAY. With
 * node:net the TCP socket is the program's own: destroying it frees it at once, and Nagle's algorithm can be turned
 * off. (Deno.listen under node:tls through a stream wrapper was tried too: it never sends close_notify.)
 *
 * @param hostname the address to listen on
 * @param port the port (0: the OS picks one)
 * @param reusePort SO_REUSEPORT, for --workers (Linux)
 * @param material the certificate chain and key
 * @param backlog the listen backlog (the kernel caps it at net.core.somaxconn)
 * @returns the listener, listening
 * @throws Deno.errors.AddrInUse, PermissionDenied or AddrNotAvailable as Deno.listen would (lib/listen.ts words
 *   them), or an Error with the system's code
 */
export async function listenTls(
  hostname: string,
  port: number,
  reusePort: boolean | undefined,
  material: Pick<TlsMaterial, "cert" | "key">,
  backlog?: number,
): Promise<TlsListener> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(denoListenError(error)));
    // Windows' IPv6 sockets are v6-only, as Deno.listen leaves them; elsewhere [::] is dual-stack (lib/listen.ts).
    server.listen({ host: hostname, port, reusePort, backlog, ipv6Only: Deno.build.os === "windows" }, () => resolve());
  });
  server.removeAllListeners("error");
  return new TlsListener(server, createSecureContext({ cert: material.cert, key: material.key }));
}

/** A listen failure of node:net as the Deno error Deno.listen throws for it. */
function denoListenError(error: Error): Error {
  const code = (error as { code?: string }).code;
  if (code === "EADDRINUSE") return new Deno.errors.AddrInUse(error.message);
  if (code === "EACCES") return new Deno.errors.PermissionDenied(error.message);
  if (code === "EADDRNOTAVAIL") return new Deno.errors.AddrNotAvailable(error.message);
  return error;
}

/** Accepted TCP connections waiting for {@link TlsListener.accept}, at most (more are closed at once). */
const ACCEPT_QUEUE_LIMIT = 4096;

/** A listening TLS server with the accept-loop interface of a Deno.Listener (see {@link listenTls}). */
export class TlsListener {
  readonly #server: Server;
  readonly #context: SecureContext;
  readonly #ready: Socket[] = [];
  #waiting: PromiseWithResolvers<Socket> | undefined;
  #failure: Error | undefined;
  #closed = false;

  /**
   * A TLS listener over a listening node:net server.
   *
   * @param server a listening node:net server (pauseOnConnect, allowHalfOpen)
   * @param context the certificate and key
   */
  constructor(server: Server, context: SecureContext) {
    this.#server = server;
    this.#context = context;
    server.on("connection", (socket: Socket) => {
      if (this.#waiting) {
        this.#waiting.resolve(socket);
        this.#waiting = undefined;
      } else if (this.#ready.length < ACCEPT_QUEUE_LIMIT) this.#ready.push(socket);
      else socket.destroy();
    });
    // Accept failures (EMFILE and the like) reach the accept loop, which logs them and backs off.
    server.on("error", (error: Error) => {
      if (this.#waiting) {
        this.#waiting.reject(error);
        this.#waiting = undefined;
      } else this.#failure = error;
    });
  }

  /** The address listened on. */
  get addr(): Deno.NetAddr {
    const address = this.#server.address();
    if (!address || typeof address === "string") return { transport: "tcp", hostname: "", port: 0 };
    return { transport: "tcp", hostname: address.address, port: address.port };
  }

  /**
   * Waits for the next TCP connection and begins its TLS handshake (await {@link TlsConnection.handshake}).
   *
   * @returns the connection
   * @throws Deno.errors.BadResource once the listener is closed; an accept failure (EMFILE, ...)
   */
  async accept(): Promise<TlsConnection> {
    if (this.#closed) throw new Deno.errors.BadResource("the TLS listener is closed");
    if (this.#failure) {
      const failure = this.#failure;
      this.#failure = undefined;
      throw failure;
    }
    let socket = this.#ready.shift();
    if (!socket) {
      this.#waiting = Promise.withResolvers<Socket>();
      socket = await this.#waiting.promise;
    }
    return new TlsConnection(socket, this.#context);
  }

  /** Stops listening; connections not yet accepted are closed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const socket of this.#ready.splice(0)) socket.destroy();
    this.#waiting?.reject(new Deno.errors.BadResource("the TLS listener is closed"));
    this.#waiting = undefined;
  }
}

/** The bytes of decrypted input queued before reading from the TCP socket stops (backpressure). */
const READ_QUEUE_LIMIT = 256 * 1024;
/** Where the backpressure cannot be applied, the queued input at which the connection is closed. */
const READ_QUEUE_HARD_LIMIT = 16 * 1024 * 1024;

/** The native TCP handle under a node:tls socket in Deno 2.9 (`_handle._nativeTcpHandle`), if there is one. */
function nativeHandle(socket: TLSSocket): { readStop(): unknown; readStart(): unknown } | undefined {
  const handle = (socket as unknown as { _handle?: { _nativeTcpHandle?: unknown } })._handle?._nativeTcpHandle;
  const native = handle as { readStop?: unknown; readStart?: unknown } | undefined;
  return typeof native?.readStop === "function" && typeof native?.readStart === "function"
    ? native as { readStop(): unknown; readStart(): unknown }
    : undefined;
}

/** How long a clean close waits for close_notify and the FIN to be taken by the peer (ms). */
export const CLOSE_NOTIFY_WAIT_MS = 1_000;

/**
 * One TLS connection with the methods of a Deno.Conn that the echo uses (read, write, closeWrite, close,
 * setNoDelay, remoteAddr) and `handshake()`, over a server-side TLS session of node:tls on a node:net socket.
 */
export class TlsConnection {
  readonly #tcp: Socket;
  readonly #tls: TLSSocket;
  readonly #secure: Promise<void>;
  /** Decrypted input not yet read, and whether the peer's stream has ended or failed. */
  readonly #queue: Buffer[] = [];
  #queued = 0;
  #ended = false;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;
  #finished: Promise<void> | undefined;
  #established = false;
  #closed = false;
  #readingStopped = false;
  /** The client's address. */
  readonly remoteAddr: Deno.NetAddr;
  /** The server's address of this connection. */
  readonly localAddr: Deno.NetAddr;

  /**
   * A TLS session over an accepted TCP socket; its handshake runs on {@link handshake}.
   *
   * @param tcp the accepted TCP socket (owned from here on)
   * @param context the certificate and key
   */
  constructor(tcp: Socket, context: SecureContext) {
    this.#tcp = tcp;
    this.remoteAddr = { transport: "tcp", hostname: tcp.remoteAddress ?? "", port: tcp.remotePort ?? 0 };
    this.localAddr = { transport: "tcp", hostname: tcp.localAddress ?? "", port: tcp.localPort ?? 0 };
    // Nagle's algorithm off from the start: the server's session tickets follow the handshake unacknowledged, and
    // would hold the first small echo back by a delayed ACK (40 ms on Linux).
    tcp.setNoDelay(true);
    this.#tls = new TLSSocket(tcp, { isServer: true, secureContext: context });
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#secure = promise;
    this.#secure.catch(() => {}); // a handshake nobody waits for (refused before it) must not be unhandled
    this.#tls.once("secure", () => {
      this.#established = true;
      resolve();
    });
    this.#tls.on("data", (chunk: Buffer) => {
      this.#queue.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued >= READ_QUEUE_LIMIT) this.#stopReading();
      this.#wakeReader();
    });
    this.#tls.on("end", () => {
      this.#ended = true;
      this.#wakeReader();
    });
    this.#tls.on("error", (error: Error) => {
      this.#failure ??= error;
      reject(error);
      this.#wakeReader();
    });
    this.#tls.on("close", () => {
      reject(new Deno.errors.ConnectionReset("the connection closed before its TLS handshake completed"));
      this.#ended = true;
      this.#wakeReader();
    });
  }

  /**
   * Resolves when the TLS handshake has completed.
   *
   * @throws the handshake's failure (a client that speaks no TLS, rejects the certificate, or goes away)
   */
  handshake(): Promise<void> {
    return this.#secure;
  }

  /**
   * Reads decrypted bytes into `buffer`.
   *
   * @param buffer where to put them
   * @returns how many, or null at the end of the client's stream
   * @throws Deno.errors.ConnectionReset when the connection failed
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#queued === 0 && !this.#ended && !this.#failure) {
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    if (this.#queued === 0) {
      if (this.#failure && !this.#ended) throw denoError(this.#failure);
      return null;
    }
    let n = 0;
    while (n < buffer.length && this.#queue.length > 0) {
      const chunk = this.#queue[0];
      const take = Math.min(chunk.length, buffer.length - n);
      buffer.set(chunk.subarray(0, take), n);
      n += take;
      if (take === chunk.length) this.#queue.shift();
      else this.#queue[0] = chunk.subarray(take);
    }
    this.#queued -= n;
    if (this.#queued < READ_QUEUE_LIMIT) this.#startReading();
    return n;
  }

  /**
   * Stops reading from the TCP socket while {@link READ_QUEUE_LIMIT} bytes wait to be echoed: the backpressure that
   * stalls a client which sends without reading. It is done on the native TCP handle under the TLS session, because
   * in Deno 2.9 a paused node:tls socket never reads again after `resume()` (tests/tls_test.ts has the case). Where
   * that handle is not there (another Deno), a connection whose queue passes {@link READ_QUEUE_HARD_LIMIT} is closed
   * instead, so memory stays bounded either way.
   */
  #stopReading(): void {
    if (this.#readingStopped) return;
    const native = nativeHandle(this.#tls);
    if (native) {
      this.#readingStopped = true;
      native.readStop();
    } else if (this.#queued > READ_QUEUE_HARD_LIMIT) {
      this.#failure ??= new Deno.errors.ConnectionReset("the TLS client sends without reading its echo");
      this.#destroy();
    }
  }

  #startReading(): void {
    if (!this.#readingStopped) return;
    this.#readingStopped = false;
    nativeHandle(this.#tls)?.readStart();
  }

  /**
   * Encrypts and sends `data`; resolves once it has been handed to the TCP socket.
   *
   * @param data the bytes (copied; the caller may reuse the buffer at once)
   * @returns data.length
   * @throws Deno.errors.ConnectionReset or BrokenPipe when the connection failed
   */
  write(data: Uint8Array): Promise<number> {
    if (this.#failure) return Promise.reject(denoError(this.#failure));
    return new Promise((resolve, reject) => {
      this.#tls.write(data.slice(), (error) => error ? reject(denoError(error)) : resolve(data.length));
    });
  }

  /** Sends close_notify, then shuts the TCP write side down (FIN); reading goes on. */
  closeWrite(): Promise<void> {
    return this.#finished ??= new Promise<void>((resolve) => this.#tls.end(() => resolve()));
  }

  /** Turns Nagle's algorithm on the TCP socket off (or on). */
  setNoDelay(noDelay = true): void {
    this.#tcp.setNoDelay(noDelay);
  }

  /**
   * Closes the connection. Before or without a completed handshake, the TCP socket is closed at once (the
   * descriptor is freed, mid-handshake included). After it, close_notify and the FIN go first, as a TLS peer
   * expects of a clean end, and the socket is closed once they are sent, or after {@link CLOSE_NOTIFY_WAIT_MS} if the
   * peer takes nothing.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#established || this.#failure || this.#tls.destroyed) return this.#destroy();
    const timer = setTimeout(() => this.#destroy(), CLOSE_NOTIFY_WAIT_MS);
    this.closeWrite().then(() => {
      clearTimeout(timer);
      this.#destroy();
    });
  }

  #destroy(): void {
    this.#tls.destroy();
    this.#tcp.destroy();
    this.#wakeReader();
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** Node's errors as the Deno errors the server sorts (lib/connection.ts): resets and broken pipes by their codes. */
function denoError(error: Error): Error {
  if (error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe) return error;
  const code = (error as { code?: string }).code;
  if (code === "EPIPE") return new Deno.errors.BrokenPipe(error.message);
  if (code === "ECONNRESET" || code === "ECONNABORTED" || code === "ERR_STREAM_DESTROYED") {
    return new Deno.errors.ConnectionReset(error.message);
  }
  return error;
}
