#!/usr/bin/env python3
"""Backends whose health-check answers carry odd text, for raftvip's HAProxy tests.

HAProxy copies an HTTP check's reason phrase and an agent's message into `show stat`
(`last_chk`, `last_agt`), quoting them as CSV when they hold a comma, a quote or a newline.
This serves such answers from a separate process, so a test that starves its own process of
file descriptors still has backends that answer.

Usage: check_backend.py SPEC...
  http:NAME:CODE:REASON   HTTP server answering every request with `CODE REASON`
  agent:NAME:TEXT         agent-check server answering every connection with `TEXT\\n`
Each listener binds 127.0.0.1 on a free port; one line `NAME PORT` per SPEC is printed on
stdout (then stdout is flushed) before serving. Runs until killed.
"""

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def http_server(code, reason):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(code, reason)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET
        do_OPTIONS = do_GET

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # HAProxy closes a check once it has the status line: not worth a traceback

    server = Server(("127.0.0.1", 0), Handler)
    return server.server_address[1], server.serve_forever


def agent_server(text):
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            conn, _ = listener.accept()
            with conn:
                try:
                    conn.sendall(text.encode() + b"\n")
                except OSError:
                    pass

    return listener.getsockname()[1], serve


def main(specs):
    if not specs:
        sys.exit(__doc__)
    servers = []
    for spec in specs:
        kind, name, rest = spec.split(":", 2)
        if kind == "http":
            code, reason = rest.split(":", 1)
            port, serve = http_server(int(code), reason)
        elif kind == "agent":
            port, serve = agent_server(rest)
        else:
            sys.exit(f"unknown spec kind {kind!r} in {spec!r}: use http: or agent:")
        servers.append(serve)
        print(name, port)
    sys.stdout.flush()
    for serve in servers:
        threading.Thread(target=serve, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
