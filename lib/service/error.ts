// error: ServiceError, the one error every service command fails with: its message says what went wrong and what to
// do, and `echosrv service ...` prints it as it is (lib/service/commands.ts), with exit code 1.

/** Thrown for every failure of a service command; the message says what went wrong and what to do. */
export class ServiceError extends Error {
  /** The error's name, as stack traces show it. */
  override name = "ServiceError";
}
