"""HTTP message bodies as stored in a WARC → the entity bytes, under a hard size cap.

A WARC response holds the bytes the server sent: possibly ``Transfer-Encoding: chunked`` (when
the crawler kept it) and ``Content-Encoding: gzip|deflate|br``. Inflating such a body is where
a 64 KB record turns into 3 GiB (a compression bomb), so decoding here is incremental and
stops at ``max_out`` bytes of output: the caller learns that the body is larger than the cap
(:class:`DecodedTooLarge`) without it ever being inflated past it.

zlib and brotli do the decompression; what is hand-written is only the loop that feeds them
with a bounded output size (``decompress(data, max_length)`` / brotli's ``output_buffer_limit``),
because neither warcio nor FastWARC exposes a cap on the content decoding they do.
"""

from __future__ import annotations

import zlib

CHUNK = 1 << 16


class DecodedTooLarge(ValueError):
    """The decoded body would exceed the cap."""


class BadContentEncoding(ValueError):
    """The body claims a coding its bytes do not follow (and do not look like plain bytes)."""


def dechunk(body: bytes) -> bytes:
    """Undo ``Transfer-Encoding: chunked``. Lenient like warcio: bytes that are not in chunked
    form (a crawler that de-chunked but kept the header) are returned unchanged."""
    out = bytearray()
    pos = 0
    n = len(body)
    while pos < n:
        eol = body.find(b"\r\n", pos, pos + 64)
        if eol < 0:
            return body
        size_field = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            return body
        if size == 0:
            return bytes(out)
        start = eol + 2
        out += body[start:start + size]
        pos = start + size
        if body[pos:pos + 2] == b"\r\n":
            pos += 2
    return bytes(out)  # chunked but cut short (a capped payload): what we have


def _inflate(body: bytes, wbits: int, max_out: int, complete: bool) -> bytes:
    d = zlib.decompressobj(wbits)
    out = bytearray()
    data = body
    while data:
        piece = d.decompress(data, min(CHUNK * 16, max_out + 1 - len(out)))
        out += piece
        if len(out) > max_out:
            raise DecodedTooLarge(f"inflates past {max_out} bytes")
        data = d.unconsumed_tail
        if d.eof:
            rest = d.unused_data
            if wbits > 16 and rest[:2] == b"\x1f\x8b":
                # gzip allows several members in a row, and HTTP clients inflate them all
                d, data = zlib.decompressobj(wbits), rest
                continue
            break
        if not piece and not data:
            break
    if complete and not d.eof and not d.unconsumed_tail and body:
        # the stored body ends inside the compressed stream: keep what inflated (a cut page is
        # what a browser shows too), unless nothing did
        if not out:
            raise BadContentEncoding("truncated compressed body")
    return bytes(out)


def _brotli(body: bytes, max_out: int) -> bytes:
    try:
        import brotli
    except ImportError as exc:  # pragma: no cover - brotli is a dependency
        raise BadContentEncoding("br coding needs the brotli package") from exc
    d = brotli.Decompressor()
    out = bytearray()
    try:
        if hasattr(d, "can_accept_more_data"):  # brotli >= 1.2: bounded output per call
            out += d.process(body, output_buffer_limit=CHUNK * 16)
            while len(out) <= max_out and not d.is_finished() and not d.can_accept_more_data():
                out += d.process(b"", output_buffer_limit=CHUNK * 16)
        else:  # older brotli cannot bound one call: feed it small slices
            for i in range(0, len(body), 1024):
                out += d.process(body[i:i + 1024])
                if len(out) > max_out:
                    break
    except brotli.error as exc:
        raise BadContentEncoding(f"br: {exc}") from exc
    if len(out) > max_out:
        raise DecodedTooLarge(f"inflates past {max_out} bytes")
    return bytes(out)


def decode_body(body: bytes, content_encoding: str = "", transfer_encoding: str = "",
                max_out: int = 20_000_000) -> bytes:
    """The entity bytes of a stored HTTP body, at most ``max_out`` of them.

    Raises :class:`DecodedTooLarge` when the decoded body is longer than ``max_out`` (nothing
    past the cap is ever produced) and :class:`BadContentEncoding` when a compressed body is
    corrupt. A body that claims ``gzip``/``deflate`` but does not start like one is returned
    as is: servers and crawlers that store decoded bodies under the original header are
    common, and warcio reads them the same way."""
    if "chunked" in (transfer_encoding or "").lower():
        body = dechunk(body)
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):  # applied in order, undone in reverse
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip"):
            if body[:2] != b"\x1f\x8b":
                continue
            body = _guard(lambda: _inflate(body, 16 + zlib.MAX_WBITS, max_out, True))
        elif coding == "deflate":
            if body[:1] and (body[0] & 0x0F) == 8 and ((body[0] << 8) | (body[1:2] or b"\0")[0]) % 31 == 0:
                body = _guard(lambda: _inflate(body, zlib.MAX_WBITS, max_out, True))
            else:  # raw deflate, as some servers send
                try:
                    body = _inflate(body, -zlib.MAX_WBITS, max_out, True)
                except zlib.error:
                    continue  # not deflate at all: plain bytes under a wrong header
        elif coding == "br":
            body = _brotli(body, max_out)
        else:
            raise BadContentEncoding(f"unsupported content coding {coding!r}")
    return body


def _guard(fn):
    try:
        return fn()
    except zlib.error as exc:
        raise BadContentEncoding(str(exc)) from exc
