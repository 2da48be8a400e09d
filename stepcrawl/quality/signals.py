"""Heuristic quality signals: datatrove's Gopher quality/repetition, C4 and FineWeb filters.

We do not re-implement these filters: :class:`QualitySignalsStep` builds datatrove's own filter
objects and calls their ``filter()`` on each document. Every verdict is stored in
``doc.quality`` as 1.0 (pass) / 0.0 (fail), and the failing rule's name in
``doc.meta["quality_fail"]`` (e.g. ``{"gopher_quality": "gopher_short_doc"}``).

Verdicts alone cannot be re-thresholded later, so we also store the *values* those rules
compare (word count, mean word length, duplicate-line fraction, …). They are computed here with
datatrove's own helpers (``split_into_words``, ``find_duplicates``, ``find_top_duplicate``,
``find_all_duplicate``) with one word split per document, so a new threshold can be applied to a
stored corpus with a Parquet query instead of a re-run.

Pitfalls (see ENVIRONMENT.md): datatrove's word tokenizers are spaCy *blank* pipelines (no model
download); languages whose tokenizer needs an extra package (zh → jieba, ja → SudachiPy, …) fall
back to the English tokenizer. ``C4QualityFilter.filter`` rewrites ``doc.text`` (drops lines):
we pass it a throw-away datatrove Document and keep our text unchanged (signals, not edits).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from stepcrawl.document import Document
from stepcrawl.steps import DocumentStep

log = logging.getLogger(__name__)

FILTER_NAMES = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's list
TERMINAL = (".", "!", "?", '"', "'", "”", "。", "！", "？", ":")


@functools.lru_cache(maxsize=64)
def datatrove_language(lang: str | None) -> str:
    """The datatrove language key to tokenize ``lang`` with; English when its tokenizer cannot
    load here (missing optional package) or the language is unknown."""
    from datatrove.utils.text import split_into_words
    from datatrove.utils.word_tokenizers import load_tokenizer_assignments

    if lang and lang in load_tokenizer_assignments():
        try:
            split_into_words("probe text.", lang)
            return lang
        except Exception as exc:  # ImportError for jieba/SudachiPy/…, ValueError for others
            log.debug("datatrove tokenizer for %s unavailable (%s); using English", lang, exc)
    return "en"


@dataclass(frozen=True)
class SignalsConfig:
    """Thresholds passed to datatrove's filters (their defaults unless overridden)."""

    gopher_quality: dict[str, Any] = field(default_factory=dict)
    gopher_repetition: dict[str, Any] = field(default_factory=dict)
    c4_quality: dict[str, Any] = field(default_factory=lambda: {"filter_no_terminal_punct": True})
    fineweb_quality: dict[str, Any] = field(default_factory=dict)
    max_chars: int = 200_000  # signals are computed on the first max_chars (cost is linear)


def build_filters(cfg: SignalsConfig, language: str) -> dict[str, Any]:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    # Order matters for speed: datatrove memoises split_into_words in a 5-slot LRU, and C4's
    # per-line sentence splitting evicts it, so the word-based filters run first and C4 last:
    # one spaCy tokenization per document instead of three.
    return {
        "gopher_quality": GopherQualityFilter(language=language, **cfg.gopher_quality),
        "gopher_repetition": GopherRepetitionFilter(language=language, **cfg.gopher_repetition),
        "fineweb_quality": FineWebQualityFilter(language=language, **cfg.fineweb_quality),
        "c4_quality": C4QualityFilter(language=language, **cfg.c4_quality),
    }


def filter_verdicts(text: str, filters: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Run each datatrove filter's ``filter()`` → ({name: 1.0|0.0}, {name: failing rule})."""
    from datatrove.data import Document as DTDocument
    from datatrove.pipeline.filters.base_filter import get_filter_result

    verdicts, reasons = {}, {}
    for name, flt in filters.items():
        dt_doc = DTDocument(text=text, id="x", metadata={})
        try:
            ok, reason = get_filter_result(flt.filter(dt_doc))
        except (ZeroDivisionError, ValueError, IndexError) as exc:
            # e.g. a text of only whitespace/symbols: the rules divide by a word count of 0
            ok, reason = False, f"error:{type(exc).__name__}"
        verdicts[name] = 1.0 if ok else 0.0
        if not ok:
            reasons[name] = reason or "failed"
    return verdicts, reasons


def signal_values(text: str, language: str = "en") -> dict[str, float]:
    """The numbers Gopher/FineWeb rules compare, via datatrove's helpers (one word split)."""
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_duplicates,
        find_top_duplicate,
        get_n_grams,
    )
    from datatrove.utils.text import PUNCTUATION_SET, split_into_words

    n_chars = max(1, len(text))
    words = split_into_words(text, language)
    n_words = max(1, len(words))
    content_words = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    lines = [ln for ln in text.split("\n") if ln.strip()]
    n_lines = max(1, len(lines))
    paragraphs = [p for p in text.strip().split("\n\n") if p.strip()]
    out = {
        "n_words": float(len(content_words)),
        "mean_word_len": (sum(map(len, content_words)) / len(content_words)) if content_words else 0.0,
        "hash_word_ratio": text.count("#") / n_words,
        "ellipsis_word_ratio": (text.count("...") + text.count("…")) / n_words,
        "bullet_lines_ratio": sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / n_lines,
        "ellipsis_lines_ratio": sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / n_lines,
        "alpha_words_ratio": sum(any(c.isalpha() for c in w) for w in words) / n_words,
        "stop_words": float(len(set(STOP_WORDS) & set(w.lower() for w in words))),
        "dup_line_frac": find_duplicates(lines)[0] / n_lines,
        "dup_line_char_frac": find_duplicates(lines)[1] / n_chars,
        "dup_para_frac": (find_duplicates(paragraphs)[0] / len(paragraphs)) if paragraphs else 0.0,
        "line_punct_ratio": sum(ln.rstrip().endswith(TERMINAL) for ln in lines) / n_lines,
        "short_line_ratio": sum(len(ln) <= 30 for ln in lines) / n_lines,
        "list_ratio": text.count("\n") / n_words,
    }
    for n in (2, 3, 4):
        grams = get_n_grams(words, n)
        out[f"top_{n}gram_char_frac"] = (find_top_duplicate(grams) / n_chars) if grams else 0.0
    for n in (5, 10):
        out[f"dup_{n}gram_char_frac"] = find_all_duplicate(words, n) / n_chars
    return {k: round(float(v), 5) for k, v in out.items()}


class QualitySignalsStep(DocumentStep):
    """Annotate ``doc.quality`` with datatrove filter verdicts and signal values. Never drops:
    deciding is the tier step's job, so thresholds can change without recomputing signals."""

    name = "quality_signals"

    def __init__(self, cfg: SignalsConfig | None = None, values: bool = True):
        cfg = cfg or SignalsConfig()
        super().__init__(cfg=cfg.__dict__, values=values)
        self._cfg = cfg
        self._filters: dict[str, dict[str, Any]] = {}

    def _picklable_state(self) -> dict[str, Any]:
        return {"_cfg": self._cfg, "_filters": {}}

    def filters_for(self, language: str) -> dict[str, Any]:
        if language not in self._filters:
            self._filters[language] = build_filters(self._cfg, language)
        return self._filters[language]

    def process(self, doc: Document) -> Document:
        language = datatrove_language(doc.lang)
        text = doc.text[: self._cfg.max_chars]
        # values first: they tokenize the text once, the filters then hit datatrove's cache
        values = signal_values(text, language) if self.config["values"] else {}
        verdicts, reasons = filter_verdicts(text, self.filters_for(language))
        quality = {**doc.quality, **verdicts, **values}
        meta = dict(doc.meta)
        if reasons:
            meta["quality_fail"] = reasons
        else:
            meta.pop("quality_fail", None)
        return doc.replace(quality=quality, meta=meta)
