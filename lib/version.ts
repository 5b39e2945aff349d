// version: the one place the program's version is read from (deno.json's "version"), so `--version`, the logs and
// the service manager all say the same thing.

import denoJson from "../deno.json" with { type: "json" };

/** The version of echosrv, as deno.json declares it. */
export const VERSION: string = denoJson.version;
