"""Extract: WARC response records → Documents (HTML via trafilatura, PDF via pypdf, ePub via EbookLib).

The unit of work is a plain, picklable :class:`RawRecord` (bytes + the few WARC/HTTP headers we
need) so that the pure function :func:`extract_record` runs unchanged in the local executor, in
Beam, or on Common Crawl WARCs. :func:`iter_warc_records` reads one WARC file with warcio and,
when the file is truncated or corrupt, reports a :class:`WarcReadError` naming the file and the
byte offset of the last record it could not read; everything before that point is kept.

Every response record becomes a Document or a ``Drop`` whose reason is one of
``EXTRACT_DROP_REASONS`` (so the caller's accounting stays exact: in = out + Σ drops).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from stepcrawl.document import Document
from stepcrawl.io import sniff_gzip_ok
from stepcrawl.steps import Drop

log = logging.getLogger(__name__)
# trafilatura logs an ERROR for every page without content ("empty HTML tree"); those are our
# counted ``extract:empty`` drops, not errors, so keep its logger quiet.
logging.getLogger("trafilatura").setLevel(logging.CRITICAL)

EXTRACT_DROP_REASONS = (
    "extract:http-status",  # not a 2xx response
    "extract:unsupported-type",  # content type we do not extract (images, JS, zip, …)
    "extract:too-large",  # payload above ExtractConfig.max_bytes (PDF/ePub; HTML is capped instead)
    "extract:parse-error",  # the PDF/ePub/HTML library raised on this payload
    "extract:empty",  # extraction returned no (or too little) text
)

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
PDF_TYPES = ("application/pdf", "application/x-pdf")
EPUB_TYPES = ("application/epub+zip",)
TEXT_TYPES = ("text/plain",)
WARC_SUFFIXES = (".warc", ".warc.gz")


@dataclass(frozen=True)
class ExtractConfig:
    """Knobs of the extract step (all JSON-able: they go into the stage manifest)."""

    # HTML larger than this is cut before parsing: trafilatura's cost grows with the DOM, and
    # the main content of a real page is almost always in its first megabytes.
    max_html_bytes: int = 2_000_000
    # PDFs/ePubs larger than this are dropped (``extract:too-large``): parsing them is slow and
    # they are rare in web crawls.
    max_bytes: int = 20_000_000
    min_chars: int = 1  # results shorter than this are ``extract:empty``
    favor_precision: bool = True  # trafilatura: drop more boilerplate
    # trafilatura's full metadata pass (htmldate's date heuristics, author, sitename) costs ~25%
    # of extraction time; by default title and date come from the page's <title> and its
    # published-date <meta> tags instead (WARC-Date is always kept as fetched_at).
    rich_metadata: bool = False
    include_tables: bool = True
    source: str = "web"


@dataclass(frozen=True)
class RawRecord:
    """One WARC response record, reduced to what extraction needs (picklable, Beam-friendly)."""

    warc_file: str
    offset: int  # byte offset of the record in the (possibly gzipped) WARC file
    record_id: str  # WARC-Record-ID
    url: str
    date: str | None  # WARC-Date (ISO 8601)
    status: int | None  # HTTP status; None for resource records
    content_type: str  # HTTP Content-Type header (may carry charset=)
    payload: bytes  # HTTP body (already de-chunked / content-decoded by warcio)


class WarcReadError(RuntimeError):
    """A WARC file could not be read to its end. Carries file and offset."""

    def __init__(self, warc_file: str, offset: int, message: str):
        self.warc_file, self.offset = warc_file, offset
        super().__init__(f"{warc_file}: offset {offset}: {message}")


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
    """Main content + metadata of an HTML page with trafilatura (no boilerplate)."""
    import trafilatura

    kwargs: dict = {}
    if cfg.rich_metadata:
        params = {"extensive_search": False, "original_date": True}
        if max_date:
            params["max_date"] = max_date[:10]  # keeps the guessed date deterministic across runs
        kwargs = {"with_metadata": True, "date_extraction_params": params}
    result = trafilatura.bare_extraction(
        html,
        url=url or None,
        favor_precision=cfg.favor_precision,
        include_tables=cfg.include_tables,
        include_comments=False,
        **kwargs,
    )
    if result is None:
        return "", {}
    d = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    if cfg.rich_metadata:
        meta = {k: d.get(k) for k in ("title", "date", "author", "sitename", "description") if d.get(k)}
    else:
        meta = head_metadata(html)
    return d.get("text") or "", meta


def extract_pdf(payload: bytes) -> tuple[str, dict]:
    """PDF text with pypdf (maintained, pure Python)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(payload))
    pages = [(p.extract_text() or "").strip() for p in reader.pages]
    meta: dict = {"pages": len(pages)}
    info = reader.metadata
    if info is not None and info.title:
        meta["title"] = str(info.title)
    return "\n\n".join(p for p in pages if p), meta


def extract_epub(payload: bytes, cfg: ExtractConfig) -> tuple[str, dict]:
    """ePub text with EbookLib: the spine's XHTML documents in reading order, each through lxml."""
    import warnings

    import lxml.html
    from ebooklib import ITEM_DOCUMENT, epub

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = epub.read_epub(io.BytesIO(payload), options={"ignore_ncx": True})
    parts = []
    order = [book.get_item_with_id(item_id) for item_id, _ in book.spine]
    items = [i for i in order if i is not None and i.get_type() == ITEM_DOCUMENT]
    for item in items:
        body = item.get_body_content() or item.get_content()
        if not body or not body.strip():
            continue
        tree = lxml.html.fromstring(body)
        for bad in tree.xpath("//script|//style"):
            bad.drop_tree()
        text = re.sub(r"\n{3,}", "\n\n", tree.text_content()).strip()
        if text:
            parts.append(text)
    meta = {}
    titles = book.get_metadata("DC", "title")
    if titles:
        meta["title"] = titles[0][0]
    return "\n\n".join(parts), meta


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
    if raw.status is not None and not (200 <= raw.status < 300):
        return Drop("extract:http-status")
    kind = _kind_of(raw.content_type, url, raw.payload)
    if kind is None:
        return Drop("extract:unsupported-type")
    meta: dict = {"content_type": (raw.content_type or "").split(";")[0].strip().lower(), "format": kind}
    payload = raw.payload
    try:
        if kind in ("html", "text"):
            if len(payload) > cfg.max_html_bytes:
                meta["truncated_bytes"] = len(payload)
                payload = payload[: cfg.max_html_bytes]
            text_in, encoding = decode_html(payload, raw.content_type)
            meta["encoding"] = encoding
            if kind == "html":
                text, m = extract_html(text_in, url, cfg, raw.date)
            else:
                text, m = text_in.strip(), {}
        elif len(payload) > cfg.max_bytes:
            return Drop("extract:too-large")
        elif kind == "pdf":
            text, m = extract_pdf(payload)
        else:
            text, m = extract_epub(payload, cfg)
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
        kind="web",
        url=url or None,
        fetched_at=raw.date,
        meta=meta,
        warc_file=raw.warc_file,
        warc_offset=raw.offset,
    )


# ---------------------------------------------------------------------------------- WARC reading


def iter_warc_records(path: str | Path, warc_name: str | None = None) -> Iterator[RawRecord]:
    """Response/resource records of one WARC(.gz) file, with their byte offsets.

    Raises :class:`WarcReadError` (file + offset) when the file is truncated or corrupt; all
    records before the damage have been yielded by then.
    """
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    path = Path(path)
    name = warc_name or path.name
    offset = end = 0
    with open(path, "rb") as fh:
        it = ArchiveIterator(fh)
        try:
            for record in it:
                if record.rec_type not in ("response", "resource"):
                    offset = it.get_record_offset()
                    end = offset + it.get_record_length()
                    continue
                h = record.rec_headers
                status = None
                ctype = h.get_header("Content-Type") or ""
                if record.rec_type == "response":
                    if record.http_headers is None:
                        offset = it.get_record_offset()
                        end = offset + it.get_record_length()
                        continue  # dns:/whois: responses carry no HTTP message
                    try:
                        status = int(record.http_headers.get_statuscode())
                    except (TypeError, ValueError):
                        status = None
                    ctype = record.http_headers.get_header("Content-Type") or ""
                payload = record.content_stream().read()
                # warcio knows a record's offset only once it has been read to its end
                offset = it.get_record_offset()
                end = offset + it.get_record_length()
                yield RawRecord(
                    warc_file=name,
                    offset=offset,
                    record_id=h.get_header("WARC-Record-ID") or "",
                    url=h.get_header("WARC-Target-URI") or "",
                    date=h.get_header("WARC-Date"),
                    status=status,
                    content_type=ctype,
                    payload=payload,
                )
            # warcio ends quietly on a gzip file cut inside its last member: check the end
            if path.name.endswith(".gz") and not sniff_gzip_ok(path):
                raise WarcReadError(str(path), end, "truncated gzip: the file ends inside the record starting here")
            if not path.name.endswith(".gz") and end < path.stat().st_size and _has_payload_after(path, end):
                raise WarcReadError(str(path), end, "truncated WARC: unparseable bytes after the last complete record")
        except WarcReadError:
            raise
        except (ArchiveLoadFailed, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
            # warcio may not have advanced its offset for the broken record: report where the
            # last good record ended (the start of the damaged one).
            try:
                bad_at = max(offset, it.offset)
            except Exception:
                bad_at = offset
            raise WarcReadError(str(path), bad_at, f"truncated or corrupt WARC ({type(exc).__name__}: {exc})") from exc
        except Exception as exc:  # zlib.error and friends
            raise WarcReadError(str(path), offset, f"unreadable WARC record ({type(exc).__name__}: {exc})") from exc


def _has_payload_after(path: Path, end: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(end)
        return bool(fh.read(1 << 16).strip())


def iter_warc_documents(
    path: str | Path,
    cfg: ExtractConfig = ExtractConfig(),
    on_error: Callable[[WarcReadError], None] | None = None,
) -> Iterator[Document | Drop]:
    """Documents (or Drops) of one WARC file. A damaged file raises :class:`WarcReadError`
    after its readable records, unless ``on_error`` takes it (then iteration just ends)."""
    try:
        for raw in iter_warc_records(path):
            yield extract_record(raw, cfg)
    except WarcReadError as err:
        if on_error is None:
            raise
        on_error(err)


def warc_files(path: str | Path) -> list[Path]:
    """The WARC files under ``path`` (a file, or a folder searched recursively), sorted."""
    p = Path(path)
    if p.is_file():
        return [p] if p.name.endswith(WARC_SUFFIXES) else []
    if not p.is_dir():
        raise FileNotFoundError(f"no such WARC file or folder: {p}")
    return sorted(
        f
        for f in p.rglob("*")
        if f.is_file() and f.name.endswith(WARC_SUFFIXES) and not f.name.startswith(".")
    )


def config_dict(cfg: ExtractConfig) -> dict:
    return asdict(cfg)
