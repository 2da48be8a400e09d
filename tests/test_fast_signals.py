"""The fast quality signals decide exactly like datatrove's own filters on a shipped real set, and
the chunk tokenizer reproduces datatrove's spaCy word split (property test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.document import Document
from stepcrawl.quality.signals import FILTER_NAMES, QualitySignalsStep, SignalsConfig, datatrove_language, filter_verdicts, word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures"


def shipped_docs() -> list[dict]:
    """Real texts: Debian Handbook / Reference pages in 18 languages (extracted, shipped as a
    small extract), the curate fixtures' real pages, and the quality samples (real doc
    paragraphs + generated spam)."""
    docs = [json.loads(line) for line in (FIX / "quality" / "multilingual_docs.jsonl").read_text(encoding="utf-8").splitlines()]
    for name in ("positive", "negative"):
        for i, line in enumerate((ROOT / "samples" / "quality" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()):
            if i % 8 == 0:  # an eighth of them keeps the test fast
                docs.append({"text": json.loads(line)["text"], "lang": "en"})
    return docs


_STOCK: dict[str, dict] = {}


def datatrove_stock(text: str, lang: str) -> dict[str, float]:
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    key = datatrove_language(lang)
    if key not in _STOCK:
        _STOCK[key] = {"gopher_quality": GopherQualityFilter(language=key), "gopher_repetition": GopherRepetitionFilter(language=key),
                       "fineweb_quality": FineWebQualityFilter(language=key), "c4_quality": C4QualityFilter(language=key, **SignalsConfig().c4_quality)}
    return filter_verdicts(text, _STOCK[key])[0]


def test_fast_verdicts_equal_datatrove_filters_on_real_multilingual_texts():
    docs = shipped_docs()
    assert len({d["lang"] for d in docs}) >= 10
    fast = QualitySignalsStep(SignalsConfig(mode="fast"))
    exact = QualitySignalsStep(SignalsConfig(mode="datatrove"))
    covered = 0
    for i, d in enumerate(docs):
        doc = Document(id=str(i), text=d["text"], lang=d["lang"])
        f = fast.process(doc)
        want = datatrove_stock(d["text"], d["lang"])
        assert {k: f.quality[k] for k in FILTER_NAMES} == want, (d.get("url"), d["lang"], f.meta)
        if i % 4 == 0:
            # failing rules and stored values are the same numbers too (re-thresholding a corpus
            # later does not depend on the mode that annotated it)
            e = exact.process(doc)
            assert f.meta.get("quality_fail") == e.meta.get("quality_fail")
            assert f.quality == e.quality
        covered += fast.fast_for(datatrove_language(d["lang"])) is not None
    assert covered >= 0.8 * len(docs)  # most languages take the fast path


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode"):
        SignalsConfig(mode="guess")


_ALPHABET = st.sampled_from(list("abcXYZ019 .,;:!?'\"()[]{}-/#%$&*+=<>…—–«»“”’_@\n\t") + ["n't", "e.g.", "U.S.", "http://a.io/x", ":)", "'s", "..."])


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(_ALPHABET, min_size=0, max_size=40).map("".join))
def test_chunk_tokenizer_matches_spacy_words(text):
    from datatrove.utils.text import split_into_words

    from stepcrawl.quality.fast_signals import ChunkTokenizer

    tok = word_tokenizer("en")
    assert ChunkTokenizer(tok._base.tokenizer).words(text) == split_into_words(text, "en")


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(_ALPHABET, min_size=1, max_size=40).map("".join))
def test_sentence_count_matches_spacy(line):
    from stepcrawl.quality.fast_signals import ChunkTokenizer, count_sentences

    tok = word_tokenizer("en")
    want = len(tok.span_tokenize(line))
    assert count_sentences(line, ChunkTokenizer(tok._base.tokenizer), 10_000) == want


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "ab", "ba", "c", "abc", "x"]), min_size=0, max_size=60), st.sampled_from([2, 3, 5, 10]))
def test_duplicate_ngram_chars_match_datatrove(words, n):
    """Few distinct words, so repeats, overlapping repeats and concatenation collisions
    ("ab"+"c" = "a"+"bc") are common: the fast count equals datatrove's find_all_duplicate."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

    from stepcrawl.quality.fast_signals import _all_dup

    assert _all_dup(words, n, {}) == find_all_duplicate(words, n)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "ab", "ba", "c", "abc", "é", "日本"]), min_size=0, max_size=60), st.sampled_from([1, 2, 5, 10]))
def test_duplicate_ngram_hash_collisions_fall_back_to_the_exact_walk(words, n):
    """With base 1 the gram hash is the sum of the character codes ("ab" = "ba"): classes mix,
    the string check must catch it and the count must still be datatrove's."""
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

    from stepcrawl.quality.fast_signals import _repeated_chars

    assert _repeated_chars(words, n, {}, base=1) == find_all_duplicate(words, n)


def test_duplicate_ngram_count_shares_one_hashing_across_n():
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate

    from stepcrawl.quality.fast_signals import _all_dup

    words = ("the cat sat on the mat and the cat sat on the hat " * 30).split() + ["end"]
    cache: dict = {}
    got = [_all_dup(words, n, cache) for n in range(5, 11)]
    assert got == [find_all_duplicate(words, n) for n in range(5, 11)] and got[0] > 0



def _rules_view(tok) -> tuple:
    """What a ChunkTokenizer is made of, comparable across two builds."""
    pattern = lambda f: getattr(getattr(f, "__self__", None), "pattern", f)  # noqa: E731
    return (pattern(tok._prefix), pattern(tok._suffix), pattern(tok._infix), tok._token_match, tok._url_match,
            tok._specials, tok._merge)


def test_rules_read_from_language_defaults_equal_the_built_pipelines():
    """The fast path reads spaCy's tokenizer rules from each language's Defaults instead of
    building ``spacy.blank(lang)`` (seconds per language per process): for every language
    datatrove tokenizes with spaCy's default tokenizer, both give the same chunk tokenizer."""
    import spacy
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_tokenizer_assignments, load_word_tokenizer

    from stepcrawl.quality.fast_signals import ChunkTokenizer, language_rules

    # the languages of the Debian Handbook editions and of Europe's larger web: (all of
    # datatrove's ~400 would take minutes)
    langs = ("ar ca cs da de el en es et fa fi fr he hr hu id it lt lv nb nl pl pt ro ru sk sl sr sv tr uk").split()
    assigned = load_tokenizer_assignments()
    checked = []
    for lang in langs:
        if lang not in assigned:
            continue
        tok = load_word_tokenizer(lang)
        if type(tok) is not SpaCyTokenizer or tok.config is not None:
            continue
        rules = language_rules(tok.language)
        if rules is None:  # another tokenizer (a segmenter): the fast path does not use rules
            continue
        assert _rules_view(ChunkTokenizer(rules=rules)) == _rules_view(ChunkTokenizer(spacy.blank(tok.language))), lang
        checked.append(lang)
    assert {"en", "de", "fr", "id", "ru", "nl", "pl", "ar"} <= set(checked)
    assert len(checked) >= 30


def test_fast_path_chunk_tokenizer_splits_like_spacy_in_many_languages():
    docs = [d for d in shipped_docs() if d["lang"] != "en"]
    langs = sorted({datatrove_language(d["lang"]) for d in docs} - {"en"})
    assert len(langs) >= 8
    from datatrove.utils.text import split_into_words

    from stepcrawl.quality.fast_signals import chunk_tokenizer

    for d in docs[::3]:
        key = datatrove_language(d["lang"])
        base = word_tokenizer(key)._base if hasattr(word_tokenizer(key), "_base") else None
        if base is None:
            continue
        assert chunk_tokenizer(base).words(d["text"][:20_000]) == split_into_words(d["text"][:20_000], key), d["lang"]
