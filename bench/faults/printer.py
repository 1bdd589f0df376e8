"""A printer that counts what it is told: a webhook target on 127.0.0.1 for the monitor.

It answers every command with 200 and records (alarm id, command); a second ``pause`` for an
alarm is a duplicated printer action, the thing the monitor must never do.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class CountingPrinter:
    def __init__(self) -> None:
        self.commands: Counter[tuple[int, str]] = Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    msg: dict[str, Any] = json.loads(body)
                    key = (int(msg["alarm"]["alarm_id"]), str(msg["command"]))
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                with outer._lock:
                    outer.commands[key] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/printer"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def snapshot(self) -> Counter[tuple[int, str]]:
        with self._lock:
            return Counter(self.commands)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
