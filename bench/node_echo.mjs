// node_echo: the Node.js baseline of echosrv's benchmark, the idiomatic Node echo server: `socket.pipe(socket)`.
// TCP_NODELAY is on, as echosrv and the C anchor set it, so the comparison is about the copy and not Nagle.
// Usage: node bench/node_echo.mjs [port [host]]; prints "listening on port N" once listening.
import net from "node:net";

const port = Number(process.argv[2] ?? 0);
const host = process.argv[3] ?? "127.0.0.1";
const server = net.createServer({ noDelay: true }, (socket) => {
  // A reset from the peer must end this connection only, as in echosrv.
  socket.on("error", () => socket.destroy());
  socket.pipe(socket);
});
server.listen({ port, host }, () => console.log(`listening on port ${server.address().port}`));
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
