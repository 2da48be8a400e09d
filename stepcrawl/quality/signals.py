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

SIGNAL_MODES = ("fast", "datatrove")
FILTER_NAMES = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's list
TERMINAL = (".", "!", "?", '"', "'", "”", "。", "！", "？", ":")


@functools.lru_cache(maxsize=64)
def datatrove_language(lang: str | None) -> str:
    """The datatrove language key to tokenize ``lang`` with; English when its tokenizer cannot
    load here (missing optional package) or the language is unknown."""
    from datatrove.utils.text import split_into_words
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_tokenizer_assignments, load_word_tokenizer

    from stepcrawl.quality.fast_signals import default_rules

    if lang and lang in load_tokenizer_assignments():
        try:
            tok = load_word_tokenizer(lang)
            # spaCy's default rule-based tokenizer loads wherever spaCy imports: no need to build
            # datatrove's pipeline (seconds for some languages, per process) just to find out
            if not (type(tok) is SpaCyTokenizer and default_rules(tok) is not None):
                split_into_words("probe text.", lang)
            return lang
        except Exception as exc:  # ImportError for jieba/SudachiPy/…, ValueError for others
            log.debug("datatrove tokenizer for %s unavailable (%s); using English", lang, exc)
    return "en"


# ZonedSpaCyTokenizer: text is tokenized outside any memory zone (its new lexemes stay) until
# the pipeline's string store holds PERMANENT_STRINGS strings; after that, inside a zone that
# is renewed every ZONE_CALLS calls or ZONE_CHARS characters (bounded memory either way).
PERMANENT_STRINGS = 200_000
ZONE_CALLS = 20_000
ZONE_CHARS = 20_000_000


@functools.lru_cache(maxsize=1)
def zoned_tokenizer_class() -> type:
    """The ``ZonedSpaCyTokenizer`` class (built on first use: datatrove is imported lazily so
    that ``stepcrawl --help`` stays fast)."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    return _make_zoned_class(WordTokenizer)


def _make_zoned_class(word_tokenizer_base):
    import threading

    from datatrove.utils.word_tokenizers import strip_strings

    class ZonedSpaCyTokenizer(word_tokenizer_base):
        """datatrove's spaCy word/sentence tokenizer: same output, about half the cost.

        Why not the stock one: datatrove's ``SpaCyTokenizer`` opens a spaCy ``memory_zone`` for
        *every* call (so that the vocabulary cannot grow without bound over a long job) and runs
        the whole pipeline (tokenizer + sentencizer) even when only words are wanted. The C4
        filter asks for the sentences of every line separately, so one page costs hundreds of
        zones, and inside a zone every word is a transient lexeme, rebuilt zone after zone, and
        spaCy's tokenizer cache is not kept: profiling ``bench/curate.py`` showed ~40% of all
        spaCy time in ``Vocab._new_lexeme``. This class tokenizes outside any zone until the
        string store holds ``PERMANENT_STRINGS`` strings, so the common words of the corpus
        become permanent lexemes with cached tokenizations (a one-off ~tens of MB); after that it
        works inside one zone that is renewed every ``ZONE_CALLS`` calls or ``ZONE_CHARS``
        characters, so memory stays bounded on any corpus. It runs the sentencizer only for
        sentence splits. Tokens and sentence spans are identical (tests/test_quality.py checks
        it against the stock tokenizer), the filters' CPU time is about halved.

        It is a datatrove ``WordTokenizer`` (datatrove's filters take one in place of a language
        code, ``load_word_tokenizer`` passes it through). It pickles as its language key and
        unpickles to that process's shared instance (:func:`word_tokenizer`). Calls are
        serialised with a lock: a spaCy pipeline is not thread-safe and a Beam worker may run
        bundles on several threads.
        """

        def __init__(self, base, key: str):
            super().__init__(base.language)
            self.key = key  # datatrove's language key, e.g. "en"
            # our own spaCy pipeline (a second stock tokenizer): datatrove's cached one may be
            # used by other code, and memory zones on one pipeline must not nest
            self._base = type(base)(base.language, getattr(base, "config", None))
            self._zone = None
            self._calls = self._chars = 0
            self._lock = threading.Lock()

        def __reduce__(self):
            return (word_tokenizer, (self.key,))

        def _doc(self, text: str, sentences: bool):
            nlp = self._base.tokenizer
            if self._zone is None and len(nlp.vocab.strings) < PERMANENT_STRINGS:
                pass  # still filling the permanent vocabulary: no zone
            elif self._zone is None or self._calls >= ZONE_CALLS or self._chars >= ZONE_CHARS:
                self.close()
                self._zone = nlp.memory_zone()
                self._zone.__enter__()
            self._calls += 1
            self._chars += len(text)
            doc = nlp.tokenizer(text)
            return nlp.get_pipe("sentencizer")(doc) if sentences else doc

        def _stock(self, method: str, text: str):
            """datatrove's own code path, for the one string it special-cases ("IS_ALPHA"
            breaks its spaCy pipeline and is removed): same output there too."""
            self.close()  # its per-call zone must not nest in ours
            return getattr(self._base, method)(text)

        def close(self) -> None:
            """Free the open zone's lexemes (results already returned are plain Python)."""
            if self._zone is not None:
                zone, self._zone = self._zone, None
                self._calls = self._chars = 0
                zone.__exit__(None, None, None)

        def word_tokenize(self, text: str) -> list[str]:
            with self._lock:
                if "IS_ALPHA" in text:
                    return self._stock("word_tokenize", text)
                return strip_strings([t.text for t in self._doc(text, False)])

        def sent_tokenize(self, text: str) -> list[str]:
            with self._lock:
                if "IS_ALPHA" in text:
                    return self._stock("sent_tokenize", text)
                return strip_strings([s.text for s in self._doc(text, True).sents])

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            with self._lock:
                if "IS_ALPHA" in text:
                    return self._stock("span_tokenize", text)
                return [(s.start_char, s.end_char) for s in self._doc(text, True).sents]

    return ZonedSpaCyTokenizer


@functools.lru_cache(maxsize=64)
def word_tokenizer(language: str):
    """What to pass datatrove's filters and ``split_into_words`` as their ``language``: a
    ``ZonedSpaCyTokenizer`` (:func:`_make_zoned_class`) when datatrove assigns a plain spaCy
    tokenizer to the language, else the language code (datatrove loads its own tokenizer).
    One object per language per process, so datatrove's ``split_into_words`` cache is shared
    by all four filters and by :func:`signal_values`."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

    try:
        base = load_word_tokenizer(language)
    except ValueError:
        return language
    if type(base) is SpaCyTokenizer and base.language != "ja":  # ja chunks its input by bytes
        return zoned_tokenizer_class()(base, language)
    return language


@dataclass(frozen=True)
class SignalsConfig:
    """Thresholds passed to datatrove's filters (their defaults unless overridden)."""

    gopher_quality: dict[str, Any] = field(default_factory=dict)
    gopher_repetition: dict[str, Any] = field(default_factory=dict)
    c4_quality: dict[str, Any] = field(default_factory=lambda: {"filter_no_terminal_punct": True})
    fineweb_quality: dict[str, Any] = field(default_factory=dict)
    max_chars: int = 200_000  # signals are computed on the first max_chars (cost is linear)
    # "fast": the four verdicts and the values from one word split with spaCy's tokenizer rules
    # replayed without spaCy (stepcrawl/quality/fast_signals.py; same thresholds, measured
    # verdict agreement with datatrove in docs/BENCHMARKS.md); "datatrove": datatrove's own
    # filter() calls (exact, several times slower). Languages the fast path does not cover
    # (zh, ja, vi, non-spaCy tokenizers) always take the datatrove path.
    mode: str = "fast"

    def __post_init__(self) -> None:
        if self.mode not in SIGNAL_MODES:
            raise ValueError(f"SignalsConfig.mode must be one of {SIGNAL_MODES}, got {self.mode!r}")


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
    tok = word_tokenizer(language)
    return {
        "gopher_quality": GopherQualityFilter(language=tok, **cfg.gopher_quality),
        "gopher_repetition": GopherRepetitionFilter(language=tok, **cfg.gopher_repetition),
        "fineweb_quality": FineWebQualityFilter(language=tok, **cfg.fineweb_quality),
        "c4_quality": C4QualityFilter(language=tok, **cfg.c4_quality),
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


def word_and_line_values(text: str, words: list[str], content_words: list[str], n_alpha_words: int,
                         lines: list[str]) -> dict[str, float]:
    """The Gopher/FineWeb/C4 numbers that need only the word split and the non-empty lines
    (unrounded): shared by :func:`signal_values` and the fast path
    (``stepcrawl.quality.fast_signals``), which gets the same words by its own tokenizer."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

    n_chars = max(1, len(text))
    n_words = max(1, len(words))
    n_lines = max(1, len(lines))
    paragraphs = [p for p in text.strip().split("\n\n") if p.strip()]
    dup_lines, dup_line_chars = find_duplicates(lines)
    return {
        "n_words": float(len(content_words)),
        "mean_word_len": (sum(map(len, content_words)) / len(content_words)) if content_words else 0.0,
        "hash_word_ratio": text.count("#") / n_words,
        "ellipsis_word_ratio": (text.count("...") + text.count("…")) / n_words,
        "bullet_lines_ratio": sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / n_lines,
        "ellipsis_lines_ratio": sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / n_lines,
        "alpha_words_ratio": n_alpha_words / n_words,
        "stop_words": float(len(set(STOP_WORDS) & set(w.lower() for w in words))),
        "dup_line_frac": dup_lines / n_lines,
        "dup_line_char_frac": dup_line_chars / n_chars,
        "dup_para_frac": (find_duplicates(paragraphs)[0] / len(paragraphs)) if paragraphs else 0.0,
        "line_punct_ratio": sum(ln.rstrip().endswith(TERMINAL) for ln in lines) / n_lines,
        "short_line_ratio": sum(len(ln) <= 30 for ln in lines) / n_lines,
        "list_ratio": text.count("\n") / n_words,
    }


def signal_values(text: str, language: str = "en") -> dict[str, float]:
    """The numbers Gopher/FineWeb rules compare, via datatrove's helpers (one word split)."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams
    from datatrove.utils.text import PUNCTUATION_SET, split_into_words

    n_chars = max(1, len(text))
    words = split_into_words(text, word_tokenizer(language))
    content_words = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    lines = [ln for ln in text.split("\n") if ln.strip()]
    n_alpha = sum(any(c.isalpha() for c in w) for w in words)
    out = word_and_line_values(text, words, content_words, n_alpha, lines)
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
        self._fast: dict[str, Any] = {}

    def _picklable_state(self) -> dict[str, Any]:
        return {"_cfg": self._cfg, "_filters": {}, "_fast": {}}

    def filters_for(self, language: str) -> dict[str, Any]:
        if language not in self._filters:
            self._filters[language] = build_filters(self._cfg, language)
        return self._filters[language]

    def fast_for(self, language: str):
        """The fast path of ``language`` (None: not covered, use datatrove's filters)."""
        fast = getattr(self, "_fast", None)
        if fast is None:
            fast = self._fast = {}
        if language not in fast:
            from stepcrawl.quality.fast_signals import fast_path

            fast[language] = fast_path(self.filters_for(language), word_tokenizer(language))
        return fast[language]

    def process(self, doc: Document) -> Document:
        language = datatrove_language(doc.lang)
        text = doc.text[: self._cfg.max_chars]
        fast = self.fast_for(language) if self._cfg.mode == "fast" and "IS_ALPHA" not in text else None
        if fast is not None:
            from stepcrawl.quality.fast_signals import verdicts_and_values

            verdicts, reasons, values = verdicts_and_values(text, fast[0], fast[1], values=self.config["values"])
        else:
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
