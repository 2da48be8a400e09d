"""Extract: WARC response records → Documents (HTML via trafilatura, PDF via pypdf, ePub via EbookLib).

The unit of work is a plain, picklable :class:`RawRecord` (bytes + the few WARC/HTTP headers we
need) so that the pure function :func:`extract_record` runs unchanged in the local executor, in
Beam, or on Common Crawl WARCs. :func:`iter_warc_records` (``stepcrawl.readers.warc``, re-exported
here) reads one WARC/ARC file and resynchronises after damage: a damaged byte span becomes a
record with ``drop_reason="warc:damaged"`` and its range, and reading goes on at the next
record. Content-Encoding is undone here, under ``ExtractConfig.max_decoded_bytes``.

Every response record becomes a Document or a ``Drop`` whose reason is one of
``EXTRACT_DROP_REASONS`` (so the caller's accounting stays exact: in = out + Σ drops).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import io
import itertools
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from stepcrawl.document import Document
from stepcrawl.readers.content import BadContentEncoding, DecodedTooLarge, decode_body
# The WARC/ARC readers live in stepcrawl.readers; re-exported here for existing imports.
from stepcrawl.readers.warc import (  # noqa: F401
    ARCHIVE_SUFFIXES,
    READER_DROP_REASONS,
    WARC_SUFFIXES,
    RawRecord,
    WarcReadError,
    iter_warc_records,
    warc_files,
)
from stepcrawl.steps import Drop

log = logging.getLogger(__name__)
# trafilatura logs an ERROR for every page without content ("empty HTML tree"); those are our
# counted ``extract:empty`` drops, not errors, so keep its logger quiet.
logging.getLogger("trafilatura").setLevel(logging.CRITICAL)

EXTRACT_DROP_REASONS = (
    "extract:http-status",  # not a 2xx response
    "extract:unsupported-type",  # content type we do not extract (images, JS, zip, …)
    "extract:too-large",  # body above ExtractConfig.max_html_bytes (HTML/text) or max_bytes (PDF/ePub)
    "extract:parse-error",  # the PDF/ePub/HTML library raised on this payload
    "extract:empty",  # extraction returned no (or too little) text
    "extract:timeout",  # extraction ran past ExtractConfig.timeout_s (a pathological page)
    "extract:decompressed-too-large",  # Content-Encoding body inflates past max_decoded_bytes (a bomb)
    "extract:bad-content-encoding",  # the gzip/deflate/br body is corrupt
    *READER_DROP_REASONS,  # warc:damaged (a byte span with no readable record), warc:non-content
)

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
PDF_TYPES = ("application/pdf", "application/x-pdf")
EPUB_TYPES = ("application/epub+zip",)
TEXT_TYPES = ("text/plain",)


@dataclass(frozen=True)
class ExtractConfig:
    """Knobs of the extract step (all JSON-able: they go into the stage manifest)."""

    # HTML/text pages larger than this are dropped (``extract:too-large``, a limit), not cut:
    # a cut page would be a document with its end missing. The limit exists because one lxml
    # parse is a single C call the per-record time limit cannot interrupt (~0.1-0.3 s for
    # 10 MB); real pages above it are rare (generated listings, inlined data).
    max_html_bytes: int = 10_000_000
    # PDFs/ePubs (books) larger than this are dropped (``extract:too-large``). A 1,000-page PDF
    # manual is 5–60 MB, so the limit is well above that; books also get their own time limit
    # (``book_timeout_s``): pypdf reads tens of pages/s, the web limit would drop every long
    # book (bench/books.py measures pages/s and MB/s; docs/BENCHMARKS.md).
    max_bytes: int = 200_000_000
    book_timeout_s: float = 600.0
    min_chars: int = 1  # results shorter than this are ``extract:empty``
    favor_precision: bool = True  # trafilatura: drop more boilerplate
    # trafilatura's full metadata pass (htmldate's date heuristics, author, sitename) costs ~25%
    # of extraction time; by default title and date come from the page's <title> and its
    # published-date <meta> tags instead (WARC-Date is always kept as fetched_at).
    rich_metadata: bool = False
    include_tables: bool = True
    source: str = "web"
    # Per-record wall-clock limit for decoding + extraction; a record that runs past it is
    # dropped as ``extract:timeout`` so one pathological page cannot stall a whole file (a
    # typical page takes ~0.1 s). 0 disables it. See :class:`Deadline` for how it is enforced.
    timeout_s: float = 20.0
    # Hard cap on a body's size after undoing its Content-Encoding: a record that inflates
    # past it is ``extract:decompressed-too-large`` and is never inflated further (a 64 KB
    # gzip bomb would otherwise become GiBs). The crawler's --max-bytes idea, for decoding.
    max_decoded_bytes: int = 20_000_000
    # HTML main-content extractor: "trafilatura" (default) or "resiliparse" (DCLM's, ~20× faster;
    # when to pick which: docs/CURATION.md)
    extractor: str = "trafilatura"
    # math-preserving pre-pass (stepcrawl/extractors/math.py): formulas in MathJax / KaTeX /
    # MathML / TeX images become $…$ / $$…$$ text the extractor keeps; pages without math
    # markers skip it (one regex search)
    math: bool = True

    def __post_init__(self) -> None:
        from stepcrawl.extractors import EXTRACTORS

        if self.extractor not in EXTRACTORS:
            raise ValueError(f"ExtractConfig.extractor must be one of {EXTRACTORS}, got {self.extractor!r}")


def record_doc_id(record_id: str, url: str = "", date: str | None = None) -> str:
    """Stable id: SHA-1 of the WARC-Record-ID (or url+date when a record has none)."""
    key = record_id or f"{url}\t{date or ''}"
    return "warc:" + hashlib.sha1(key.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------- decoding

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def _declared_charset(content_type: str, head: bytes) -> str | None:
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type or "", re.I)
    if m:
        return m.group(1)
    m = _META_CHARSET.search(head[:4096])
    return m.group(1).decode("ascii", "ignore") if m else None


def decode_html(payload: bytes, content_type: str = "") -> tuple[str, str]:
    """Bytes → (text, encoding used).

    Order matters: strict UTF-8 first (most of the web, and a valid UTF-8 decode of non-UTF-8
    bytes is rare, so it also fixes pages that *declare* latin-1 but are UTF-8), then the
    declared charset if it decodes strictly, then charset-normalizer's detection for pages with
    a wrong or missing declaration; as a last resort UTF-8 with replacement characters.
    """
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    declared = _declared_charset(content_type, payload)
    if declared:
        try:
            return payload.decode(declared), declared.lower()
        except (UnicodeDecodeError, LookupError):
            pass
    import charset_normalizer

    matches = list(charset_normalizer.from_bytes(payload[:200_000]))
    best = matches[0] if matches else None
    # Single-byte Latin code pages are nearly indistinguishable on short pages (a French cp1252
    # page scores best as cp1257 "Norwegian"). Prefer windows-1252, the WHATWG fallback for
    # unlabelled legacy pages, when charset-normalizer finds it about as plausible as its best.
    for m in matches:
        if m.encoding == "cp1252" and best is not None and m.chaos <= best.chaos + 0.1:
            best = m
            break
    if best is not None and best.encoding:
        try:
            return payload.decode(best.encoding), best.encoding
        except (UnicodeDecodeError, LookupError):
            pass
    return payload.decode("utf-8", errors="replace"), "utf-8-replace"


# ---------------------------------------------------------------------------------- time limit


class ExtractTimeout(BaseException):
    """Raised inside a thread whose :class:`Deadline` expired (caught by ``extract_record``).
    A ``BaseException``, like ``KeyboardInterrupt``, so that a library's ``except Exception``
    cannot swallow it and carry on."""


class _Watchdog:
    """One daemon thread per process that raises :class:`ExtractTimeout` in threads whose
    deadline passed, with CPython's ``PyThreadState_SetAsyncExc``.

    Why not ``signal.alarm``/``setitimer``: signals reach only the main thread, and Beam's SDK
    harness runs bundles on worker threads (and pytest-timeout or the host program may own
    SIGALRM). An asynchronous exception works in any thread and in ``ProcessPoolExecutor``
    children (the watchdog restarts after a fork). Like a signal handler it fires between
    Python bytecodes, so a single long C call (one lxml parse) finishes first; trafilatura's
    expensive passes are Python loops, and HTML above ``max_html_bytes`` is refused before parsing.
    Like ``KeyboardInterrupt``, it can in principle land between a Python-level lock's acquire
    and its ``try`` in library code (e.g. a ``logging`` handler that emits); the libraries on
    this path log nothing at the levels we leave enabled, and datatrove's alternative (a forked
    sandbox process per extractor) costs a process and IPC per page.

    The watchdog polls (every quarter of the shortest limit in use, at most 0.5 s) instead of
    being woken per record: waking a thread for every page would cost a GIL hand-off each. The
    exception can land at any bytecode of the guarded thread, so that thread only touches
    C-level primitives here (a ``Lock`` as a context manager): a Python ``Condition``
    interrupted between acquiring and entering its ``with`` would leak its lock.
    """

    MAX_POLL_S = 0.5

    def __init__(self) -> None:
        self._pid = -1
        self._start_lock = threading.Lock()
        self._ids = itertools.count()
        self._poll = self.MAX_POLL_S

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid != os.getpid():  # first use, or a forked child: no watchdog thread here yet
                self._mu = threading.Lock()
                self._active: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
                self._fired: dict[int, int] = {}  # token -> thread id: interrupted, not yet disarmed
                threading.Thread(target=self._loop, name="stepcrawl-extract-watchdog", daemon=True).start()
                self._pid = os.getpid()

    def arm(self, seconds: float) -> int:
        self._ensure_thread()
        token = next(self._ids)
        if seconds / 4 < self._poll:
            self._poll = max(0.005, seconds / 4)
        entry = (time.monotonic() + seconds, threading.get_ident())
        with self._mu:
            self._active[token] = entry
        return token

    def disarm(self, token: int) -> bool:
        """End the block; True when its deadline fired (a not yet delivered exception is
        cancelled, so it can never surface after the block)."""
        with self._mu:
            self._active.pop(token, None)
            tid = self._fired.pop(token, None)
            if tid is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
        return tid is not None

    def _loop(self) -> None:
        while True:
            time.sleep(self._poll)
            now = time.monotonic()
            with self._mu:
                late = [(token, tid) for token, (deadline, tid) in self._active.items() if deadline <= now]
                for token, tid in late:  # still running past its deadline: interrupt it
                    del self._active[token]
                    self._fired[token] = tid
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(ExtractTimeout))


_WATCHDOG = _Watchdog()


class Deadline:
    """``with Deadline(seconds): ...`` raises :class:`ExtractTimeout` out of the block when it
    runs longer than ``seconds`` (``seconds <= 0``: no limit). Works in any thread."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds or 0.0
        self._token: int | None = None

    def __enter__(self) -> "Deadline":
        if self.seconds > 0:
            self._token = _WATCHDOG.arm(self.seconds)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._token is None:
            return False
        fired = _WATCHDOG.disarm(self._token)
        self._token = None
        if fired and exc_type is None:
            raise ExtractTimeout(f"ran past {self.seconds:g} s")
        return False


# ---------------------------------------------------------------------------------- extractors


_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_DATE_META = re.compile(
    r"""<meta[^>]+(?:property|name|itemprop)\s*=\s*["'](?:article:published_time|datePublished|date|dc\.date|DC\.date\.issued|pubdate)["'][^>]*>""",
    re.I,
)
_CONTENT = re.compile(r"""content\s*=\s*["']([^"']+)["']""", re.I)
_ISO_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def head_metadata(html: str) -> dict:
    """Title and published date from the page head with two regexes (cheap; see rich_metadata)."""
    import html as htmllib

    head = html[:50_000]
    meta: dict = {}
    m = _TITLE.search(head)
    if m:
        title = " ".join(htmllib.unescape(re.sub(r"<[^>]+>", "", m.group(1))).split())
        if title:
            meta["title"] = title
    for tag in _DATE_META.finditer(head):
        c = _CONTENT.search(tag.group(0))
        d = _ISO_DATE.search(c.group(1)) if c else None
        if d:
            meta["date"] = d.group(1)
            break
    return meta


def extract_html(html: str, url: str, cfg: ExtractConfig, max_date: str | None = None) -> tuple[str, dict]:
    """Main content + metadata of an HTML page (no boilerplate), with the extractor named by
    ``cfg.extractor``; formulas are kept as LaTeX (``cfg.math``, see stepcrawl/extractors/math.py)
    and counted in ``meta["math_formulas"]``."""
    from stepcrawl.extractors import html as backends

    source: object = html
    n_math = 0
    if cfg.math:
        from stepcrawl.extractors.math import preserve_math

        parse = backends.trafilatura_tree if cfg.extractor == "trafilatura" else None
        prepared = preserve_math(html, parse=parse)
        n_math = prepared.formulas
        if n_math:
            source = prepared.tree if cfg.extractor == "trafilatura" else prepared.html
    if cfg.extractor == "resiliparse":
        text, meta = backends.resiliparse_text(source), {}
    else:
        text, meta = backends.trafilatura_text(source, url, cfg.favor_precision, cfg.include_tables, cfg.rich_metadata, max_date)
    if not cfg.rich_metadata:
        meta = head_metadata(html)
    if n_math and text:
        meta["math_formulas"] = n_math
    return text, meta


# PDF/ePub extraction lives in stepcrawl.books (page-complete: headers/footers, page numbers,
# hyphenation); these names stay importable from here.
from stepcrawl.books import extract_epub, extract_pdf  # noqa: E402,F401


def _kind_of(content_type: str, url: str, payload: bytes) -> str | None:
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct in HTML_TYPES:
        return "html"
    if ct in PDF_TYPES or payload[:5] == b"%PDF-":
        return "pdf"
    if ct in EPUB_TYPES or (payload[:2] == b"PK" and url.lower().endswith(".epub")):
        return "epub"
    if ct in TEXT_TYPES:
        return "text"
    if not ct or ct == "application/octet-stream":
        head = payload[:1024].lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
            return "html"
    return None


def extract_record(raw: RawRecord, cfg: ExtractConfig = ExtractConfig()) -> Document | Drop:
    """Pure function: one response record → Document, or Drop with an ``extract:*`` reason."""
    url = raw.url or ""
    if raw.drop_reason:  # the reader's verdict: a damaged span, a crawler log
        return Drop(raw.drop_reason)
    if raw.status is not None and not (200 <= raw.status < 300):
        return Drop("extract:http-status")
    if raw.content_encoding or raw.transfer_encoding:
        try:
            body = decode_body(raw.payload, raw.content_encoding, raw.transfer_encoding, cfg.max_decoded_bytes)
        except DecodedTooLarge:
            log.warning("%s @ %s (%s): body inflates past %d bytes: dropped", raw.warc_file, raw.offset, url, cfg.max_decoded_bytes)
            return Drop("extract:decompressed-too-large")
        except BadContentEncoding as exc:
            log.debug("bad content coding for %s @ %s (%s): %s", raw.warc_file, raw.offset, url, exc)
            return Drop("extract:bad-content-encoding")
        if body is not raw.payload:
            # the decoded length is what the size limits below are about
            decoded_len = len(body) if raw.full_body_bytes <= len(raw.payload) else max(len(body), raw.full_body_bytes)
            raw = dataclasses.replace(raw, payload=body, content_encoding="", transfer_encoding="", body_bytes=decoded_len)
    kind = _kind_of(raw.content_type, url, raw.payload)
    if kind is None:
        return Drop("extract:unsupported-type")
    if raw.full_body_bytes > (cfg.max_bytes if kind in ("pdf", "epub") else cfg.max_html_bytes):
        return Drop("extract:too-large")
    meta: dict = {"content_type": (raw.content_type or "").split(";")[0].strip().lower(), "format": kind}
    try:
        with Deadline(cfg.book_timeout_s if kind in ("pdf", "epub") else cfg.timeout_s):
            text, m = _extract_payload(raw, kind, url, cfg, meta)
    except ExtractTimeout:
        log.warning("extract timed out after %gs for %s @ %s (%s)", cfg.timeout_s, raw.warc_file, raw.offset, url)
        return Drop("extract:timeout")
    except Exception as exc:  # a library choking on one record must never stop the job
        log.debug("extract failed for %s @ %s (%s): %s", raw.warc_file, raw.offset, url, exc)
        return Drop("extract:parse-error")
    text = text.strip()
    if len(text) < max(1, cfg.min_chars):
        return Drop("extract:empty")
    meta.update(m)
    return Document(
        id=record_doc_id(raw.record_id, url, raw.date),
        text=text,
        source=cfg.source,
        kind="book" if kind in ("pdf", "epub") else "web",
        url=url or None,
        fetched_at=raw.date,
        meta=meta,
        warc_file=raw.warc_file,
        warc_offset=raw.offset,
    )


def _extract_payload(raw: RawRecord, kind: str, url: str, cfg: ExtractConfig, meta: dict) -> tuple[str, dict]:
    """The costly part of :func:`extract_record` (runs under its time limit)."""
    if kind == "pdf":
        return extract_pdf(raw.payload)
    if kind == "epub":
        return extract_epub(raw.payload)
    text_in, encoding = decode_html(raw.payload, raw.content_type)
    meta["encoding"] = encoding
    if kind == "html":
        return extract_html(text_in, url, cfg, raw.date)
    return text_in.strip(), {}


# ---------------------------------------------------------------------------------- WARC reading


def iter_warc_documents(
    path: str | Path,
    cfg: ExtractConfig = ExtractConfig(),
    on_error: Callable[[WarcReadError], None] | None = None,
) -> Iterator[Document | Drop]:
    """Documents (or Drops) of one WARC/ARC file. Damaged spans are ``Drop("warc:damaged")``
    and reading resynchronises after them; ``on_error`` is called with a :class:`WarcReadError`
    per span. Without ``on_error`` the first such error is raised *after* every readable
    record has been yielded."""
    errors: list[WarcReadError] = []
    for raw in iter_warc_records(path, on_damage=on_error or errors.append,
                                 max_payload=max(cfg.max_bytes, cfg.max_html_bytes) + 1):
        yield extract_record(raw, cfg)
    if errors:
        raise errors[0]
