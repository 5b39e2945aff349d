#!/usr/bin/env python3
"""rcvbuf_peer: the stress swarm's client with a small receive buffer (Deno cannot set SO_RCVBUF), for the
byte-limit-rcvbuf session kind of stress/kinds.ts. It is only a socket: the session in the Deno client process
generates the bytes, checks what comes back and judges the ending; this relays.

  python3 rcvbuf_peer.py HOST PORT RCVBUF READ_AFTER_S READ_SIZE TIMEOUT_S HALF_CLOSE PROXY

Reads everything to send from standard input first, sets SO_RCVBUF to RCVBUF before connecting (Linux doubles it
and keeps a floor of about 2 KiB), connects, sends the PROXY v1 header first when PROXY is 1 (carrying the local
port, as the Deno sessions' headers do, so the server's log names this connection by it), sends the bytes from a
thread (then shuts the write side down when HALF_CLOSE is 1), waits READ_AFTER_S seconds, then reads READ_SIZE
bytes at a time, writing what it reads to standard output, until the end of stream or a reset. Every wait is
bounded by TIMEOUT_S. Last, it writes one JSON line to standard error:
  {"port": local port, "connect_at": epoch ms before connecting, "end": "eof" | "reset" | "timeout" | "error: ...",
   "received": bytes read, "last_write_at": epoch ms the last send began (0: none), "send_error": "" or why}
"""
import json
import socket
import sys
import threading
import time


def main():
    host, port, rcvbuf, read_after, read_size, timeout, half_close, proxy = sys.argv[1:9]
    port, rcvbuf, read_size = int(port), int(rcvbuf), int(read_size)
    read_after, timeout = float(read_after), float(timeout)
    data = sys.stdin.buffer.read()
    out = sys.stdout.buffer
    report = {"port": 0, "connect_at": 0, "end": "timeout", "received": 0, "last_write_at": 0, "send_error": ""}
    started = time.monotonic()
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        report["connect_at"] = int(time.time() * 1000)
        s.connect((host, port))
        report["port"] = s.getsockname()[1]
        if proxy == "1":
            header = "PROXY TCP4 198.51.100.1 127.0.0.1 %d %d\r\n" % (report["port"], port)
            s.sendall(header.encode("ascii"))

        def send():
            try:
                report["last_write_at"] = int(time.time() * 1000)
                s.sendall(data)
                if half_close == "1":
                    s.shutdown(socket.SHUT_WR)
            except OSError as error:
                report["send_error"] = str(error)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(read_after)
        while True:
            if time.monotonic() - started > timeout:
                break
            try:
                chunk = s.recv(read_size)
            except ConnectionResetError:
                report["end"] = "reset"
                break
            if not chunk:
                report["end"] = "eof"
                break
            out.write(chunk)
            out.flush()
            report["received"] += len(chunk)
        sender.join(max(0.1, timeout - (time.monotonic() - started)))
    except socket.timeout:
        report["end"] = "timeout"
    except OSError as error:
        report["end"] = "error: %s" % error
    finally:
        s.close()
    sys.stderr.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
