"""A real HTTP server on 127.0.0.1 for the remote-shard tests, with ways to misbehave."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class ShardHandler(SimpleHTTPRequestHandler):
    """Serves a directory; ``server.truncate_gets`` makes the first that many GETs of each
    ``.tar`` send half the body and then drop the connection (a server dying mid-download);
    ``server.short_bodies`` makes every GET of a ``.tar`` a complete response of half the size
    (a proxy that cut the file)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        with server.lock:
            server.gets[self.path] += 1
            seen = server.gets[self.path]
        local = Path(self.translate_path(self.path))
        if not self.path.endswith(".tar") or not local.is_file():
            return super().do_GET()
        data = local.read_bytes()
        if server.short_bodies:
            self._send(data[: len(data) // 2], len(data) // 2)
        elif seen <= server.truncate_gets:
            self._send(data[: len(data) // 2], len(data))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
        else:
            self._send(data, len(data))

    def _send(self, body: bytes, declared: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)


@contextlib.contextmanager
def serve_directory(directory: Path, truncate_gets: int = 0,
                    short_bodies: bool = False) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """Serve ``directory`` at ``http://127.0.0.1:PORT`` from a thread; yields (base URL, server)."""
    handler = functools.partial(ShardHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.gets = Counter()
    server.truncate_gets = truncate_gets
    server.short_bodies = short_bodies
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
