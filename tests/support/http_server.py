"""A loopback HTTP server for shard tests: serves a folder on 127.0.0.1 (a free port), with faults on demand.

Every file is served with ``Content-Length`` and honours ``Range: bytes=N-`` (206), unless its name is given a fault:

* ``"404"``: always HTTP 404;
* ``"stall"``: headers and the first KiB, then nothing (until the server stops);
* ``"truncate"``: the full ``Content-Length`` announced, the bytes up to the middle of the file sent, then the
  connection closed (every time, also when the request asks for a range);
* ``"cut-once"``: the first request is cut like ``truncate``; later ones (with or without ``Range``) are served whole;
* ``"cut-once-no-range"``: as ``cut-once``, and ``Range`` is ignored (the whole file again, 200);
* ``"503x2"``: HTTP 503 for the first two requests, then served;
* ``"corrupt-sample"``: not a server fault; tests overwrite bytes of the file itself.

Requests are counted per file name (`requests`). No other address is ever contacted.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class ShardServer:
    """Serves `root` at ``self.url`` (``http://127.0.0.1:PORT``) in a background thread; `faults` maps a file name
    to one of the faults in the module doc. Use as a context manager or call `stop`."""

    def __init__(self, root: Path, faults: dict[str, str] | None = None) -> None:
        self.root, self.faults = Path(root), dict(faults or {})
        self.requests: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def __enter__(self) -> ShardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                relative = unquote(urlsplit(self.path).path).lstrip("/")
                path = (server.root / relative).resolve()
                name = path.name
                server.requests[name] += 1
                fault = server.faults.get(name, "")
                if fault == "404" or not path.is_file() or server.root.resolve() not in path.parents:
                    self.send_error(404)
                    return
                if fault == "503x2" and server.requests[name] <= 2:
                    self.send_error(503)
                    return
                data = path.read_bytes()
                cut = fault in ("truncate", "stall") or (fault.startswith("cut-once") and server.requests[name] == 1)
                start = 0
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes=") and fault != "cut-once-no-range":
                    start = int(ranged[len("bytes="):].split("-")[0])
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Connection", "close")
                self.end_headers()
                body = data[start:]
                if fault == "stall":
                    self.wfile.write(body[:1024])
                    self.wfile.flush()
                    server.stopping.wait(60)
                elif cut:
                    self.wfile.write(data[start:max(start, len(data) // 2)])
                else:
                    self.wfile.write(body)
                self.close_connection = True

        return Handler
