"""Per-phase contamination report: how much of a mixed phase overlaps configured evaluation sets.

Two matchers, chosen per evaluation set:

- **words** (preferred): ``stepcrawl.decontam`` — the corpus decontamination's own index
  (normalised word 13-grams, ``NgramIndex.from_file`` / ``count_overlap``) — applied to each
  drawn document's text, decoded with the tokenizer named in the token manifests. Same
  semantics as ``stepcrawl decontam``, so a clean corpus reports 0 here too. Unit: distinct
  matching word n-grams.
- **tokens** (fallback: evaluation records given pre-tokenised as ``{"tokens": [...]}``, or no
  loadable tokenizer): a small index of token-id n-grams kept here (64-bit polynomial rolling
  hash finalised by splitmix64, sorted numpy array). Unit: tokens inside a matching n-gram.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from curricula.permute import splitmix64

_P = np.uint64(0x100000001B3)  # FNV prime: an odd multiplier for the polynomial hash


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every length-``n`` window of ``tokens`` (empty if shorter than n)."""
    t = np.asarray(tokens).astype(np.uint64)
    if t.size < n:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        powers = np.ones(n, dtype=np.uint64)
        for i in range(n - 2, -1, -1):
            powers[i] = powers[i + 1] * _P
        windows = sliding_window_view(t, n)
        h = np.zeros(windows.shape[0], dtype=np.uint64)
        for j in range(n):  # column-wise: O(L·n) ops, O(L) memory (no L×n product matrix)
            h += windows[:, j] * powers[j]
    return splitmix64(h)


class NgramIndex:
    """The token n-gram hashes of one evaluation set (the ``tokens`` matcher)."""

    unit = "tokens in matching token n-grams"

    def __init__(self, name: str, n: int = 13) -> None:
        self.name, self.n = name, n
        self._parts: list[np.ndarray] = []
        self.hashes = np.empty(0, dtype=np.uint64)
        self.n_records = 0

    def add(self, tokens: np.ndarray) -> None:
        self._parts.append(ngram_hashes(tokens, self.n))
        self.n_records += 1

    def freeze(self) -> "NgramIndex":
        if self._parts:
            self.hashes = np.unique(np.concatenate([self.hashes, *self._parts]))
            self._parts = []
        return self

    def covered(self, tokens: np.ndarray) -> np.ndarray:
        """Boolean per token: inside at least one n-gram that occurs in the evaluation set."""
        L = len(tokens)
        out = np.zeros(L, dtype=bool)
        if L < self.n or self.hashes.size == 0:
            return out
        hit = np.flatnonzero(np.isin(ngram_hashes(tokens, self.n), self.hashes, assume_unique=False))
        if hit.size == 0:
            return out
        delta = np.zeros(L + 1, dtype=np.int32)
        np.add.at(delta, hit, 1)
        np.add.at(delta, hit + self.n, -1)
        return np.cumsum(delta[:L]) > 0

    def count_overlap(self, tokens: np.ndarray) -> int:
        return int(self.covered(tokens).sum())


class WordNgramMatcher:
    """``stepcrawl.decontam``'s word n-gram index applied to decoded document text."""

    unit = "distinct matching word n-grams (stepcrawl.decontam)"

    def __init__(self, index, decode: Callable[[list[int]], str]) -> None:
        self.index, self.decode = index, decode
        self.name, self.n = index.name, index.n
        self.n_records = index.n_records

    def count_overlap(self, tokens: np.ndarray) -> int:
        from stepcrawl.decontam import count_overlap

        return count_overlap(self.decode(np.asarray(tokens).tolist()), self.index)


def _record_text(rec: dict) -> str:
    if isinstance(rec.get("text"), str):
        return rec["text"]
    # benchmark-style records: question / prompt / answer / solution … joined
    return "\n".join(v for v in rec.values() if isinstance(v, str))


def load_eval_set(path: str | Path, encode: Callable[[str], list[int]] | None, n: int = 13) -> NgramIndex:
    """An index over a JSONL evaluation set: each record's ``tokens`` (list of ids) or its text
    (``text``, else every string field) encoded with ``encode``."""
    from stepcrawl.io import iter_jsonl

    index = NgramIndex(Path(path).name, n)
    for lineno, rec in iter_jsonl(path):
        if isinstance(rec.get("tokens"), list):
            ids = rec["tokens"]
        else:
            if encode is None:
                raise ValueError(f"{path}:{lineno}: a text record needs the tokenizer (none found in the token manifests)")
            ids = encode(_record_text(rec))
        index.add(np.asarray(ids, dtype=np.int64))
    return index.freeze()


@dataclass
class ContaminationCounter:
    """Accumulates, per evaluation set and source entry, overlapping tokens and documents."""

    indexes: list  # NgramIndex | WordNgramMatcher
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    docs: dict[str, dict[str, int]] = field(default_factory=dict)
    total_tokens: int = 0

    def add(self, entry: str, tokens: np.ndarray) -> None:
        self.total_tokens += len(tokens)
        for ix in self.indexes:
            k = ix.count_overlap(tokens)
            if k:
                t = self.tokens.setdefault(ix.name, {})
                t[entry] = t.get(entry, 0) + k
                d = self.docs.setdefault(ix.name, {})
                d[entry] = d.get(entry, 0) + 1

    def report(self) -> dict:
        out = {}
        for ix in self.indexes:
            hits = sum(self.tokens.get(ix.name, {}).values())
            rec = {
                "n": ix.n,
                "unit": ix.unit,
                "eval_records": ix.n_records,
                "overlap": hits,
                "overlap_docs": sum(self.docs.get(ix.name, {}).values()),
                "by_source": dict(sorted(self.tokens.get(ix.name, {}).items())),
            }
            if isinstance(ix, NgramIndex):  # token units: a share of the phase's tokens
                rec["overlap_fraction"] = hits / self.total_tokens if self.total_tokens else 0.0
            out[ix.name] = rec
        return out


def _tokenizer(tokenizer_info: dict):
    path = tokenizer_info.get("path")
    if not path or not Path(path).exists():
        return None
    try:
        from tokenizer.encode import Tokenizer

        return Tokenizer(path)
    except Exception:  # noqa: BLE001 — a missing/foreign tokenizer means "records need tokens"
        return None


def load_eval_sets(paths: Iterable[str | Path], tokenizer_info: dict, n: int = 13) -> list:
    """One matcher per evaluation set: word n-grams through ``stepcrawl.decontam`` when the
    tokenizer can decode and the set has text fields, else token n-grams."""
    paths = list(paths)
    if not paths:
        return []
    from stepcrawl.decontam import NgramIndex as WordIndex

    tok = _tokenizer(tokenizer_info)
    out = []
    for p in paths:
        matcher = None
        if tok is not None:
            try:
                matcher = WordNgramMatcher(WordIndex.from_file(p, n=n, name=Path(p).name), tok.decode)
            except ValueError:  # records without text fields (e.g. pre-tokenised): token mode
                matcher = None
        out.append(matcher or load_eval_set(p, tok.encode_text if tok is not None else None, n))
    return out


__all__ = ["ContaminationCounter", "NgramIndex", "WordNgramMatcher", "load_eval_set", "load_eval_sets",
           "ngram_hashes"]
