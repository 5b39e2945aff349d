// tools: whether a tool of the machine (openssl, python3, prlimit, ...) can be run here, for a test's `ignore`.

/** True when `command` runs here (`command --version`-style probe with the given arguments). */
export async function hasCommand(command: string, args: string[] = ["version"]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, { args, stdout: "null", stderr: "null" }).output();
    return success;
  } catch {
    return false;
  }
}
