"""Serve the bundled sample website (``samples/site/site.tar.gz``) over HTTP.

The site ships as one tarball read straight into memory — no build step, no extraction —
and is served by the standard library's ``ThreadingHTTPServer`` with an access log in the
Common Log Format (to a file, or stderr). ``start_sample_server()`` runs it in a background
thread for tests and the demo.
"""

from __future__ import annotations

import mimetypes
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SITE = REPO_ROOT / "samples" / "site" / "site.tar.gz"

TYPES = {
    ".html": "text/html",  # no charset: pages declare their own (some wrongly, on purpose)
    ".htm": "text/html",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".pdf": "application/pdf",
    ".epub": "application/epub+zip",
    ".xml": "application/xml",
    ".png": "image/png",
}


def load_site(source: str | Path = DEFAULT_SITE) -> dict[str, bytes]:
    """``{"/path": bytes}`` from a ``.tar.gz`` (members under ``site/``) or a folder."""
    source = Path(source)
    files: dict[str, bytes] = {}
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.is_file():
                files["/" + p.relative_to(source).as_posix()] = p.read_bytes()
        return files
    if not source.exists():
        raise FileNotFoundError(f"sample site not found: {source} (build it with "
                                f"scripts/build_sample_site.py)")
    with tarfile.open(source, "r:gz") as tar:
        for m in tar.getmembers():
            if not m.isfile():
                continue
            name = m.name.split("/", 1)[1] if "/" in m.name else m.name
            files["/" + name] = tar.extractfile(m).read()
    return files


@dataclass
class AccessLog:
    stream: IO[str]
    lock: threading.Lock

    def write(self, client: str, line: str, status: int, size: int, agent: str) -> None:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        with self.lock:
            self.stream.write(f'{client} - - [{stamp}] "{line}" {status} {size} "-" "{agent}"\n')
            self.stream.flush()


def make_handler(files: dict[str, bytes], log: AccessLog | None):
    class Handler(BaseHTTPRequestHandler):
        server_version = "stepcrawl-sample/0.1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # replaced by our access log
            pass

        def _send(self, status: int, body: bytes, ctype: str, head: bool = False) -> None:
            # logged before anything is sent: a client that has seen the status line (an
            # error status is final on the headers alone) must find the line in the log
            if log is not None:
                log.write(self.client_address[0], self.requestline, status, len(body),
                          self.headers.get("User-Agent", "-"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_GET(self, head: bool = False) -> None:  # noqa: N802
            path = unquote(urlsplit(self.path).path)
            if path.endswith("/"):
                path += "index.html"
            body = files.get(path)
            if body is None and path + "/index.html" in files:
                if log is not None:
                    log.write(self.client_address[0], self.requestline, 301, 0,
                              self.headers.get("User-Agent", "-"))
                self.send_response(301)
                self.send_header("Location", path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if body is None:
                self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>",
                           "text/html; charset=utf-8", head)
                return
            suffix = Path(path).suffix.lower()
            ctype = TYPES.get(suffix) or mimetypes.guess_type(path)[0] or \
                "application/octet-stream"
            self._send(200, body, ctype, head)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET(head=True)

    return Handler


def make_server(host: str = "127.0.0.1", port: int = 8000, site: str | Path = DEFAULT_SITE,
                access_log: IO[str] | None = None) -> ThreadingHTTPServer:
    files = load_site(site)
    log = AccessLog(access_log, threading.Lock()) if access_log is not None else None
    server = ThreadingHTTPServer((host, port), make_handler(files, log))
    server.daemon_threads = True
    server.site_files = files  # type: ignore[attr-defined]
    return server


def start_sample_server(host: str = "127.0.0.1", port: int = 0, site: str | Path = DEFAULT_SITE,
                        access_log: IO[str] | None = None
                        ) -> tuple[ThreadingHTTPServer, str]:
    """Serve in a daemon thread; returns ``(server, base_url)``. Stop with
    ``server.shutdown(); server.server_close()``. ``port=0`` picks a free port."""
    server = make_server(host, port, site, access_log)
    threading.Thread(target=server.serve_forever, name="sample-site", daemon=True).start()
    h, p = server.server_address[:2]
    return server, f"http://{h}:{p}/"


def serve_forever(host: str, port: int, site: str | Path = DEFAULT_SITE,
                  access_log_path: str | None = None, url_file: str | None = None) -> None:
    stream = open(access_log_path, "a", encoding="utf-8") if access_log_path else sys.stderr
    server = make_server(host, port, site, stream)
    h, p = server.server_address[:2]
    print(f"serving {len(server.site_files)} files of {site} on http://{h}:{p}/ "
          f"(access log: {access_log_path or 'stderr'}; Ctrl-C stops)", flush=True)
    if url_file:
        from stepcrawl.io import atomic_open

        with atomic_open(url_file, "w", encoding="utf-8") as fh:
            fh.write(f"http://{h}:{p}/\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if access_log_path:
            stream.close()
