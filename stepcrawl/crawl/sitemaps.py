"""Sitemaps (sitemaps.org protocol 0.9): the ``<loc>`` entries of a sitemap or sitemap index.

robots.txt ``Sitemap:`` lines name them; the crawler fetches each one like a URL (politeness,
robots rules, retries) and enqueues what it lists, so pages that no link reaches are found.
Sitemaps are crawl control, not content: they are recorded in the frontier (state
``sitemap``, reason ``sitemap:urls=N`` / ``sitemap:index=N``), not stored in the WARC files.

Parsing is defensive: lxml with entity resolution and network access off (an XML bomb or
XXE in a hostile sitemap does nothing), ``recover`` for sloppy files, gzip (``.xml.gz``)
inflated with a size cap, and at most ``MAX_ENTRIES`` entries read (the protocol's limit).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from lxml import etree

MAX_ENTRIES = 50_000  # sitemaps.org: at most 50,000 URLs per sitemap


class SitemapError(ValueError):
    """Not a readable sitemap; ``str(exc)`` is the recorded reason."""


@dataclass
class Sitemap:
    is_index: bool
    locs: list[str] = field(default_factory=list)
    truncated: bool = False


def _inflate(body: bytes, max_bytes: int) -> bytes:
    if body[:2] != b"\x1f\x8b":
        return body
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, max_bytes)
    except zlib.error:
        raise SitemapError("sitemap_bad_gzip") from None


def parse_sitemap(body: bytes, max_bytes: int = 50 * 1024 * 1024) -> Sitemap:
    """The entries of a ``<urlset>`` or ``<sitemapindex>`` (gzip accepted); raises
    ``SitemapError`` for anything else."""
    body = _inflate(body, max_bytes)
    if not body.strip():
        raise SitemapError("sitemap_empty")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True,
                             huge_tree=False, remove_comments=True)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        root = None
    if root is None or not isinstance(root.tag, str):
        raise SitemapError("sitemap_parse_error")
    kind = etree.QName(root).localname
    if kind not in ("urlset", "sitemapindex"):
        raise SitemapError(f"sitemap_not_a_sitemap:{kind[:30]}")
    out = Sitemap(is_index=kind == "sitemapindex")
    for el in root.iter("{*}loc", "loc"):
        text = (el.text or "").strip()
        if not text:
            continue
        if len(out.locs) >= MAX_ENTRIES:
            out.truncated = True
            break
        out.locs.append(text)
    return out
