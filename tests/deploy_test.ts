// deploy/kubernetes.yaml and deploy/Dockerfile against echosrv itself: the container's arguments are read by
// echosrv's own option parser, the probes and Services point at the ports those arguments open, the termination
// grace period covers preStop plus the drain, and echosrv started with those arguments answers the probes as the
// kubelet expects (readiness 503 and liveness 200 while draining). No cluster is needed (none is reachable here).

import assert from "node:assert/strict";
import { parseCommandLine } from "../lib/options.ts";
import {
  cannotRun,
  metricsPortOf,
  NO_STOP_SIGNALS,
  readExactly,
  ROOT,
  spawnServer,
  within,
  writeAll,
} from "./helpers.ts";
import { yamlReader } from "./python.ts";

// deno-lint-ignore no-explicit-any
type Doc = any;
const yaml = await yamlReader();
if ("missing" in yaml) console.log(`kubernetes.yaml tests skipped: ${yaml.missing}`);
const noYaml = "missing" in yaml;
const docs: Doc[] = "missing" in yaml
  ? []
  : await yaml.read(Deno.readTextFileSync(`${ROOT}deploy/kubernetes.yaml`)) as Doc[];
const deployment = docs.find((d) => d.kind === "Deployment");
const container = deployment?.spec.template.spec.containers[0];
const quiet = { out: () => {}, err: () => {} };

function portNamed(name: string): number {
  return container.ports.find((p: Doc) => p.name === name).containerPort;
}

Deno.test({
  name: "kubernetes.yaml: echosrv accepts the container's arguments; probes and Services match its ports",
  ignore: noYaml,
  fn: () => {
    const what = parseCommandLine(container.args, quiet);
    assert.equal(what.kind, "run", `echosrv refuses ${container.args.join(" ")}`);
    if (what.kind !== "run") return;
    assert.equal(what.config.server.port, portNamed("echo"));
    assert.equal(what.config.metrics?.port, portNamed("metrics"));
    assert.equal(what.config.metrics?.hostname, "0.0.0.0", "the kubelet probes the pod's IP, not loopback");
    assert.deepEqual(container.readinessProbe.httpGet, { path: "/healthz", port: "metrics" });
    assert.deepEqual(container.livenessProbe.httpGet, { path: "/livez", port: "metrics" });
    for (const service of docs.filter((d) => d.kind === "Service")) {
      assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
      for (const port of service.spec.ports) assert.ok(portNamed(port.targetPort), `${port.targetPort} is a port`);
    }
    // The grace period covers preStop and the whole drain, with a margin, or the kubelet would SIGKILL mid-drain.
    const preStop = container.lifecycle.preStop.sleep.seconds;
    const drain = what.config.server.shutdownTimeoutMs / 1000;
    const grace = deployment.spec.template.spec.terminationGracePeriodSeconds;
    assert.ok(
      grace >= preStop + drain + 2,
      `terminationGracePeriodSeconds ${grace} < preStop ${preStop} + drain ${drain}`,
    );
    // The liveness probe tolerates a short stall without restarting, and never looks at /healthz.
    assert.ok(container.livenessProbe.periodSeconds * container.livenessProbe.failureThreshold >= 10);
  },
});

Deno.test("Dockerfile: runs echosrv as PID 1 on the pinned Deno (its flags and environment: tests/runtime_test.ts)", () => {
  const dockerfile = Deno.readTextFileSync(`${ROOT}deploy/Dockerfile`);
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]) as string[];
  // --allow-run=ps serves the quick start's npx watch only (lib/stop_requests.ts); there is no npx in the image.
  assert.ok(!entrypoint.includes("--allow-run=ps"), "no ps in the image");
  assert.equal(entrypoint[0], "deno", "deno itself is PID 1 (no shell in between to swallow SIGTERM)");
  assert.equal(entrypoint.at(-1), "main.ts");
  assert.match(dockerfile, new RegExp(`^FROM denoland/deno:${Deno.version.deno}$`, "m"), "the pinned Deno");
});

Deno.test({
  name: "kubernetes.yaml's arguments, run for real: ready and live while serving; not ready but live while draining",
  ignore: noYaml || cannotRun("the tests of stopping echosrv with a signal", NO_STOP_SIGNALS),
  fn: async () => {
    // The same arguments, on loopback and free ports (a test never binds fixed ports).
    const args = container.args.map((a: string) =>
      a.startsWith("--port=") ? "--port=0" : a.startsWith("--metrics=") ? "--metrics=127.0.0.1:0" : a
    ).filter((a: string) => a !== "--log-format=json");
    await using server = await spawnServer([...args, "--host", "127.0.0.1"]);
    const metrics = await metricsPortOf(server);
    const probe = async (path: string) => {
      const response = await within(10_000, path, fetch(`http://127.0.0.1:${metrics}${path}`));
      await response.body?.cancel();
      return response.status;
    };
    assert.deepEqual([await probe("/healthz"), await probe("/livez")], [200, 200]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await writeAll(conn, Uint8Array.of(1));
      await readExactly(conn, 1);
      server.signal("SIGTERM"); // what the kubelet sends after preStop
      await server.waitFor((r) => r.message.startsWith("stopped accepting"), "the drain");
      assert.deepEqual([await probe("/healthz"), await probe("/livez")], [503, 200]);
    } finally {
      conn.close();
    }
    assert.equal(await server.exited(), 0);
  },
});
