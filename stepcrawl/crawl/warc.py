"""Rotating gzip WARC writer (warcio): request + response + metadata records per page.

Each file is written as ``.NAME.open`` and renamed to ``NAME`` (``crawl-00000.warc.gz``…)
when it reaches ``max_bytes`` or the crawl ends; a reader (or ``stepcrawl curate``) only ever
sees complete files. See ``frontier`` for how this pairs with the frontier on resume.
"""

from __future__ import annotations

import io
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})\.warc\.gz$")
# aiohttp has already undone chunked transfer coding; the header must not claim otherwise
# (Common Crawl renames it the same way).
_HOP_HEADERS = {"transfer-encoding"}


class _GzipMember:
    """One gzip member around one WARC record, at a chosen compression level.

    warcio's ``GzippingWrapper`` hard-codes level 9. Writing the sample site's pages, level 9
    costs 0.76 ms/page of CPU for files at 0.221 of the raw size, level 6 (zlib's default,
    what ``gzip`` uses) 0.58 ms for 0.222, level 1 0.39 ms for 0.259 (bench/crawl.py), so we
    default to 6. warcio's ``_write_warc_record`` writes a record then calls ``flush()``
    once, so this object is created per record and ``flush`` ends the member — the same
    one-member-per-record layout, which keeps response offsets seekable."""

    def __init__(self, out, level: int):
        self.out = out
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS + 16)

    def write(self, buff: bytes) -> None:
        self.out.write(self.compressor.compress(buff))

    def flush(self) -> None:
        self.out.write(self.compressor.flush())
        self.out.flush()


class _LevelWARCWriter(WARCWriter):
    """warcio's writer with our gzip member wrapper (``gzip=False`` disables warcio's own)."""

    def __init__(self, filebuf, level: int):
        super().__init__(filebuf, gzip=False)
        self.level = level

    def write_record(self, record, params=None) -> None:
        self._write_warc_record(_GzipMember(self.out, self.level), record)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory fds (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def completed_warcs(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("*.warc.gz") if not p.name.startswith("."))


@dataclass
class PageRecord:
    url: str
    status: int
    reason: str
    response_headers: list[tuple[str, str]]
    request_headers: list[tuple[str, str]]
    body: bytes
    ip: str | None = None
    truncated: bool = False
    metadata: dict[str, str] | None = None


class RotatingWarcWriter:
    def __init__(
        self,
        folder: str | Path,
        prefix: str = "crawl",
        max_bytes: int = 100 * 1024 * 1024,
        software: str = "stepcrawl",
        before_rotate: Callable[[], None] | None = None,
        gzip_level: int = 6,
    ):
        if not 1 <= gzip_level <= 9:
            raise ValueError(f"gzip_level must be 1..9, got {gzip_level}")
        self.gzip_level = gzip_level
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.software = software
        self.before_rotate = before_rotate
        self.completed: list[str] = []
        self._fh = None
        self._writer: WARCWriter | None = None
        self._name: str | None = None
        indices = [int(m["index"]) for n in completed_warcs(self.folder) if (m := _NAME.match(n))]
        self._next_index = max(indices, default=-1) + 1

    @staticmethod
    def discard_open_files(folder: Path) -> list[str]:
        """Delete leftovers of a killed run (their pages are re-queued by the frontier)."""
        gone = []
        for p in Path(folder).glob(".*.warc.gz.open"):
            p.unlink()
            gone.append(p.name)
        return gone

    @property
    def current_name(self) -> str | None:
        return self._name

    def _open(self) -> None:
        self._name = f"{self.prefix}-{self._next_index:05d}.warc.gz"
        self._next_index += 1
        self._fh = open(self.folder / f".{self._name}.open", "wb")
        self._writer = _LevelWARCWriter(self._fh, self.gzip_level)
        info = self._writer.create_warcinfo_record(
            self._name,
            {"software": self.software, "format": "WARC File Format 1.1",
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )
        self._writer.write_record(info)

    def close_current(self) -> str | None:
        """Finish the open file: flush, fsync, rename. Returns its final name."""
        if self._fh is None:
            return None
        if self.before_rotate is not None:
            self.before_rotate()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        name = self._name
        os.replace(self.folder / f".{name}.open", self.folder / name)
        _fsync_dir(self.folder)  # make the rename itself survive a machine crash
        self.completed.append(name)
        self._fh = self._writer = self._name = None
        return name

    def write(self, page: PageRecord) -> tuple[str, int]:
        """Append a page's records; returns (final WARC name, offset of the response record)."""
        if self._fh is not None and self._fh.tell() >= self.max_bytes:
            self.close_current()
        if self._fh is None:
            self._open()
        w = self._writer
        headers = [
            (k if k.lower() not in _HOP_HEADERS else f"X-Crawler-{k}", v)
            for k, v in page.response_headers
        ]
        http = StatusAndHeaders(f"{page.status} {page.reason}", headers, protocol="HTTP/1.1")
        warc_headers = {}
        if page.ip:
            warc_headers["WARC-IP-Address"] = page.ip
        if page.truncated:
            warc_headers["WARC-Truncated"] = "length"
        resp = w.create_warc_record(
            page.url, "response", payload=io.BytesIO(page.body), http_headers=http,
            warc_headers_dict=warc_headers,
        )
        path = page.url.split("/", 3)[3] if page.url.count("/") >= 3 else ""
        req_http = StatusAndHeaders(f"GET /{path} HTTP/1.1", page.request_headers,
                                    protocol="HTTP/1.1", is_http_request=True)
        req = w.create_warc_record(page.url, "request", http_headers=req_http)
        req.rec_headers.add_header("WARC-Concurrent-To",
                                   resp.rec_headers.get_header("WARC-Record-ID"))
        w.write_record(req)
        offset = self._fh.tell()  # gzip members are independent: a reader can seek here
        w.write_record(resp)
        if page.metadata:
            body = "".join(f"{k}: {v}\r\n" for k, v in page.metadata.items()).encode()
            meta = w.create_warc_record(
                page.url, "metadata", payload=io.BytesIO(body),
                warc_content_type="application/warc-fields",
                warc_headers_dict={"WARC-Concurrent-To":
                                   resp.rec_headers.get_header("WARC-Record-ID")},
            )
            w.write_record(meta)
        return self._name, offset

    def close(self) -> list[str]:
        self.close_current()
        return self.completed
