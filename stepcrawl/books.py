"""Books: PDF and ePub extraction, page-complete, plus the book-appropriate quality rules.

Extraction (pypdf for PDF, EbookLib + lxml for ePub) yields one text per page / spine item;
:func:`clean_pages` then makes the document *page-complete*:

* running headers and footers — a line near the top or bottom of a page whose shape (digits
  folded to ``#``) repeats on many pages — are removed, and so are bare page numbers
  (``12``, ``- 12 -``, ``xiv``, ``Page 3 of 40``);
* a word hyphenated across a line end (or a page end) is joined (``infor-\\nmation`` →
  ``information``), only when both halves are lower-case letters, so ``x-\\nray`` style
  compounds with capitals and list dashes stay;
* a paragraph that runs across a page break is joined into one paragraph.

Reading order is the PDF text layer's (pypdf's ``extract_text``, which follows the content
stream with layout-free ordering); formulas survive exactly as far as the PDF's text layer
carries them (symbol glyphs mapped to Unicode).

Written by hand: no maintained library we can install does header/footer removal on a plain
per-page text list (pdfminer/pymupdf layout analysis would need a second PDF parser and still
leave running heads; Nougat/Marker need model weights).

:class:`BookTierStep` judges ``kind="book"`` documents by book rules (length, letter share,
line duplication after cleaning, pages) instead of the web heuristics (Gopher/C4/FineWeb drop
9 of 12 real PDF manuals: short lines, code, "lorem"-like tables of contents).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from stepcrawl.document import TIERS, Document, tier_rank
from stepcrawl.steps import Drop, DocumentStep

# how many lines at each end of a page may be a running header/footer
EDGE_LINES = 3
_ROMAN = re.compile(r"^[ivxlcdm]{1,7}$", re.I)
_PAGE_NO = re.compile(r"^(?:page\s*)?[-–—\s]*\d{1,5}[-–—\s]*(?:(?:of|/)\s*\d{1,5})?$", re.I)
_HYPHEN_EOL = re.compile(r"([a-zà-ÿ]{2,})-\n[ \t]*([a-zà-ÿ]{2,})")


def _shape(line: str) -> str:
    """A line's repeat key: digits folded (page numbers differ), spaces collapsed, lower case."""
    return re.sub(r"\d+", "#", " ".join(line.split())).lower()


def is_page_number(line: str) -> bool:
    s = line.strip()
    return bool(s) and (bool(_PAGE_NO.match(s)) or bool(_ROMAN.match(s)))


def _edge_indices(lines: list[str]) -> list[int]:
    """Indices of the first and last EDGE_LINES non-empty lines of a page."""
    nonempty = [i for i, l in enumerate(lines) if l.strip()]
    return sorted(set(nonempty[:EDGE_LINES] + nonempty[-EDGE_LINES:]))


def running_lines(pages: list[str], min_share: float = 0.3, min_pages: int = 3) -> set[str]:
    """Shapes of lines that repeat at page edges on ≥ ``min_share`` of the pages (and at least
    ``min_pages`` pages): running headers and footers."""
    counts: Counter[str] = Counter()
    for page in pages:
        lines = page.splitlines()
        counts.update({_shape(lines[i]) for i in _edge_indices(lines)})
    need = max(min_pages, int(min_share * len(pages) + 0.999))
    return {s for s, n in counts.items() if n >= need and s.strip()}


_LEAD_NO = re.compile(r"^\s*(\d{1,5})\b")
_TRAIL_NO = re.compile(r"\b(\d{1,5})\s*$")


def _edge_numbers(line: str) -> list[int]:
    return [int(m.group(1)) for m in (_LEAD_NO.search(line), _TRAIL_NO.search(line)) if m]


def page_number_offset(pages: list[str], min_share: float = 0.25, min_pages: int = 2) -> int | None:
    """The offset ``printed page number − page index`` that edge lines agree on, if any: a
    running head such as "4 Chapter 1. Groups" or "Section 4. Downloads 5" carries the page
    number, and its text changes with the chapter, so shape repetition alone misses it."""
    votes: Counter[int] = Counter()
    for i, page in enumerate(pages):
        lines = page.splitlines()
        # bare numbers are handled by is_page_number (and a chapter-opening "1" would mislead)
        votes.update({n - i for j in _edge_indices(lines) if not is_page_number(lines[j]) for n in _edge_numbers(lines[j])})
    if not votes:
        return None
    offset, n = votes.most_common(1)[0]
    return offset if n >= max(min_pages, int(min_share * len(pages) + 0.999)) else None


def join_hyphenation(text: str) -> str:
    return _HYPHEN_EOL.sub(r"\1\2", text)


def clean_pages(pages: list[str]) -> tuple[str, dict[str, int]]:
    """Per-page texts → one page-complete text and counts of what was removed/joined."""
    running = running_lines(pages) if len(pages) >= 3 else set()
    offset = page_number_offset(pages) if len(pages) >= 3 else None
    stats = {"header_footer_lines": 0, "page_numbers": 0, "hyphens_joined": 0}
    cleaned: list[str] = []
    for pages_index, page in enumerate(pages):
        lines = page.splitlines()
        drop: set[int] = set()
        for i in _edge_indices(lines):
            numbered = offset is not None and (pages_index + offset) in _edge_numbers(lines[i]) and len(lines[i]) < 120
            if _shape(lines[i]) in running or numbered:
                drop.add(i)
                stats["header_footer_lines"] += 1
            elif is_page_number(lines[i]):
                drop.add(i)
                stats["page_numbers"] += 1
        body = "\n".join(l.rstrip() for i, l in enumerate(lines) if i not in drop).strip()
        if body:
            cleaned.append(body)
    # join pages: a page ending mid-sentence continues the paragraph on the next page (the
    # test looks at the previous page's last characters only: linear in the book's length)
    parts: list[str] = []
    for k, body in enumerate(cleaned):
        if k:
            tail = cleaned[k - 1][-2:]
            continues = bool(re.search(r"[a-zà-ÿ]-$", tail)) or not re.search(r"[.!?:;\"'”)\]]$", tail)
            parts.append("\n" if continues else "\n\n")
        parts.append(body)
    text = "".join(parts)
    text, stats["hyphens_joined"] = _HYPHEN_EOL.subn(r"\1\2", text)
    return text, stats


def extract_pdf(payload: bytes) -> tuple[str, dict]:
    """PDF text with pypdf (maintained, pure Python), page by page, then :func:`clean_pages`."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(payload))
    pages = [(p.extract_text() or "") for p in reader.pages]
    text, stats = clean_pages(pages)
    meta: dict = {"pages": len(pages), **stats}
    info = reader.metadata
    if info is not None and info.title:
        meta["title"] = str(info.title)
    return text, meta


def _UTF8_HTML():
    import lxml.html

    return lxml.html.HTMLParser(encoding="utf-8")


def extract_epub(payload: bytes) -> tuple[str, dict]:
    """ePub text with EbookLib: the spine's XHTML documents in reading order, each through lxml
    (block elements become line breaks so paragraphs stay paragraphs)."""
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
        # bytes: lxml's HTML parser would guess latin-1 ("…" → "â\x80¦"); ePub XHTML is UTF-8
        tree = lxml.html.fromstring(body, parser=_UTF8_HTML()) if isinstance(body, bytes) else lxml.html.fromstring(body)
        for bad in tree.xpath("//script|//style"):
            bad.drop_tree()
        for block in tree.iter("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "blockquote", "tr", "br"):
            block.tail = "\n\n" + (block.tail or "") if block.tag != "br" else "\n" + (block.tail or "")
        # markup indentation is not text: strip it (lines inside <pre> lose their indent too)
        text = "\n".join(l.strip() for l in tree.text_content().splitlines())
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if text:
            parts.append(text)
    text, stats = clean_pages(parts) if parts else ("", {})
    meta: dict = {"pages": len(parts), **stats}
    titles = book.get_metadata("DC", "title")
    if titles:
        meta["title"] = titles[0][0]
    return text, meta


# ---------------------------------------------------------------------------------- book quality


@dataclass(frozen=True)
class BookQualityConfig:
    """Book rules: a book is long, mostly letters, not a scan without text layer, not the same
    lines over and over. Scores in [0, 1] map to tiers with the web thresholds."""

    min_words: int = 300  # below this a "book" is a flyer / a cover page
    min_alpha_ratio: float = 0.5  # letters among non-space characters (scans give garbage)
    max_dup_line_frac: float = 0.3  # share of non-empty lines that repeat (after clean_pages)
    min_words_per_page: float = 20.0  # a text layer that is mostly empty = a scanned book
    thresholds: tuple[float, float, float, float] = (0.85, 0.7, 0.5, 0.3)


def book_signals(doc: Document) -> dict[str, float]:
    text = doc.text
    words = text.split()
    chars = [c for c in text if not c.isspace()]
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    counts = Counter(lines)
    dup = sum(n for l, n in counts.items() if n > 1 and len(l) > 3) / max(1, len(lines))
    pages = int(doc.meta.get("pages") or 1)
    return {
        "book_words": float(len(words)),
        "book_alpha_ratio": sum(c.isalpha() for c in chars) / max(1, len(chars)),
        "book_dup_line_frac": dup,
        "book_words_per_page": len(words) / max(1, pages),
    }


def book_score(sig: dict[str, float], cfg: BookQualityConfig = BookQualityConfig()) -> float:
    """Each rule passed adds a quarter; soft margins so a borderline book lands in Medium."""
    rules = [
        min(1.0, sig["book_words"] / cfg.min_words),
        min(1.0, sig["book_alpha_ratio"] / cfg.min_alpha_ratio),
        1.0 if sig["book_dup_line_frac"] <= cfg.max_dup_line_frac else max(0.0, 1 - (sig["book_dup_line_frac"] - cfg.max_dup_line_frac) * 3),
        min(1.0, sig["book_words_per_page"] / cfg.min_words_per_page),
    ]
    score = sum(rules) / len(rules)
    # a text layer that is nearly empty (a scan), or mostly not letters (OCR noise, a table
    # dump), is not a book we can train on however long it is: halve the score
    # … and a leaflet of a few dozen words is not a book
    if (sig["book_words_per_page"] < cfg.min_words_per_page / 4 or sig["book_alpha_ratio"] < cfg.min_alpha_ratio * 0.6
            or sig["book_words"] < cfg.min_words / 3):
        score *= 0.5
    return score


def book_tier(score: float, cfg: BookQualityConfig = BookQualityConfig()) -> str:
    for tier, t in zip(TIERS, cfg.thresholds):
        if score >= t:
            return tier
    return TIERS[-1]


class BookTierStep(DocumentStep):
    """Tier ``kind="book"`` documents by :func:`book_score` (others pass unchanged); drop below
    ``min_tier`` as ``book:tier-<tier>``."""

    name = "book_tier"

    def __init__(self, cfg: BookQualityConfig | None = None, min_tier: str = "Medium"):
        cfg = cfg or BookQualityConfig()
        super().__init__(book=asdict(cfg), min_tier=min_tier)
        self._cfg = cfg

    def _picklable_state(self) -> dict[str, Any]:
        return {"_cfg": self._cfg}

    def process(self, doc: Document) -> Document | Drop:
        if doc.kind != "book":
            return doc
        sig = book_signals(doc)
        score = book_score(sig, self._cfg)
        tier = book_tier(score, self._cfg)
        doc = doc.replace(tier=tier, quality={**doc.quality, **{k: round(v, 5) for k, v in sig.items()}, "book_score": round(score, 5)})
        if tier_rank(tier) > tier_rank(self.config["min_tier"]):
            return Drop("book:tier-" + tier.lower(), doc)
        return doc


class SkipBooks(DocumentStep):
    """Run ``inner`` on every document except books (``kind="book"``): the web heuristics'
    signals (spaCy over every word of a 1,000-page book) are not what books are judged by
    (:class:`BookTierStep` is), so they are not computed for them."""

    def __init__(self, inner: DocumentStep):
        super().__init__(**inner.config)
        self.name = inner.name
        self.inner = inner

    def _picklable_state(self) -> dict[str, Any]:
        return {"inner": self.inner, "name": self.name}

    def setup(self) -> None:
        self.inner.ensure_setup()

    def process(self, doc: Document) -> Document | Drop:
        return doc if doc.kind == "book" else self.inner.process(doc)
