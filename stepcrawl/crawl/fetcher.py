"""One HTTP fetch with aiohttp, and the helpers to read what came back.

- Redirects are *not* followed here: the crawler records each hop in the frontier and
  re-checks scope and robots.txt for the target (aiohttp would follow them blindly).
- ``auto_decompress=False``: the WARC must hold the bytes the server sent, matching its
  ``Content-Encoding`` header; ``decoded_body`` inflates them (with a size cap against
  compression bombs) for link extraction and scoring. A body that inflates past
  ``max_decoded`` (default 4 × ``max_bytes``, the crawler's parse cap) is a compression bomb:
  the fetch fails with ``decompressed_too_large`` and nothing is stored (checked by
  inflating incrementally, never past the cap).
- The content type is checked from the headers *before* the body is read: a video is
  recorded as skipped without downloading it.
- ``GuardedResolver`` refuses private/loopback/link-local addresses at connect time, so a
  public name resolving to 127.0.0.1 (or a redirect to one) cannot reach internal services.
"""

from __future__ import annotations

import asyncio
import socket
import time
import zlib
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from stepcrawl.crawl.urls import is_private_ip

KEPT_TYPES = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/epub+zip": "epub",
}


def kept_types_from(mimes) -> dict[str, str]:
    """The allow list for ``--content-types``: MIME type → kind. Known types keep their kind
    (``html`` pages are parsed for links and scored); any other listed type is stored as
    kind ``other`` (archived, not parsed)."""
    out = {}
    for m in mimes:
        m = m.strip().lower()
        if not m:
            continue
        if "/" not in m or " " in m:
            raise ValueError(f"not a MIME type: {m!r} (expected e.g. text/html)")
        out[m] = KEPT_TYPES.get(m, "other")
    if not out:
        raise ValueError("the content-type allow list is empty")
    return out


class PrivateAddressError(OSError):
    pass


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops private addresses unless ``allow_private``."""

    def __init__(self, allow_private: bool = False):
        self._inner = ThreadedResolver()
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        if self.allow_private:
            return infos
        kept = [i for i in infos if not is_private_ip(i["host"])]
        if not kept:
            raise PrivateAddressError(f"private_address: {host} resolves only to private "
                                      f"addresses ({', '.join(i['host'] for i in infos)})")
        return kept

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class FetchResult:
    url: str
    status: int | None = None
    reason_phrase: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    mime: str = ""
    kind: str | None = None        # html | pdf | epub | other | None (not kept)
    truncated: bool = False
    error: str | None = None       # timeout | connect_error:… | payload_error | …
    location: str | None = None
    ip: str | None = None
    elapsed: float = 0.0

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def make_session(concurrency: int, per_host: int, allow_private: bool,
                 user_agent: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=per_host,
        resolver=GuardedResolver(allow_private),
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        headers={"User-Agent": user_agent},
        cookie_jar=aiohttp.DummyCookieJar(),  # a crawler carries no cookies between pages
    )


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    cause = exc
    while cause is not None:
        if isinstance(cause, PrivateAddressError) or "private_address" in str(cause):
            return "private_address"
        cause = cause.__cause__ or getattr(cause, "os_error", None)
        if cause is exc:
            break
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect_error:{type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "payload_error"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server_disconnected"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"bad_response:{exc.status}"
    if isinstance(exc, (aiohttp.ClientError, OSError, ValueError)):
        return f"client_error:{type(exc).__name__}"
    raise exc


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    kept_types: dict[str, str] = KEPT_TYPES,
    read_all: bool = False,
    max_decoded: int | None = None,
) -> FetchResult:
    """GET ``url`` once. Never raises for network/HTTP trouble: ``result.error`` says what.
    ``read_all`` reads the body whatever its type (robots.txt)."""
    max_decoded = 4 * max_bytes if max_decoded is None else max_decoded
    result = FetchResult(url)
    start = time.monotonic()
    try:
        async with session.get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=timeout),
            headers={"Accept": "text/html,application/xhtml+xml,application/pdf,"
                               "application/epub+zip;q=0.9,*/*;q=0.5",
                     "Accept-Encoding": "gzip, deflate"},
        ) as resp:
            result.status = resp.status
            result.reason_phrase = resp.reason or ""
            result.headers = [(k.decode("latin-1"), v.decode("latin-1"))
                              for k, v in resp.raw_headers]
            result.request_headers = list(resp.request_info.headers.items())
            peer = resp.connection.transport.get_extra_info("peername") if resp.connection \
                else None
            result.ip = peer[0] if peer else None
            result.mime = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            result.kind = kept_types.get(result.mime)
            if 300 <= resp.status < 400:
                result.location = resp.headers.get("Location")
            want_body = read_all or (200 <= resp.status < 400 and
                                     (result.kind is not None or 300 <= resp.status < 400))
            if want_body:
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    buf += chunk
                    if len(buf) > max_bytes:
                        del buf[max_bytes:]
                        result.truncated = True
                        break
                result.body = bytes(buf)
                if _inflates_past(result, max_decoded):
                    result.body, result.error = b"", "decompressed_too_large"
    except Exception as exc:  # noqa: BLE001 — _error_name re-raises anything unexpected
        result.error = _error_name(exc)
    result.elapsed = time.monotonic() - start
    return result


def decoded_body(result: FetchResult, max_out: int) -> bytes:
    """The body with ``Content-Encoding`` undone (gzip/deflate), at most ``max_out`` bytes."""
    enc = (result.header("Content-Encoding") or "").lower().strip()
    if enc in ("", "identity"):
        return result.body
    if enc in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if "gzip" in enc else zlib.MAX_WBITS
        try:
            d = zlib.decompressobj(wbits)
            return d.decompress(result.body, max_out)
        except zlib.error:
            try:  # raw deflate, as some servers send
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(result.body, max_out)
            except zlib.error:
                return b""
    return b""  # unknown coding (br, zstd): stored as is, not parsed


def _inflates_past(result: FetchResult, max_out: int) -> bool:
    """Whether the body's Content-Encoding inflates it past ``max_out`` bytes (a bomb)."""
    from stepcrawl.readers.content import BadContentEncoding, DecodedTooLarge, decode_body

    enc = result.header("Content-Encoding") or ""
    if not result.body or enc.strip().lower() in ("", "identity"):
        return False
    try:
        decode_body(result.body, enc, "", max_out)
    except DecodedTooLarge:
        return True
    except BadContentEncoding:
        return False  # stored as sent; curation counts it (extract:bad-content-encoding)
    return False
