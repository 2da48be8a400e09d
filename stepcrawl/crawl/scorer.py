"""Page scorers: how StepCrawl decides which pages are worth expanding.

PAPER §4.2.1: a classifier scores every fetched page to (1) stop expanding SEO/low-utility
pages and (2) spread crawl budget across site categories. The crawler only needs

    PageScorer.score(url, html_text) -> (score in [0, 1], category)

Outlinks of a page inherit its score as their priority; pages under ``--min-expand-score``
are stored but not expanded; ``--category-budget shop=100`` caps fetched pages per category.

- ``HeuristicScorer`` (default): a transparent URL/markup heuristic — text length, link
  density, keyword stuffing, shop/SEO vocabulary. Good enough to demote link farms.
- ``FastTextScorer(model_path)``: a fastText supervised model with labels ``__label__hq`` /
  ``__label__lq`` (e.g. the one ``stepcrawl train-quality`` produces); score = P(hq).
  Categories still come from the heuristic's category rules (the model scores quality only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import lxml.html
from lxml import etree

from stepcrawl.langid import load_fasttext  # fastText itself is imported on first load

_WORD = re.compile(r"\w+", re.UNICODE)
_SHOP_URL = re.compile(r"(shop|store|cart|checkout|product|buy|deal|discount|cheap|sale|price)",
                       re.I)
_DOCS_URL = re.compile(r"(/docs?/|/library/|/reference/|/tutorial|/howto/|/manual|/faq/|"
                       r"/debian-reference/|/python/|/api/|/guide)", re.I)
# matched against lower-cased text (no re.I: it makes these scans several times slower)
_SHOP_TEXT = re.compile(r"add to cart|buy now|free shipping|in stock|best price|"
                        r"\$ ?\d+[.,]\d\d|€ ?\d|\d[.,]\d\d ?€|order now|discount")
_SPAM_TEXT = re.compile(r"casino|viagra|cheap|best price|click here|top \d|"
                        r"100% free|guaranteed|seo")


class PageScorer(Protocol):
    """What the crawler needs. A scorer may also define ``score_document(url, doc)`` taking
    the lxml tree the crawler already built for link extraction (``None`` for an empty or
    unparseable page; the scorer may modify it); the crawler prefers it, so a page is parsed
    once. ``score(url, html_text)`` stays the whole contract for third-party scorers."""

    def score(self, url: str, html_text: str) -> tuple[float, str]: ...


@dataclass(frozen=True)
class PageFeatures:
    n_words: int
    link_char_ratio: float   # characters inside <a> / all visible characters
    spam_anchor_ratio: float  # anchors whose text reads like spam/shop bait
    ttr: float               # type/token ratio of the first 300 words: low = stuffing
    n_links: int
    shop_hits: int
    spam_hits: int
    has_code: bool


def visible_text(doc) -> str:
    for bad in doc.xpath("//script|//style|//noscript|//template"):
        bad.drop_tree()
    return " ".join(doc.text_content().split())


def parse_document(html_text: str):
    """lxml tree of ``html_text``, or ``None`` for empty or unparseable markup."""
    try:
        return lxml.html.document_fromstring(html_text) if html_text.strip() else None
    except (etree.ParserError, ValueError):
        return None


def page_features(html_text: str) -> tuple[PageFeatures, str]:
    """Features and visible text of a page (robust to malformed or empty markup)."""
    return document_features(parse_document(html_text))


def document_features(doc) -> tuple[PageFeatures, str]:
    """Features and visible text of an already parsed page (``None``: empty page).
    Modifies ``doc`` (scripts and anchors are dropped while measuring)."""
    if doc is None:
        return PageFeatures(0, 0.0, 0.0, 1.0, 0, 0, 0, False), ""
    anchors = [" ".join(a.text_content().split()) for a in doc.xpath("//a")]
    link_chars = sum(map(len, anchors))
    bait = sum(1 for a in map(str.lower, anchors) if _SPAM_TEXT.search(a) or _SHOP_TEXT.search(a))
    has_code = bool(doc.xpath("//pre|//code"))
    text = visible_text(doc)
    # stuffing and bait vocabulary are judged on the prose, not on link lists (a hub page
    # listing "shop/product-1.html" … is not itself stuffed; its anchors are judged above)
    for a in doc.xpath("//a"):
        a.drop_tree()
    prose = " ".join(doc.text_content().split())
    # bounded prefixes keep the per-page cost flat (regex scans dominated the profile)
    head = _WORD.findall(prose[:6000].lower())[:300]
    sample = prose[:20000].lower()
    feats = PageFeatures(
        n_words=len(text.split()),
        link_char_ratio=min(1.0, link_chars / max(1, len(text))),
        spam_anchor_ratio=bait / len(anchors) if anchors else 0.0,
        ttr=len(set(head)) / len(head) if len(head) >= 100 else 1.0,
        n_links=len(anchors),
        shop_hits=len(_SHOP_TEXT.findall(sample)),
        spam_hits=len(_SPAM_TEXT.findall(sample)),
        has_code=has_code,
    )
    return feats, text


def _stuffed(f: PageFeatures) -> bool:
    return f.ttr < 0.2


def url_category(url: str) -> str:
    """A category guessed from the URL alone (used for queued URLs before they are fetched)."""
    if _SHOP_URL.search(url):
        return "shop"
    if _DOCS_URL.search(url):
        return "docs"
    return "unknown"


def categorize(url: str, f: PageFeatures) -> str:
    if _stuffed(f) or (f.spam_hits >= 5 and f.spam_hits > 0.02 * f.n_words) or (
        f.link_char_ratio > 0.7 and f.spam_anchor_ratio > 0.5  # link farm
    ):
        return "spam"
    if f.shop_hits >= 3 or (_SHOP_URL.search(url) and f.shop_hits >= 1):
        return "shop"
    if _DOCS_URL.search(url) or f.has_code:
        return "docs"
    return "other"


class HeuristicScorer:
    """Transparent default scorer; weights are round numbers chosen by eye on the sample
    site, not fitted — swap in ``FastTextScorer`` for a learned one. Link-heavy pages are
    only penalised when their anchors read like bait (a hub of real links stays a hub)."""

    def score(self, url: str, html_text: str) -> tuple[float, str]:
        return self.score_document(url, parse_document(html_text))

    def score_document(self, url: str, doc) -> tuple[float, str]:
        f, _ = document_features(doc)
        return self.score_features(url, f), categorize(url, f)

    @staticmethod
    def score_features(url: str, f: PageFeatures) -> float:
        s = 0.3 + 0.4 * min(f.n_words, 800) / 800
        if _stuffed(f):
            s -= 0.5
        s -= 0.6 * f.link_char_ratio * f.spam_anchor_ratio
        s -= 0.05 * min(f.spam_hits, 6)
        s -= 0.04 * min(f.shop_hits, 5)
        if f.has_code:
            s += 0.1
        if "?" in url:
            s -= 0.05
        if _DOCS_URL.search(url):
            s += 0.1
        return round(min(1.0, max(0.0, s)), 4)


class FastTextScorer:
    """Quality score = P(``__label__hq``) from a fastText model (``--scorer-model``)."""

    def __init__(self, model_path: str, max_chars: int = 20_000):
        self.model = load_fasttext(str(model_path))
        labels = set(self.model.get_labels())
        if not labels & {"__label__hq", "__label__lq"}:
            raise ValueError(f"{model_path}: expected labels __label__hq/__label__lq, got "
                             f"{sorted(labels)[:5]}")
        self.max_chars = max_chars

    def score(self, url: str, html_text: str) -> tuple[float, str]:
        return self.score_document(url, parse_document(html_text))

    def score_document(self, url: str, doc) -> tuple[float, str]:
        from stepcrawl.quality.classifier import hq_probability

        f, text = document_features(doc)  # whitespace-normalised visible text
        # hq_probability normalises the text exactly as `train-quality` did for training
        # (lower-cased, punctuation split off): raw text would be off the model's distribution.
        return round(hq_probability(self.model, text, self.max_chars), 4), categorize(url, f)


def load_scorer(model_path: str | None) -> PageScorer:
    return FastTextScorer(model_path) if model_path else HeuristicScorer()
