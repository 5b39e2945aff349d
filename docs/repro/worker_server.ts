// The reproduction's echo server inside a Web Worker: does a worker spawned after `Deno.env.set` of
// DENO_TOKIO_MAX_IO_EVENTS_PER_TICK run with that setting? (Deno reads the variable each time it creates a Tokio
// runtime, and every worker gets its own.) The main thread only spawns one worker, which runs echo_server.ts's loop
// and prints "listening on port N".
//
//   deno run --allow-net --allow-env --allow-read docs/repro/worker_server.ts [--set VALUE] [--backlog N]
//
// --set VALUE calls Deno.env.set("DENO_TOKIO_MAX_IO_EVENTS_PER_TICK", VALUE) before `new Worker(...)`.

const at = Deno.args.indexOf("--set");
if (at >= 0) Deno.env.set("DENO_TOKIO_MAX_IO_EVENTS_PER_TICK", Deno.args[at + 1]);
const args = Deno.args.filter((_, i) => i !== at && i !== at + 1 || at < 0);
const worker = new Worker(new URL("./worker_echo.ts", import.meta.url), { type: "module" });
worker.postMessage(args);
worker.onerror = (event) => {
  console.error(`the worker failed: ${event.message}`);
  Deno.exit(1);
};
