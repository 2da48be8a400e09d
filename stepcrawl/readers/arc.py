"""ARC files (the Internet Archive's format before WARC), read with warcio's ``arc2warc`` mode.

warcio parses ARC v1 headers and hands each record over as a WARC ``response`` record, so the
same :class:`~stepcrawl.readers.warc.RawRecord` comes out as for a WARC. Bodies are read from
warcio's *raw* stream (codings not undone, at most ``max_payload`` bytes kept, the rest read
past) so the content-decoding cap applies to ARC records too. ARC has no record trailer to
resynchronise on, so damage here ends the file: the rest is one ``warc:damaged`` span.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

from stepcrawl.readers.warc import DAMAGED, NON_CONTENT, RawRecord, _is_content_uri

_READ = 1 << 16


def _read_capped(stream, keep: int) -> tuple[bytes, int]:
    """(first ``keep`` bytes, total length) of a stream, holding no more than ``keep``."""
    kept = bytearray()
    total = 0
    while True:
        block = stream.read(_READ)
        if not block:
            return bytes(kept), total
        total += len(block)
        if len(kept) < keep:
            kept += block[: keep - len(kept)]


def iter_arc_records(fh: BinaryIO, name: str, max_payload: int) -> Iterator[RawRecord]:
    from warcio.archiveiterator import ArchiveIterator

    here = fh.tell()
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(here)
    it = ArchiveIterator(fh, arc2warc=True)
    end = 0
    try:
        for record in it:
            h = record.rec_headers
            url = h.get_header("WARC-Target-URI") or ""
            rtype = record.rec_type
            status = None
            ctype = h.get_header("Content-Type") or ""
            cenc = tenc = ""
            if rtype == "response" and record.http_headers is not None:
                hh = record.http_headers
                try:
                    status = int(hh.get_statuscode())
                except (TypeError, ValueError):
                    status = None
                ctype = hh.get_header("Content-Type") or ""
                cenc = hh.get_header("Content-Encoding") or ""
                tenc = hh.get_header("Transfer-Encoding") or ""
            payload, total = _read_capped(record.raw_stream, max_payload if rtype in ("response", "resource") else 0)
            record.raw_stream.read()  # nothing left; lets warcio compute the record length
            start, length = it.get_record_offset(), it.get_record_length()
            end = start + length
            # ARC records carry no record id (warcio makes up a random one): the document id
            # is then the URL + archive date (stepcrawl.extract.record_doc_id), stable across reads
            base = dict(warc_file=name, offset=start, record_id="", url=url, length=length,
                        date=h.get_header("WARC-Date"), status=status, content_type=ctype)
            if rtype not in ("response", "resource"):
                continue
            if not _is_content_uri(url) or (rtype == "response" and record.http_headers is None):
                yield RawRecord(**base, payload=b"", body_bytes=total, drop_reason=NON_CONTENT,
                                detail=f"ARC record {url or '(no URI)'}")
            else:
                yield RawRecord(**base, payload=payload, body_bytes=total, content_encoding=cenc,
                                transfer_encoding=tenc)
    except Exception as exc:  # warcio raises assorted errors on damaged ARC data
        try:
            at = max(end, it.offset)
        except Exception:
            at = end
        yield RawRecord(warc_file=name, offset=at, record_id="", url="", date=None, status=None, content_type="",
                        payload=b"", body_bytes=0, drop_reason=DAMAGED, length=size - at,
                        detail=f"unreadable ARC data ({type(exc).__name__}: {exc}); ARC has no record "
                               f"boundary to resynchronise on, the rest of the file is skipped")
