"""WARC reading that loses no good record to a bad neighbour.

:func:`iter_warc_records` yields one :class:`RawRecord` per record a caller must account for:
response/resource records (the candidate documents), non-content records a user might take
for documents (crawler logs stored as ``resource``/``metadata`` records with ``metadata://`` or
``urn:`` URIs, non-HTTP ``dns:`` responses: ``drop_reason="warc:non-content"``), and every
damaged byte span (``drop_reason="warc:damaged"``, ``offset``..``offset+length``). Structural
records (``warcinfo``, ``request``, ``revisit``, per-page ``metadata``) are skipped: they are
never candidate documents.

**Resynchronisation.** After damage — garbage between records, a corrupt or truncated gzip
member, a wrong ``Content-Length`` (too big or too small), a file cut short — the reader scans
forward from the start of the damaged record for the next *valid record start*: a gzip member
whose first bytes inflate to ``WARC/1.``, or an uncompressed ``WARC/1.x`` header line followed
by a header block with a ``Content-Length``. Everything between is one damaged span. A record
is good only when its block has exactly ``Content-Length`` bytes followed by the ``\\r\\n\\r\\n``
trailer (and, in a per-record gzip file, its member ends there), so a wrong length is caught by
the trailer check, not trusted. Uncompressed records among gzip members are read as records.

Why by hand: warcio and FastWARC both stop at the first damaged record (warcio raises or ends
quietly, FastWARC raises ``OSError``); neither can restart at the next member. The framing
(gzip members, the record trailer) is the only part written here; zlib inflates and
``warcio``'s header parser is not needed because WARC/HTTP header blocks are ``Name: value``
lines (RFC 7230 §3.2, continuation lines folded).

**Bounded memory.** Nothing is slurped: a gzip member is inflated incrementally, at most
``max_payload`` bytes of a record's body are kept (``body_bytes`` says how long it really was)
and the rest is read and discarded, and header blocks are capped at ``MAX_HEADER_BYTES``.
A whole-stream gzip WARC (one member) is read the same way, record by record.

**Record ranges.** ``start``/``end`` restrict reading to the records that *start* in
``[start, end)``; :func:`split_points` picks boundaries (valid record starts of a per-record
gzip WARC) so that work units over one file together read exactly what one reader reads.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

WARC_SUFFIXES = (".warc", ".warc.gz")
ARC_SUFFIXES = (".arc", ".arc.gz")
ARCHIVE_SUFFIXES = WARC_SUFFIXES + ARC_SUFFIXES

DAMAGED = "warc:damaged"  # a byte span that holds no readable record (its range is reported)
NON_CONTENT = "warc:non-content"  # a crawler log / non-HTTP record, never a document
READER_DROP_REASONS = (DAMAGED, NON_CONTENT)

MAX_HEADER_BYTES = 1 << 20  # a WARC or HTTP header block larger than this is damage
# Body bytes kept per record (the rest is read past, not held): ExtractConfig.max_bytes, the
# largest payload extraction accepts.
DEFAULT_MAX_PAYLOAD = 20_000_000

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."
CHUNK = 1 << 16
SCAN_BLOCK = 1 << 20
_WS = b"\r\n\t "
# URI schemes of records that hold web content; anything else (metadata:, urn:, dns:, …) in
# a resource/response record is crawler bookkeeping.
_CONTENT_SCHEMES = ("http://", "https://", "ftp://", "file:")


@dataclass(frozen=True)
class RawRecord:
    """One WARC record, reduced to what extraction needs (picklable, Beam-friendly)."""

    warc_file: str
    offset: int  # byte offset of the record (its gzip member) in the WARC file
    record_id: str  # WARC-Record-ID
    url: str
    date: str | None  # WARC-Date (ISO 8601)
    status: int | None  # HTTP status; None for resource records
    content_type: str  # HTTP Content-Type header (may carry charset=)
    payload: bytes  # HTTP body as stored (at most max_payload bytes of it), codings not undone
    content_encoding: str = ""  # HTTP Content-Encoding (undone by extract, under a cap)
    transfer_encoding: str = ""  # HTTP Transfer-Encoding (chunked is undone by extract)
    body_bytes: int = -1  # the stored body's full length (> len(payload) when it was capped)
    drop_reason: str | None = None  # set by the reader: counted, never a document
    length: int = 0  # bytes of the file this record (or damaged span) occupies
    detail: str = ""  # what was wrong, for damaged spans

    @property
    def full_body_bytes(self) -> int:
        return self.body_bytes if self.body_bytes >= 0 else len(self.payload)

    @property
    def end(self) -> int:
        return self.offset + self.length


class WarcReadError(RuntimeError):
    """A WARC file (or part of it) could not be read. Carries file and offset."""

    def __init__(self, warc_file: str, offset: int, message: str, end: int | None = None):
        self.warc_file, self.offset, self.end, self.message = warc_file, offset, end, message
        super().__init__(f"{warc_file}: offset {offset}: {message}")

    def __reduce__(self):  # picklable: it crosses from curate's worker processes to the parent
        return (type(self), (self.warc_file, self.offset, self.message, self.end))


class _Damage(Exception):
    def __init__(self, at: int, detail: str):
        super().__init__(detail)
        self.at, self.detail = at, detail

    def __reduce__(self):  # every project exception pickles (tests/test_integrity.py)
        return (type(self), (self.at, self.detail))


# ---------------------------------------------------------------------------------- streams


class _Stream:
    """A forward-only byte source with a small look-ahead buffer and a position counter."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.consumed = 0  # bytes handed out (or skipped) so far

    def _more(self) -> bool:  # append to self.buf; False at the end
        raise NotImplementedError

    def _fill(self, n: int) -> None:
        while len(self.buf) < n and self._more():
            pass

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self.buf[:n])

    def read(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.consumed += len(out)
        return out

    def skip(self, n: int) -> int:
        done = 0
        while done < n:
            if not self.buf and not self._more():
                break
            k = min(n - done, len(self.buf))
            del self.buf[:k]
            done += k
        self.consumed += done
        return done

    def readline(self, limit: int) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0 or len(self.buf) >= limit:
                n = i + 1 if 0 <= i < limit else limit
                return self.read(n)
            if not self._more():
                return self.read(len(self.buf))

    def skip_ws(self) -> None:
        while True:
            self._fill(1)
            if not self.buf:
                return
            n = len(self.buf) - len(bytes(self.buf).lstrip(_WS))
            if n == 0:
                return
            self.skip(n)

    def at_end(self) -> bool:
        self._fill(1)
        return not self.buf


class _PlainStream(_Stream):
    def __init__(self, fh: BinaryIO, start: int):
        super().__init__()
        fh.seek(start)
        self.fh, self.start = fh, start

    def _more(self) -> bool:
        data = self.fh.read(CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    @property
    def pos(self) -> int:
        return self.start + self.consumed


class _MemberStream(_Stream):
    """The inflated bytes of the gzip member at ``start``, produced lazily (never more than a
    few chunks ahead of the reader, whatever the member inflates to)."""

    def __init__(self, fh: BinaryIO, start: int):
        super().__init__()
        fh.seek(start)
        self.fh, self.start = fh, start
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.file_pos = start  # file position after the last read
        self.end: int | None = None  # the member's end in the file, once inflated to it
        self.records = 0  # records read from this member so far

    def _more(self) -> bool:
        if self.end is not None:
            return False
        data = self.d.unconsumed_tail
        if not data:
            data = self.fh.read(CHUNK)
            self.file_pos += len(data)
            if not data:
                raise _Damage(self.start, "the file ends inside this gzip member (truncated)")
        try:
            out = self.d.decompress(data, CHUNK * 4)
        except zlib.error as exc:
            raise _Damage(self.start, f"corrupt gzip member ({exc})") from None
        self.buf += out
        if self.d.eof:
            self.end = self.file_pos - len(self.d.unused_data)
        return True


# ---------------------------------------------------------------------------------- headers


def _parse_header_block(lines: list[str]) -> dict[str, str]:
    """``Name: value`` lines → {lower-case name: first value} (continuations folded)."""
    out: dict[str, str] = {}
    last = None
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t" and last is not None:
            out[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        last = name.strip().lower()
        if last not in out:
            out[last] = value.strip()
        else:
            last = None  # keep the first occurrence (what warcio's get_header returns)
    return out


def _header_end(buf: bytearray) -> tuple[int, int]:
    """(end of the header block, separator length) in ``buf``, or (-1, 0)."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return (crlf, 4) if crlf >= 0 else (-1, 0)


def _read_warc_headers(s: _Stream, at: int) -> dict[str, str]:
    s._fill(16)
    if not s.buf:
        raise _Damage(at, "empty record")
    if not s.buf.startswith(b"WARC/"):
        raise _Damage(at, f"no WARC/1.x version line (found {bytes(s.buf[:20])!r})")
    while True:
        end, sep = _header_end(s.buf)
        if end >= 0:
            break
        if len(s.buf) > MAX_HEADER_BYTES:
            raise _Damage(at, "WARC header block larger than 1 MiB")
        if not s._more():
            raise _Damage(at, "the file ends inside a WARC header block (truncated)")
    if end > MAX_HEADER_BYTES:
        raise _Damage(at, "WARC header block larger than 1 MiB")
    block = s.read(end + sep)
    h = _parse_header_block(block[:end].decode("latin-1").split("\n")[1:])
    try:
        if int(h.get("content-length", "")) < 0:
            raise ValueError
    except ValueError:
        raise _Damage(at, f"missing or invalid Content-Length ({h.get('content-length')!r})") from None
    return h


_STATUS = re.compile(rb"^HTTP/\d(?:\.\d)?\s+(\d{3})")


def _split_http(block: bytes) -> tuple[int | None, dict[str, str], int] | None:
    """(status, headers, body start) of an HTTP response at the start of ``block``."""
    end = block.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES)
    sep = 4
    if end < 0:
        end = block.find(b"\n\n", 0, MAX_HEADER_BYTES)
        sep = 2
    if end < 0:
        if len(block) < MAX_HEADER_BYTES and block.startswith(b"HTTP/"):
            end, sep = len(block), 0  # headers only, no body
        else:
            return None
    head = block[:end].decode("latin-1").split("\n")
    m = _STATUS.match(head[0].strip().encode("latin-1"))
    status = int(m.group(1)) if m else None
    if status is None and not head[0].startswith("HTTP/"):
        return None
    return status, _parse_header_block(head[1:]), end + sep


# ---------------------------------------------------------------------------------- records


@dataclass
class _Ctx:
    name: str
    max_payload: int


def _is_content_uri(url: str) -> bool:
    return url.lower().startswith(_CONTENT_SCHEMES)


def _classify(rtype: str, url: str, warc_ctype: str) -> str:
    """What a record is to us: ``skip`` (structural: warcinfo, request, revisit, per-page
    metadata), ``non-content`` (crawler logs, dns:/whois: responses), ``resource`` or ``http``."""
    if rtype not in ("response", "resource", "metadata"):
        return "skip"
    if rtype == "metadata":
        return "non-content" if not _is_content_uri(url) else "skip"
    if not _is_content_uri(url):
        return "non-content"
    if rtype == "resource":
        return "resource"
    is_http = warc_ctype.lower().startswith("application/http") or (
        not warc_ctype and url.lower().startswith(("http://", "https://")))
    return "http" if is_http else "non-content"


def _non_content(base: dict, rtype: str, url: str, warc_ctype: str, length: int) -> RawRecord:
    return RawRecord(**base, status=None, content_type=warc_ctype, payload=b"", body_bytes=length,
                     drop_reason=NON_CONTENT, detail=f"{rtype} record {url or '(no URI)'}")


def _read_record(s: _Stream, at: int, ctx: _Ctx) -> RawRecord | None:
    """One record from ``s`` (positioned at its ``WARC/`` line). None for structural records.
    Raises :class:`_Damage` when the record is not exactly what its headers declare."""
    h = _read_warc_headers(s, at)
    length = int(h["content-length"])
    rtype = h.get("warc-type", "").lower()
    url = h.get("warc-target-uri", "").strip("<> ")
    warc_ctype = h.get("content-type", "")
    kind = _classify(rtype, url, warc_ctype)
    keep = min(length, ctx.max_payload + (1 << 16)) if kind in ("resource", "http") else 0
    block = s.read(keep)
    if len(block) < keep or s.skip(length - keep) < length - keep:
        raise _Damage(at, f"block shorter than its Content-Length {length} (truncated, or the length is wrong)")
    trailer = s.read(4)
    if trailer != b"\r\n\r\n" and not (trailer.strip(_WS) == b"" and s.at_end()):
        raise _Damage(at, f"no record end after Content-Length {length} bytes (found {trailer!r}): the length is wrong")
    if kind == "skip":
        return None
    base = dict(warc_file=ctx.name, offset=at, record_id=h.get("warc-record-id", ""), url=url,
                date=h.get("warc-date"))
    if kind == "non-content":
        return _non_content(base, rtype, url, warc_ctype, length)
    if kind == "resource":
        return RawRecord(**base, status=None, content_type=warc_ctype, payload=block[:ctx.max_payload],
                         body_bytes=length)
    http = _split_http(block)
    if http is None:
        raise _Damage(at, "response record without a readable HTTP header block")
    status, hh, body_at = http
    return RawRecord(**base, status=status, content_type=hh.get("content-type", ""),
                     payload=block[body_at:body_at + ctx.max_payload], body_bytes=length - body_at,
                     content_encoding=hh.get("content-encoding", ""),
                     transfer_encoding=hh.get("transfer-encoding", ""))


# ---------------------------------------------------------------------------------- resync


def _valid_start(fh: BinaryIO, pos: int) -> bool:
    """A record starts at ``pos``: a gzip member inflating to ``WARC/1.``, or a plain
    ``WARC/1.x`` line with a Content-Length in its header block."""
    fh.seek(pos)
    data = fh.read(1 << 14)
    if data.startswith(GZIP_MAGIC):
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = d.decompress(data, 1 << 12)
        except zlib.error:
            return False
        return out.startswith(WARC_MAGIC) and out[7:8] in b"01"
    if data.startswith(WARC_MAGIC) and data[7:8] in b"01" and data[8:9] in (b"\r", b"\n"):
        head_end = data.find(b"\r\n\r\n")
        head = data[: head_end if head_end >= 0 else len(data)].lower()
        return b"\ncontent-length:" in head
    return False


def next_record_start(fh: BinaryIO, pos: int, size: int) -> int:
    """The first valid record start at or after ``pos`` (``size`` when there is none)."""
    checked = pos - 1
    base = pos
    while base < size:
        fh.seek(base)
        window = fh.read(SCAN_BLOCK + 8)
        if not window:
            break
        cands = sorted({m.start() for pat in (GZIP_MAGIC, WARC_MAGIC) for m in re.finditer(re.escape(pat), window)})
        for c in cands:
            at = base + c
            if at > checked and _valid_start(fh, at):
                return at
            checked = max(checked, at)
        base += SCAN_BLOCK
    return size


def _file_size(fh: BinaryIO) -> int:
    here = fh.tell()
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(here)
    return size


def _scan(fh: BinaryIO, start: int, end: int | None, ctx: _Ctx) -> Iterator[RawRecord]:
    size = _file_size(fh)
    stop = size if end is None else min(end, size)
    pos = start

    def damaged(at: int, upto: int, detail: str) -> RawRecord:
        return RawRecord(warc_file=ctx.name, offset=at, record_id="", url="", date=None, status=None,
                         content_type="", payload=b"", body_bytes=0, drop_reason=DAMAGED,
                         length=upto - at, detail=detail)

    while pos < stop:
        fh.seek(pos)
        head = fh.read(16)
        if not head:
            break
        if head.startswith(GZIP_MAGIC):
            member = _MemberStream(fh, pos)
            try:
                member.skip_ws()
                if member.at_end():
                    raise _Damage(pos, "empty gzip member")
                while True:
                    rec = _read_record(member, pos, ctx)
                    member.skip_ws()
                    done = member.at_end()  # inflates to the member's end: its CRC is checked first
                    if rec is not None:
                        # one record per member (the usual layout) owns the member's bytes; the
                        # records of a whole-stream gzip WARC share its offset
                        yield replace(rec, length=member.end - pos) if done and member.records == 0 else rec
                    member.records += 1
                    if done:
                        break
                nxt = member.end if member.end is not None else member.file_pos
            except _Damage as dmg:
                nxt = next_record_start(fh, dmg.at + 1, size)
                yield damaged(dmg.at, nxt, dmg.detail)
            pos = nxt
            continue
        stripped = head.lstrip(_WS)
        if not stripped:  # CR/LF padding between records (or at the end)
            plain = _PlainStream(fh, pos)
            plain.skip_ws()
            pos = plain.pos
            continue
        if len(stripped) < len(head):
            pos += len(head) - len(stripped)
            continue
        if head.startswith(WARC_MAGIC):
            plain = _PlainStream(fh, pos)
            # consecutive uncompressed records share one stream (no re-seek per record)
            while pos < stop:
                at = plain.pos
                try:
                    rec = _read_record(plain, at, ctx)
                except _Damage as dmg:
                    nxt = next_record_start(fh, dmg.at + 1, size)
                    yield damaged(dmg.at, nxt, dmg.detail)
                    pos = nxt
                    break
                plain.skip_ws()
                pos = plain.pos
                if rec is not None:
                    yield replace(rec, length=pos - at)
                if not plain.peek(len(WARC_MAGIC)) == WARC_MAGIC:
                    break  # a gzip member, garbage or the end: the outer loop decides
            continue
        nxt = next_record_start(fh, pos + 1, size)
        yield damaged(pos, nxt, f"bytes that are no WARC record (found {head[:12]!r})")
        pos = nxt


# ---------------------------------------------------------------------------------- FastWARC


class _Fallback(Exception):
    pass


def _is_multi_record_member(fh: BinaryIO, start: int, ctx: _Ctx) -> bool:
    """Whether the gzip member at ``start`` holds more than one record (a whole-stream gzip
    WARC, whose record positions FastWARC does not report as member offsets)."""
    fh.seek(start)
    if not fh.read(3).startswith(GZIP_MAGIC):
        return False
    member = _MemberStream(fh, start)
    try:
        _read_record(member, start, ctx)
        member.skip_ws()
        return not member.at_end()
    except _Damage:
        return True  # let the resynchronising reader deal with it


def _from_fastwarc(rec, at: int, ctx: _Ctx) -> dict | None:
    """The fields of the :class:`RawRecord` the resynchronising reader makes of the same record
    (a dict: the record is built once its length is known)."""
    from fastwarc.warc import WarcRecordType

    h = rec.headers
    t = rec.record_type  # an enum-like value that cannot be hashed: compare
    rtype = ("response" if t == WarcRecordType.response else "resource" if t == WarcRecordType.resource
             else "metadata" if t == WarcRecordType.metadata else "other")
    url = (h.get("WARC-Target-URI") or "").strip("<> ")
    warc_ctype = h.get("Content-Type") or ""
    kind = _classify(rtype, url, warc_ctype)
    if kind == "skip":
        return None
    base = dict(warc_file=ctx.name, offset=at, record_id=h.get("WARC-Record-ID") or "", url=url,
                date=h.get("WARC-Date"))
    if kind == "non-content":
        return dict(base, status=None, content_type=warc_ctype, payload=b"", body_bytes=rec.content_length,
                    drop_reason=NON_CONTENT, detail=f"{rtype} record {url or '(no URI)'}")
    if kind == "resource":
        return dict(base, status=None, content_type=warc_ctype, payload=rec.reader.read(ctx.max_payload),
                    body_bytes=rec.content_length)
    if not rec.is_http_parsed:
        rec.parse_http()
    hh = rec.http_headers
    return dict(base, status=hh.status_code, content_type=hh.get("Content-Type") or "",
                payload=rec.reader.read(ctx.max_payload), body_bytes=rec.content_length,
                content_encoding=hh.get("Content-Encoding") or "", transfer_encoding=hh.get("Transfer-Encoding") or "")


def _fast_scan(fh: BinaryIO, start: int, end: int | None, ctx: _Ctx) -> Iterator[RawRecord]:
    """FastWARC (C++) parses; each record is handed on only once FastWARC has parsed the next
    one exactly after it, so a damaged record (which FastWARC may return before it raises, or
    return cut short at the end of a file) is never trusted: from the first record that is not
    confirmed that way, the resynchronising reader takes over (it re-reads the last record, and
    reads on from any damage). Same records, offsets and ids as :func:`_scan`."""
    from fastwarc.warc import ArchiveIterator

    resume_at = start
    if not _is_multi_record_member(fh, start, ctx):
        fh.seek(start)
        pending: tuple[int, dict | None] | None = None
        try:
            try:  # FastWARC >= 2 decodes payloads unless told not to; older ones never did
                records = ArchiveIterator(fh, parse_http=False, auto_decode="none", fsspec_args=False)
            except TypeError:
                records = ArchiveIterator(fh, parse_http=False)
            for rec in records:
                at = start + rec.stream_pos
                if pending is None:
                    if at != start:
                        raise _Fallback  # FastWARC skipped leading bytes: let _scan report them
                else:
                    if at <= pending[0]:
                        raise _Fallback
                    if pending[1] is not None:
                        yield RawRecord(**pending[1], length=at - pending[0])
                resume_at = at
                pending = None
                if end is not None and at >= end:
                    return
                pending = (at, _from_fastwarc(rec, at, ctx))
        except Exception:  # FastWARC's OSError on damage, or anything it did not expect
            pass
    yield from _scan(fh, resume_at, end, ctx)


def _seekable(fh: BinaryIO) -> bool:
    try:
        return bool(fh.seekable()) if hasattr(fh, "seekable") else False
    except Exception:
        return False


def iter_warc_records(source: str | os.PathLike | BinaryIO, warc_name: str | None = None,
                      source_name: str | None = None, *, start: int = 0, end: int | None = None,
                      max_payload: int = DEFAULT_MAX_PAYLOAD,
                      on_damage: Callable[[WarcReadError], None] | None = None,
                      engine: str = "auto") -> Iterator[RawRecord]:
    """The records of one WARC (or ARC) file a caller must account for, with byte offsets.

    ``source`` is a path or a binary file object opened at the start of the file (e.g. from
    Beam's ``FileSystems.open(path, compression_type=UNCOMPRESSED)``; a stream that cannot
    seek is spooled to a temporary file first, and it is not closed here). ``warc_name`` is
    the ``warc_file`` provenance value (default: the base name of the path or of the stream's
    ``name``); ``source_name`` is what errors call the file (default: the path or stream name).

    Damaged spans are yielded as records with ``drop_reason="warc:damaged"`` and reading goes
    on after them. ``on_damage`` (if given) is also called with a :class:`WarcReadError` per
    span (file, start offset, end).

    ``engine``: ``"fastwarc"`` parses with FastWARC and hands over to the resynchronising
    reader at the first record it cannot confirm (see :func:`_fast_scan`); ``"resync"`` uses
    only the resynchronising reader; ``"auto"`` (default) is ``"fastwarc"`` when it is
    installed. Both give the same records, offsets and ids. ARC files are read by warcio.
    """
    if engine not in ("auto", "fastwarc", "resync"):
        raise ValueError(f"unknown WARC reader engine {engine!r} (auto, fastwarc, resync)")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        with open(path, "rb") as fh:
            yield from iter_warc_records(fh, warc_name or path.name, source_name or str(path), start=start,
                                         end=end, max_payload=max_payload, on_damage=on_damage, engine=engine)
        return
    stream_name = getattr(source, "name", None)
    stream_name = stream_name if isinstance(stream_name, str) and stream_name else None
    label = warc_name or (os.path.basename(stream_name) if stream_name else "<stream>")
    where = source_name or stream_name or label
    if not _seekable(source):
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
            shutil.copyfileobj(source, spool, 1 << 20)
            spool.seek(0)
            yield from iter_warc_records(spool, label, where, start=start, end=end, max_payload=max_payload,
                                         on_damage=on_damage, engine=engine)
        return
    ctx = _Ctx(label, max_payload)
    if _is_arc(source, label):
        from stepcrawl.readers.arc import iter_arc_records

        records = iter_arc_records(source, ctx.name, max_payload)
    elif engine != "resync" and _have_fastwarc():
        records = _fast_scan(source, start, end, ctx)
    else:
        records = _scan(source, start, end, ctx)
    for rec in records:
        if rec.drop_reason == DAMAGED and on_damage is not None:
            on_damage(WarcReadError(where, rec.offset, f"damaged bytes {rec.offset}..{rec.end} "
                                    f"({rec.length} bytes skipped): {rec.detail}", rec.end))
        yield rec


def _have_fastwarc() -> bool:
    try:
        import fastwarc.warc  # noqa: F401
    except ImportError:
        return False
    return True


def _is_arc(fh: BinaryIO, name: str) -> bool:
    """ARC files: by name; by content (an ARC file starts with a ``filedesc://`` line) only
    when the name says neither (a stream without a name)."""
    if name.endswith(ARC_SUFFIXES):
        return True
    if name.endswith(WARC_SUFFIXES):
        return False
    here = fh.tell()
    head = fh.read(1 << 12)
    fh.seek(here)
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64)
        except zlib.error:
            return False
    return head.startswith(b"filedesc://")


def damage_error(rec: RawRecord, where: str | None = None) -> dict:
    """The manifest's ``errors`` entry for a damaged span: file, byte range, bytes, reason."""
    where = where or rec.warc_file
    return {"file": where, "offset": rec.offset, "end": rec.end, "bytes": rec.length, "reason": rec.drop_reason,
            "error": f"{where}: offset {rec.offset}: damaged bytes {rec.offset}..{rec.end} "
                     f"({rec.length} bytes skipped): {rec.detail}"}


def split_points(path: str | os.PathLike, target_bytes: int) -> list[int]:
    """Record-range boundaries for a per-record gzip WARC: the first valid record start at or
    after each multiple of ``target_bytes`` (0 first). Uncompressed WARCs, whole-stream gzip
    WARCs and ARC files are one range (``[0]``): in an uncompressed file a ``WARC/1.`` line
    can sit inside a payload, and a single gzip stream has no member to restart at."""
    p = Path(path)
    size = p.stat().st_size
    if target_bytes <= 0 or size <= target_bytes or p.name.endswith(ARC_SUFFIXES):
        return [0]
    points = [0]
    with open(p, "rb") as fh:
        if not fh.read(3).startswith(GZIP_MAGIC):
            return [0]
        k = 1
        while k * target_bytes < size:
            s = next_record_start(fh, max(k * target_bytes, points[-1] + 1), size)
            if s >= size:
                break
            points.append(s)
            k = max(k + 1, s // target_bytes + 1)
    return points


def warc_files(path: str | os.PathLike) -> list[Path]:
    """The WARC and ARC files under ``path`` (a file, or a folder searched recursively), sorted."""
    p = Path(path)
    if p.is_file():
        return [p] if p.name.endswith(ARCHIVE_SUFFIXES) else []
    if not p.is_dir():
        raise FileNotFoundError(f"no such WARC file or folder: {p}")
    return sorted(
        f for f in p.rglob("*")
        if f.is_file() and f.name.endswith(ARCHIVE_SUFFIXES) and not f.name.startswith(".")
    )
