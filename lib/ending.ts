// ending: the words of how a connection ends, shared by the connection (lib/connection.ts), which ends itself, and
// the admission steps (lib/admission.ts), which set deadlines on it and must tell their own deadline from a stop:
// why the server closes a connection (CloseReason), why a connection ended (EndReason, what the closing log line
// says), and the deadlines at which the server's limit sweep closes one (Deadline). Types and one constant only, so
// that both modules can import it without importing each other.

/** The deadlines the admission steps set, by what they bound. */
export type AdmissionDeadline = "proxy header timeout" | "TLS handshake timeout";

/** Why the server closes a connection itself before its peer does. */
export type CloseReason =
  | "idle timeout"
  | "send timeout"
  | "server stopping"
  | "byte limit"
  | "duration limit"
  | AdmissionDeadline;

/** Why a connection ended, as the closing log line says. */
export type EndReason = CloseReason | "closed by peer" | "reset by peer" | "error";

/** A moment at which the server's limit sweep (lib/server.ts) closes the connection, and why. */
export interface Deadline {
  /** performance.now() time, in milliseconds. */
  readonly at: number;
  /** The close reason the sweep gives. */
  readonly reason: AdmissionDeadline | "duration limit";
}

/** No deadline. */
export const NO_DEADLINE: Deadline = { at: Infinity, reason: "duration limit" };
