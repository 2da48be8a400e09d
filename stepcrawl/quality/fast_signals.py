"""Fast quality signals: datatrove's Gopher quality/repetition, C4 and FineWeb verdicts from ONE
word tokenization per document, without running spaCy.

Why this exists: datatrove's filters tokenize with spaCy, and ``C4QualityFilter`` runs spaCy's
tokenizer + sentencizer on every line separately; on documentation pages that is about half of
the whole curate CPU time. The verdicts only depend on the token *strings*, and spaCy's
tokenizer is a deterministic rule set over whitespace-separated chunks (prefix / suffix / infix
regexes, special cases, URL match), each chunk tokenized independently of its context. So:

* :class:`ChunkTokenizer` applies the *same rules* — the regexes and special cases are read from
  the language's spaCy ``Defaults`` exactly as ``spacy.blank(lang)``, the pipeline datatrove
  builds, reads them (tested equal; building the pipeline itself costs seconds per language and
  process), not re-typed — with spaCy's affix
  algorithm (``Tokenizer._split_affixes`` / ``_attach_tokens``) in Python, memoised per chunk
  (web text is Zipfian: almost every chunk is a cache hit, so the per-word cost is one
  ``str.split`` plus a dict lookup). No library does "spaCy's rules without spaCy's Doc
  machinery"; that is why it is written here.
* A document is split once; the word list serves Gopher quality, Gopher repetition and FineWeb;
  C4's per-line sentence count replays spaCy's ``Sentencizer`` rule over the same cached chunk
  tokens, and stops counting once the minimum is reached (the verdict cannot change after it).
* The rule order, thresholds and failure names are datatrove's: thresholds are read from
  datatrove's own filter objects built with the same keyword overrides (``SignalsConfig``), so a
  changed default in datatrove changes ours too; the n-gram helpers are datatrove's functions.

Known differences (measured in bench/signals_agreement.py, docs/BENCHMARKS.md): spaCy's final
"special-case matcher" pass (it re-merges token sequences such as ``:`` ``)`` into a special
case like ``:)`` across affix splits) is not replayed. Languages whose datatrove tokenizer is not
a plain spaCy blank pipeline (zh with jieba, ja, vi, Stanza/NLTK ones, or the ``IS_ALPHA`` text
datatrove special-cases) are not handled here: the caller falls back to the exact datatrove path.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@dataclass(frozen=True)
class TokenizerRules:
    """What spaCy's rule-based ``Tokenizer`` is made of (its constructor's arguments)."""

    prefix_search: Callable | None
    suffix_search: Callable | None
    infix_finditer: Callable | None
    token_match: Callable | None
    url_match: Callable | None
    rules: dict[str, list[dict]]


def pipeline_rules(nlp) -> TokenizerRules:
    """The rules of a built pipeline's tokenizer."""
    tok = nlp.tokenizer
    return TokenizerRules(tok.prefix_search, tok.suffix_search, tok.infix_finditer, tok.token_match, tok.url_match, tok.rules)


STANDARD_TOKENIZER = {"@tokenizers": "spacy.Tokenizer.v1"}


@functools.lru_cache(maxsize=None)
def language_rules(lang: str) -> TokenizerRules | None:
    """The rules ``spacy.blank(lang)`` gives its tokenizer, read from the language's ``Defaults``
    exactly as spaCy's own tokenizer factory (``spacy.language.create_tokenizer``) reads them —
    without building the pipeline. Why: building one runs spaCy's ``add_special_case`` for every
    exception (Indonesian has ~16,000: 3.4 s), and each worker process pays it for every
    language it meets; reading the Defaults costs milliseconds. None when the language uses
    another tokenizer (ko, th, vi, zh, ja: a segmenter, not these rules).
    tests/test_fast_signals.py checks the result equals the built pipeline's (31 languages)."""
    from spacy import util

    cls = util.get_lang_class(lang)
    if dict(cls.default_config["nlp"]["tokenizer"]) != STANDARD_TOKENIZER:
        return None
    d = cls.Defaults
    return TokenizerRules(
        prefix_search=util.compile_prefix_regex(d.prefixes).search if d.prefixes else None,
        suffix_search=util.compile_suffix_regex(d.suffixes).search if d.suffixes else None,
        infix_finditer=util.compile_infix_regex(d.infixes).finditer if d.infixes else None,
        token_match=d.token_match,
        url_match=d.url_match,
        rules=d.tokenizer_exceptions,
    )


class ChunkTokenizer:
    """spaCy's tokenizer rules for one language, applied per whitespace chunk, memoised."""

    MAX_CACHE = 500_000  # chunks; cleared when full (bounded memory on any corpus)

    def __init__(self, nlp=None, *, rules: TokenizerRules | None = None) -> None:
        """From a spaCy pipeline's tokenizer (``nlp``) or from its rules (:func:`language_rules`)."""
        from spacy.attrs import ORTH

        r = rules if rules is not None else pipeline_rules(nlp)
        self._prefix = r.prefix_search
        self._suffix = r.suffix_search
        self._infix = r.infix_finditer
        self._token_match = r.token_match
        self._url_match = r.url_match
        self._specials: dict[str, tuple[str, ...]] = {
            k: tuple(d[ORTH] if ORTH in d else d.get("ORTH", "") for d in v) for k, v in r.rules.items()
        }
        self._cache: dict[str, tuple[str, ...]] = dict(self._specials)
        # spaCy's last pass (Tokenizer._apply_special_cases): special cases that affix splitting
        # would cut (e.g. "):" from "f():") are matched as token sequences and merged back when
        # they are contiguous (a match across a space is left alone: its text is not a rule).
        # Keyed by the special's affix-only tokenization, as spaCy's PhraseMatcher is.
        self._merge: dict[tuple[str, ...], tuple[str, ...]] = {}
        for k, v in self._specials.items():
            if " " in k or not ((self._prefix and self._prefix(k)) or (self._suffix and self._suffix(k))
                                or (self._infix and next(iter(self._infix(k)), None))):
                continue
            pieces = self._split(k, with_specials=False)
            if len(pieces) > 1:
                self._merge[pieces] = v
        self._merge_max = max((len(p) for p in self._merge), default=0)

    def chunk(self, s: str) -> tuple[str, ...]:
        """Tokens of one chunk without whitespace (cached)."""
        got = self._cache.get(s)
        if got is None:
            if len(self._cache) >= self.MAX_CACHE:
                self._cache = dict(self._specials)
            got = self._split(s)
            if len(got) > 1 and self._merge:
                got = self._merge_specials(got)
            self._cache[s] = got
        return got

    def _merge_specials(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        n = len(tokens)
        found = []
        for i in range(n):
            for j in range(i + 2, min(n, i + self._merge_max) + 1):
                if tokens[i:j] in self._merge:
                    found.append((j - i, i, j))
        if not found:
            return tokens
        seen: set[int] = set()
        keep = []
        for _, i, j in sorted(found, key=lambda f: (-f[0], f[1])):  # longest, then leftmost (spaCy's order)
            if i not in seen and j - 1 not in seen:
                keep.append((i, j))
            seen.update(range(i, j))
        out: list[str] = []
        pos = 0
        for i, j in sorted(keep):
            out.extend(tokens[pos:i])
            out.extend(self._merge[tokens[i:j]])
            pos = j
        out.extend(tokens[pos:])
        return tuple(out)

    def words(self, text: str) -> list[str]:
        """= datatrove's ``split_into_words(text, lang)`` for a plain spaCy language."""
        out: list[str] = []
        cache, chunk = self._cache, self.chunk
        for s in text.split():
            got = cache.get(s)
            out.extend(got if got is not None else chunk(s))
        return out

    # spaCy's Tokenizer._split_affixes + _attach_tokens (spacy/tokenizer.pyx), same branches
    def _split(self, string: str, with_specials: bool = True) -> tuple[str, ...]:
        specials = self._specials if with_specials else {}
        prefixes: list[str] = []
        suffixes: list[str] = []
        last_size = 0
        token_match = self._token_match
        while string and len(string) != last_size:
            if token_match and token_match(string):
                break
            if string in specials:
                break
            last_size = len(string)
            m = self._prefix(string) if self._prefix else None
            pre_len = (m.end() - m.start()) if m is not None else 0
            if pre_len:
                prefix, minus_pre = string[:pre_len], string[pre_len:]
                if minus_pre and minus_pre in specials:
                    string = minus_pre
                    prefixes.append(prefix)
                    break
            m = self._suffix(string[pre_len:]) if self._suffix else None
            suf_len = (m.end() - m.start()) if m is not None else 0
            if suf_len:
                suffix, minus_suf = string[-suf_len:], string[:-suf_len]
                if minus_suf and minus_suf in specials:
                    string = minus_suf
                    suffixes.append(suffix)
                    break
            if pre_len and suf_len and (pre_len + suf_len) <= len(string):
                string = string[pre_len:-suf_len]
                prefixes.append(prefix)
                suffixes.append(suffix)
            elif pre_len:
                string = minus_pre
                prefixes.append(prefix)
            elif suf_len:
                string = minus_suf
                suffixes.append(suffix)
        tokens = prefixes
        if string:
            if string in specials:
                tokens.extend(specials[string])
            elif (token_match and token_match(string)) or (self._url_match and self._url_match(string)):
                tokens.append(string)
            else:
                start = 0
                for m in self._infix(string) if self._infix else ():
                    a, b = m.start(), m.end()
                    if a == 0:
                        continue
                    if a != start:
                        tokens.append(string[start:a])
                    if a != b:
                        tokens.append(string[a:b])
                    start = b
                if string[start:]:
                    tokens.append(string[start:])
        tokens.extend(reversed(suffixes))
        return tuple(t for t in (x.strip() for x in tokens) if t)


@functools.lru_cache(maxsize=4096)
def _is_punct(token: str) -> bool:
    # spaCy's lexeme attribute IS_PUNCT (spacy/lang/lex_attrs.py): every char in category P*
    return all(unicodedata.category(c).startswith("P") for c in token)


@functools.lru_cache(maxsize=1)
def _sentence_punct() -> frozenset[str]:
    from spacy.pipeline.sentencizer import Sentencizer

    return frozenset(Sentencizer.default_punct_chars)


_WS_RUNS = re.compile(r"\S+|\s+")


def count_sentences(line: str, tok: ChunkTokenizer, stop_at: int) -> int:
    """spaCy's ``Sentencizer`` on spaCy's tokens of ``line`` (datatrove's
    ``split_into_sentences(line)`` length), counting at most to ``stop_at``."""
    punct = _sentence_punct()
    n = 1
    seen_period = False
    first = True
    for m in _WS_RUNS.finditer(line):
        s = m.group(0)
        if s.isspace():
            # spaCy's whitespace handling: a run that follows a token loses one leading ' '
            # (it becomes that token's trailing space); what is left is a whitespace token
            rest = s if first or s[0] != " " else s[1:]
            first = False
            if not rest:
                continue
            tokens: tuple[str, ...] = ("",)  # a whitespace token: not punctuation
        else:
            first = False
            tokens = tok.chunk(s)
        for t in tokens:
            in_punct = t in punct
            if seen_period and not in_punct and not (t and _is_punct(t)):
                n += 1
                if n >= stop_at:
                    return n
                seen_period = False
            elif in_punct:
                seen_period = True
    return n


@dataclass
class FastFilters:
    """Thresholds of the four datatrove filters (read from datatrove's own objects)."""

    gopher_quality: Any
    gopher_repetition: Any
    c4_quality: Any
    fineweb_quality: Any


def verdicts_and_values(text: str, tok: ChunkTokenizer, f: FastFilters, values: bool = True
                        ) -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
    """({filter: 1.0|0.0}, {filter: failing rule}, signal values) — the same as datatrove's four
    ``filter()`` calls plus :func:`stepcrawl.quality.signals.signal_values`, from one split."""
    words = tok.words(text)
    verdicts: dict[str, float] = {}
    reasons: dict[str, str] = {}
    cache: dict[Any, Any] = {}
    lines_nl = [ln for ln in text.split("\n") if ln.strip() != ""]
    for name, fn in (("gopher_quality", _gopher_quality), ("gopher_repetition", _gopher_repetition),
                     ("fineweb_quality", _fineweb), ("c4_quality", _c4)):
        try:
            reason = fn(text, words, lines_nl, tok, getattr(f, name), cache)
        except (ZeroDivisionError, ValueError, IndexError) as exc:
            reason = f"error:{type(exc).__name__}"
        verdicts[name] = 0.0 if reason else 1.0
        if reason:
            reasons[name] = reason
    vals = _values(text, words, lines_nl, cache) if values else {}
    return verdicts, reasons, vals


# ---------------------------------------------------------------- the four filters' rules
# Each returns the failing rule's name (datatrove's string) or None; same order as datatrove.


@functools.lru_cache(maxsize=1)
def _punctuation_set() -> frozenset[str]:
    from datatrove.utils.text import PUNCTUATION_SET

    return frozenset(PUNCTUATION_SET)


@functools.lru_cache(maxsize=200_000)
def _word_props(w: str) -> tuple[bool, bool]:
    """(has a non-punctuation char — Gopher's "non-symbol word", has a letter)."""
    punct = _punctuation_set()
    return any(ch not in punct for ch in w), any(c.isalpha() for c in w)


def _props(words, cache):
    props = cache.get("props")
    if props is None:
        props = cache["props"] = [_word_props(w) for w in words]
    return props


def _gopher_quality(text, words, _lines_nl, _tok, q, cache) -> str | None:
    n_words = len(words)
    props = _props(words, cache)
    non_symbol = [w for w, p in zip(words, props) if p[0]]
    cache["non_symbol"] = non_symbol
    n_ns = len(non_symbol)
    if q.min_doc_words and n_ns < q.min_doc_words:
        return "gopher_short_doc"
    if q.max_doc_words and n_ns > q.max_doc_words:
        return "gopher_long_doc"
    if not non_symbol:
        avg = float("nan")  # np.mean([]) is nan (with a warning): every comparison below is False
    else:
        avg = sum(map(len, non_symbol)) / n_ns
    if q.min_avg_word_length and avg < q.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if q.max_avg_word_length and avg > q.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if q.max_symbol_word_ratio and text.count("#") / n_words > q.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if q.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > q.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if q.max_bullet_lines_ratio and sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > q.max_bullet_lines_ratio:
        return "gopher_too_many_bullets"
    if q.max_ellipsis_lines_ratio and sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > q.max_ellipsis_lines_ratio:
        return "gopher_too_many_end_ellipsis"
    if q.max_non_alpha_words_ratio and sum(p[1] for p in props) / n_words < q.max_non_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if q.min_stop_words and len(q.stop_words.intersection(words)) < q.min_stop_words:
        return "gopher_enough_stop_words"
    return None


def _top_dup(words, n, cache) -> int | None:
    """datatrove's ``find_top_duplicate(get_n_grams(words, n))`` (None: no n-gram), counting
    tuples instead of joined strings: words hold no spaces, so two n-grams are equal exactly when
    their " "-joined strings are; Counter keeps first-seen order, so ``max`` picks the same top
    n-gram as ``most_common(1)`` on a tie."""
    key = ("top", n)
    if key not in cache:
        if len(words) < n:
            cache[key] = None
        else:
            counts = Counter(zip(*(words[i:] for i in range(n))))
            gram, k = max(counts.items(), key=itemgetter(1))
            cache[key] = (sum(map(len, gram)) + n - 1) * k
    return cache[key]


def _all_dup(words, n, cache) -> int:
    """datatrove's ``find_all_duplicate(words, n)``: the same count, but the Python loop visits
    only the positions that can change it.

    datatrove joins each n-gram without a separator (so "ab"+"c" and "a"+"bc" collide) and
    walks every position: a gram already in its ``unique`` set counts as repeated and makes the
    walk jump n positions (the grams jumped over never enter the set); any other gram is
    added. So a gram is in the set exactly when one of its earlier occurrences was visited, and
    a gram's *first* occurrence is never a repeat: the walk only needs to stop at the later
    occurrences ("candidates"), about 2% of the positions on real pages. Finding them is done
    with numpy on polynomial hashes of the joined characters; every candidate is then checked
    against its first occurrence as a string, and a hash collision falls back to datatrove's
    walk, so the count stays exact. (On documentation pages this loop was 40% of the fast
    path's CPU.)"""
    key = ("all", n)
    if key not in cache:
        cache[key] = _repeated_chars(words, n, cache)
    return cache[key]


_HASH_BASE = 0x9E3779B97F4A7C15  # odd, so invertible mod 2**64 (numpy uint64 arithmetic wraps)


def _gram_hashes(words, n, cache, base: int = _HASH_BASE):
    """(hash of each n-gram's joined characters, char offsets of the words, joined text)."""
    import numpy as np

    got = cache.get("char_hash")
    if got is None or got[0] != base:
        joined = "".join(words)
        offs = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=offs[1:])
        codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        ones = np.ones(len(codes) + 1, dtype=np.uint64)
        powers, inverse = ones.copy(), ones.copy()
        powers[1:], inverse[1:] = np.uint64(base), np.uint64(pow(base, -1, 1 << 64))
        np.cumprod(powers, out=powers)  # base**t
        np.cumprod(inverse, out=inverse)  # base**-t
        prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
        np.cumsum(codes * powers[:-1], out=prefix[1:])  # sum of code_t * base**t below each char
        got = cache["char_hash"] = (base, offs, prefix, inverse, joined)
    _, offs, prefix, inverse, joined = got
    start, end = offs[:-n], offs[n:]
    hashes = (prefix[end] - prefix[start]) * inverse[start]  # the gram's hash, shifted to t = 0
    return hashes + (end - start).astype(np.uint64) * np.uint64(0xFF51AFD7ED558CCD), offs, joined


def _repeated_chars(words, n, cache, base: int = _HASH_BASE) -> int:
    import numpy as np

    m = len(words) - n + 1
    if m <= 0:
        return 0
    hashes, offs, joined = _gram_hashes(words, n, cache, base)
    _, first_of_class, gram_class = np.unique(hashes, return_index=True, return_inverse=True)  # first index: stable sort
    if len(first_of_class) == m:
        return 0  # no gram occurs twice
    firsts = first_of_class[gram_class]
    candidates = np.flatnonzero(firsts != np.arange(m))
    c_list, f_list, k_list = candidates.tolist(), firsts[candidates].tolist(), gram_class[candidates].tolist()
    o = offs.tolist()
    for c, f in zip(c_list, f_list):
        if joined[o[c]:o[c + n]] != joined[o[f]:o[f + n]]:
            from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

            return find_all_duplicate(words, n)  # a hash collision: datatrove's own walk
    seen_later: set[int] = set()  # classes added to datatrove's set at a candidate position
    skip_starts: list[int] = []  # the windows [start, start + n - 1) jumped over, in order
    repeated, idx = 0, 0
    for c, f, k in zip(c_list, f_list, k_list):
        if c < idx:
            continue  # inside the window the last repeat jumped over
        w = bisect_right(skip_starts, f) - 1
        if w < 0 or f >= skip_starts[w] + n - 1 or k in seen_later:  # an earlier occurrence was visited
            repeated += o[c + n] - o[c]
            skip_starts.append(c + 1)
            idx = c + n
        else:
            seen_later.add(k)
            idx = c + 1
    return repeated


def _gopher_repetition(text, words, _lines_nl, _tok, r, cache) -> str | None:
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

    if not text:
        return "empty"
    paragraphs = r.paragraph_exp.split(text.strip())
    para_dups, char_dups = find_duplicates(paragraphs)
    if r.dup_para_frac and para_dups / len(paragraphs) > r.dup_para_frac:
        return "dup_para_frac"
    if r.dup_para_char_frac and char_dups / len(text) > r.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = r._line_splitter.split(text)
    line_dups, char_dups = find_duplicates(lines)
    if r.dup_line_frac and line_dups / len(lines) > r.dup_line_frac:
        return "dup_line_frac"
    if r.dup_line_char_frac and char_dups / len(text) > r.dup_line_char_frac:
        return "dup_line_char_frac"
    for n, frac in r.top_n_grams:
        top = _top_dup(words, n, cache)
        if top is None:
            continue
        if top / len(text) > frac:
            return f"top_{n}_gram"
    for n, frac in r.dup_n_grams:
        if _all_dup(words, n, cache) / len(text) > frac:
            return f"duplicated_{n}_n_grams"
    return None


def _fineweb(text, words, lines, _tok, fw, cache) -> str | None:
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

    if not lines:
        return "empty"
    ratio = sum(1 for line in lines if line.endswith(fw.stop_chars)) / len(lines)
    if ratio < fw.line_punct_thr and not (ratio == 0 and fw.line_punct_exclude_zero):
        return "line_punct_ratio"
    ratio = sum(1 for line in lines if len(line) <= fw.short_line_length) / len(lines)
    if ratio > fw.short_line_threshold:
        return "short_line_ratio"
    dup_chars = find_duplicates(lines)[1]
    cache["fw_dup_chars"] = dup_chars
    if dup_chars / len(text.replace("\n", "")) > fw.char_duplicates_ratio:
        return "char_dup_ratio"
    if text.count("\n") / len(words) > fw.new_line_ratio:
        return "list_ratio"
    return None


def _c4(text, _words, _lines_nl, tok, c, _cache) -> str | None:
    from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS

    if not c.split_paragraph:
        raise NotImplementedError("fast C4 signals split lines (split_paragraph=True, datatrove's default)")
    num_sentences = 0
    need = c.min_num_sentences
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if c.max_word_length != -1 and any(len(w) > c.max_word_length for w in words):
            continue
        if c.remove_citations:
            line = CITATION_REGEX.sub("", line)
        if c.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            continue
        if len(words) < c.min_words_per_line:
            continue
        line_l = line.lower()
        if c.filter_lorem_ipsum and "lorem ipsum" in line_l:
            return "lorem_ipsum"
        if c.filter_javascript and "javascript" in line_l:
            continue
        if c.filter_curly_bracket and "{" in line:
            return "curly_bracket"
        if c.filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS):
            continue
        if need != -1 and num_sentences < need:
            num_sentences += count_sentences(line, tok, need - num_sentences)
    if num_sentences < need:
        return "too_few_sentences"
    return None


def _values(text, words, lines, cache) -> dict[str, float]:
    """Same keys and numbers as :func:`stepcrawl.quality.signals.signal_values`."""
    from stepcrawl.quality.signals import word_and_line_values

    n_chars = max(1, len(text))
    props = _props(words, cache)
    content = cache.get("non_symbol")
    if content is None:
        content = [w for w, p in zip(words, props) if p[0]]
    out = word_and_line_values(text, words, content, sum(p[1] for p in props), lines)
    for n in (2, 3, 4):
        top = _top_dup(words, n, cache)
        out[f"top_{n}gram_char_frac"] = (top / n_chars) if top is not None else 0.0
    for n in (5, 10):
        out[f"dup_{n}gram_char_frac"] = _all_dup(words, n, cache) / n_chars
    return {k: round(float(v), 5) for k, v in out.items()}


FastPath = tuple[ChunkTokenizer, FastFilters]


def fast_path(filters: dict[str, Any], word_tok: Any) -> FastPath | None:
    """The fast path for a language: its datatrove filters' thresholds + spaCy's rules for the
    ``ZonedSpaCyTokenizer`` that exact mode uses; None when the language's datatrove tokenizer
    is not a plain spaCy pipeline (the caller then runs datatrove's filters)."""
    base = getattr(word_tok, "_base", None)
    if base is None:
        return None
    if not getattr(filters["c4_quality"], "split_paragraph", True):
        return None
    return chunk_tokenizer(base), FastFilters(**{k: filters[k] for k in ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")})


# One ChunkTokenizer per language per process, shared by every step instance (each curate run,
# each Beam bundle's DoFn): building one replays every special case of the language (~1.4 s for
# Indonesian), and its memo of tokenised chunks stays warm.
_CHUNKERS: dict[tuple[str, str], ChunkTokenizer] = {}


def default_rules(spacy_tok) -> TokenizerRules | None:
    """The rules of a datatrove ``SpaCyTokenizer`` when its pipeline is spaCy's default one for
    its language (no datatrove config, spaCy's rule-based tokenizer), read without building it;
    None otherwise."""
    return language_rules(spacy_tok.language) if getattr(spacy_tok, "config", None) is None else None


def chunk_tokenizer(spacy_tok) -> ChunkTokenizer:
    """The chunk tokenizer for a datatrove ``SpaCyTokenizer``: from :func:`default_rules` when
    there are some (no pipeline is built), else from its built pipeline."""
    key = (spacy_tok.language, repr(getattr(spacy_tok, "config", None)))
    got = _CHUNKERS.get(key)
    if got is None:
        rules = default_rules(spacy_tok)
        got = _CHUNKERS[key] = ChunkTokenizer(rules=rules) if rules is not None else ChunkTokenizer(spacy_tok.tokenizer)
    return got


Verdicts = Callable[[str], tuple[dict[str, float], dict[str, str], dict[str, float]]]
