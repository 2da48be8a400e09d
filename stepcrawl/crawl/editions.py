"""Language edition and section of a URL: the keys the frontier spreads a crawl over.

A documentation site is a tree of *language editions* (``/de/``, ``/pt-br/``, ``de.example.org``,
``?lang=de``, ``page.de.html``) and, inside each, *sections* (``/tutorial/``, ``/library/``…).
A pure priority queue follows the best-scoring links, and on such a site that means one
section of one language (the issue that motivated this module: a 600-page crawl of a site
with 30+ editions fetched 452 pages of one section and reached 2 languages). The scheduler
(``frontier.HostScheduler`` with a ``Spread``) instead keeps one queue per
``(host, language, section)``, visits each once before any twice, then shares the budget
between them in proportion to their value, the way Heritrix assigns URLs to queues by a configurable key and rotates them, and
BUbiNG/StormCrawler spread fetches over per-key queues.

Everything here is a pure function of the URL (no page content), so the key of a frontier
row can be recomputed at any time: on ``--resume`` (the per-queue counts are rebuilt from the
database) and by ``stepcrawl stats`` (pages per language and section), for any crawl.

Why hand-written: no library maps a URL to its language edition (courlan's ``lang_filter``
only answers "is this URL plausibly in language X"); the language codes themselves come from
CLDR via babel, so ``/it/`` counts as Italian but ``/js/`` or ``/api/`` never as a language.
Known limit: a section whose name is a language code (``/id/``, ``/my/``) reads as a language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

DEFAULT_LANGUAGE = "-"  # no language marker in the URL: the site's default edition
ROOT_SECTION = ""       # pages directly under the host (or the language root)
LANG_PARAMS = ("lang", "language", "hl", "locale", "lng")
_TAG = re.compile(r"^([a-z]{2})(?:[-_]([a-z]{4}|[a-z]{2}))?(?:[-_]([a-z]{2}))?$", re.I)
# file name carrying the language, Apache content-negotiation style: ch04.de.html, a.html.fr
_SUFFIX_TAG = re.compile(r"\.([a-z]{2}(?:[-_][a-z]{2,4}){0,2})\.(?:html?|xhtml|php|aspx?)$"
                         r"|\.(?:html?|xhtml)\.([a-z]{2}(?:[-_][a-z]{2,4}){0,2})$", re.I)
# version segments are not sections: /3/library/ is the "library" section, /en/latest/api/ "api"
_VERSION = re.compile(r"^(v?\d+(\.\d+)*[a-z]?\d*|latest|stable|current|nightly)$", re.I)


@lru_cache(maxsize=1)
def _cldr() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Two-letter CLDR languages, territories and scripts (lower-case), loaded once."""
    from babel import Locale
    from babel.localedata import locale_identifiers

    langs = frozenset(i.split("_")[0].lower() for i in locale_identifiers()
                      if len(i.split("_")[0]) == 2)
    en = Locale("en")
    return (langs, frozenset(t.lower() for t in en.territories if len(t) == 2),
            frozenset(s.lower() for s in en.scripts))


@lru_cache(maxsize=4096)
def language_tag(text: str) -> str | None:
    """``text`` as a normalised language tag (``pt_BR`` → ``pt-br``), or ``None`` when it is
    not one: a CLDR language, optionally with a CLDR script and/or territory."""
    m = _TAG.match(text)
    if m is None:
        return None
    langs, territories, scripts = _cldr()
    lang, mid, region = (g.lower() if g else None for g in m.groups())
    if lang not in langs:
        return None
    if mid is not None and mid not in (scripts if len(mid) == 4 else territories):
        return None
    if region is not None and (mid is None or len(mid) != 4 or region not in territories):
        return None  # only script-then-region (zh-hans-cn) takes a third part
    return "-".join(p for p in (lang, mid, region) if p)


@dataclass(frozen=True)
class Edition:
    """Where a URL sits on its site: ``language`` (``-`` = default edition) and ``section``
    (the first ``depth`` directory segments after the language and version parts; ``""`` is
    the root)."""

    host: str
    language: str
    section: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.host, self.language, self.section)


def _query_language(query: str) -> str | None:
    for name, value in parse_qsl(query, keep_blank_values=False):
        if name.lower() in LANG_PARAMS:
            tag = language_tag(value)
            if tag is not None:
                return tag
    return None


def _host_language(hostname: str) -> str | None:
    labels = hostname.split(".")
    if len(labels) < 3 or labels[-1].isdigit():  # de.example.org, not example.org / an IP
        return None
    return language_tag(labels[0])


def edition_of(url: str, depth: int = 1) -> Edition:
    """The language edition and section of ``url`` (normalised or not; never raises).

    Language, first match wins: a ``?lang=``/``hl=``/``locale=`` parameter; one of the first
    two path segments (``/de/``, ``/docs/pt-br/``); the first host label (``de.example.org``);
    a language suffix on the file name (``ch04.de.html``)."""
    try:
        parts = urlsplit(url)
        hostname = (parts.hostname or "").lower()
    except ValueError:
        return Edition("", DEFAULT_LANGUAGE, ROOT_SECTION)
    host = parts.netloc.lower()
    segments = [s for s in parts.path.split("/")]
    segments = segments[1:] if segments and segments[0] == "" else segments
    dirs, leaf = segments[:-1], (segments[-1] if segments else "")
    language = _query_language(parts.query) if parts.query else None
    lang_at = None
    if language is None:
        # a bare last segment counts too: /de is the German home page
        candidates = dirs[:2] + ([leaf] if len(dirs) < 2 and leaf and "." not in leaf else [])
        for i, seg in enumerate(candidates):
            tag = language_tag(seg)
            if tag is not None:
                language, lang_at = tag, i
                break
    if language is None:
        language = _host_language(hostname)
    if language is None and leaf:
        m = _SUFFIX_TAG.search(leaf)
        if m is not None:
            language = language_tag(m.group(1) or m.group(2))
    section_parts = []
    for i, seg in enumerate(dirs):
        if i == lang_at or not seg or _VERSION.match(seg):
            continue
        section_parts.append(seg)
        if len(section_parts) >= depth:
            break
    return Edition(host, language or DEFAULT_LANGUAGE, "/".join(section_parts))


def section_label(section: str) -> str:
    """How a section is shown: ``/tutorial/``, ``/`` for the root."""
    return f"/{section}/" if section else "/"


@dataclass(frozen=True)
class Spread:
    """How the scheduler spreads a crawl (see ``frontier`` module doc): one queue per
    ``(host, language, section)``; every queue's first page comes before any queue's second,
    then a queue that has given ``k`` pages ranks at ``value / (1 + k) ** strength``.
    ``strength=1``: queues get pages in proportion to their value; ``0``: by value alone
    (the best queue takes the rest of the budget); larger: closer to round-robin.
    ``depth``: how many path segments name a section."""

    strength: float = 1.0
    depth: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 16.0:
            raise ValueError(f"spread strength must be in [0, 16], got {self.strength}")
        if self.depth < 1:
            raise ValueError(f"spread depth must be ≥ 1, got {self.depth}")

    def key(self, url: str) -> tuple[str, str]:
        """``(language, section)``; the scheduler prefixes the host."""
        return _spread_key(url, self.depth)


@lru_cache(maxsize=1 << 16)  # a URL's key is asked for when queued and again when scored
def _spread_key(url: str, depth: int) -> tuple[str, str]:
    e = edition_of(url, depth)
    return (e.language, e.section)
