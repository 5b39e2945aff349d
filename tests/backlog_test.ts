// The listen backlog: a burst of clients connecting at once (a load test opening 1000 connections) must all be
// queued by the kernel, not have their handshakes dropped and retried a second later (Deno's default backlog, 511,
// did that; see docs/latency-under-load.md). Read from the kernel with `ss`, whose Send-Q column is a listening
// socket's backlog.

import assert from "node:assert/strict";
import { TCP_BACKLOG } from "../lib/listen.ts";
import { hasCommand, spawnServer } from "./helpers.ts";

/** The backlog of each listening TCP socket on `port`, as the kernel reports it. */
async function backlogs(port: number): Promise<number[]> {
  const out = await new Deno.Command("ss", { args: ["-ltnH", `sport = :${port}`], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim().split("\n").filter(Boolean).map((line) =>
    Number(line.trim().split(/\s+/)[2])
  );
}

const linuxWithSs = Deno.build.os === "linux" && await hasCommand("ss", ["-V"]) &&
  await hasCommand("sysctl", ["-n", "net.core.somaxconn"]);

for (const workers of [1, 2]) {
  Deno.test({
    name: `every listener queues ${TCP_BACKLOG} connections (capped by somaxconn), with --workers ${workers}`,
    ignore: !linuxWithSs,
    async fn() {
      // Through the sysctl command: Deno asks for --allow-all to read /proc directly.
      const sysctl = await new Deno.Command("sysctl", { args: ["-n", "net.core.somaxconn"], stdout: "piped" }).output();
      const somaxconn = Number(new TextDecoder().decode(sysctl.stdout));
      assert.ok(somaxconn > 0, "net.core.somaxconn");
      await using server = await spawnServer(["--port", "0", "--host", "127.0.0.1", "--workers", `${workers}`]);
      const found = await backlogs(server.port);
      assert.equal(found.length, workers, `one listener per worker: ${found}`);
      for (const backlog of found) assert.equal(backlog, Math.min(TCP_BACKLOG, somaxconn));
      server.signal("SIGTERM");
      assert.equal(await server.exited(), 0);
    },
  });
}
