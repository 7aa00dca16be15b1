"""A stand-in for a trainyard server's HTTP side, for the client's Ray-free tests: GET answers `schema`, POST
answers `answer(body)` (the request's bytes), both as JSON; only what `serving.client` reads of a real server."""
from __future__ import annotations

import contextlib
import http.server
import json
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def stand_in(schema: dict, answer: Callable[[bytes], dict]) -> Iterator[str]:
    """The server's URL while the block runs; stopped after it."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, doc):
            raw = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            self._send(schema)

        def do_POST(self):
            self._send(answer(self.rfile.read(int(self.headers["content-length"]))))

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
