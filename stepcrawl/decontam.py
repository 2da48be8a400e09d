"""Decontamination: drop or flag documents sharing word n-grams with evaluation sets.

The usual recipe (GPT-3, Llama, OLMo): normalise text exactly like dedup does
(``normalize_text``), cut it into word n-grams (13 by default) and look each up in the set of
n-grams of the evaluation data. ``NgramIndex`` keeps those n-grams as a sorted ``uint64``
array of their 64-bit hashes (8 bytes an n-gram, picklable, memory-mappable as ``.npy``), so
lookup is one vectorised ``searchsorted`` per document, and the same index serves the
curricula helper's per-phase contamination reports through ``count_overlap``.

Limit: an evaluation record shorter than ``n`` normalised words has no n-gram and cannot be
matched; the index counts them (``too_short``) so reports can say so.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from stepcrawl.dedup.normalize import GramSpans, ngram_hashes
from stepcrawl.document import Document
from stepcrawl.io import BadRecord, ShardWriter, atomic_path, iter_jsonl, read_documents
from stepcrawl.manifest import Accounting, StageManifest, clear_stage, config_hash, file_hash, manifest_hash
from stepcrawl.steps import DocumentStep, Drop, StepResult, run_steps

log = logging.getLogger(__name__)

# Fields of an evaluation record whose text is indexed (those present are concatenated).
DEFAULT_FIELDS = ("text", "question", "problem", "prompt", "context", "passage", "query", "answer", "solution")
MODES = ("drop", "flag")


def _record_text(obj: dict, fields: Sequence[str]) -> str:
    parts: list[str] = []
    for name in fields:
        value = obj.get(name)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, (list, tuple)):  # e.g. multiple-choice options
            parts.extend(v for v in value if isinstance(v, str))
    return "\n".join(parts)


def parse_eval_set(spec: str | os.PathLike) -> tuple[str, Path]:
    """``"name=path"`` or ``"path"`` (name = file name without .jsonl/.json/.parquet/.txt/.gz)
    → (name, path)."""
    spec = str(spec)
    name, sep, path = spec.partition("=")
    if not sep or os.sep in name:
        path, name = spec, Path(spec).name
        for suffix in (".gz", ".jsonl", ".json", ".parquet", ".txt"):
            name = name.removesuffix(suffix)
    return name, Path(path)


@dataclass
class NgramIndex:
    """Hashes of the word n-grams of an evaluation set (sorted, unique ``uint64``)."""

    name: str
    n: int
    hashes: np.ndarray
    n_records: int = 0
    too_short: int = 0
    sources: list[str] = field(default_factory=list)

    @classmethod
    def from_texts(cls, texts: Iterable[str], n: int = 13, name: str = "eval", batch: int = 1024) -> "NgramIndex":
        parts: list[np.ndarray] = []
        n_records = too_short = 0
        buf: list[str] = []

        def flush() -> None:
            nonlocal too_short
            spans = GramSpans(buf, n, full_only=True)
            too_short += len(buf) - len(np.unique(spans.doc))
            parts.append(np.unique(spans.fast_hash64()))
            buf.clear()

        for text in texts:
            n_records += 1
            buf.append(text)
            if len(buf) >= batch:
                flush()
        if buf:
            flush()
        hashes = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        return cls(name=name, n=n, hashes=hashes, n_records=n_records, too_short=too_short)

    @classmethod
    def from_jsonl(
        cls, path: str | os.PathLike, n: int = 13, fields: Sequence[str] = DEFAULT_FIELDS, name: str | None = None
    ) -> "NgramIndex":
        """Index a JSONL(.gz) evaluation file; a malformed line raises ``BadRecord`` (file:line),
        a record with none of ``fields`` raises too (the field names are probably wrong)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation set not found: {path}")

        def texts() -> Iterable[str]:
            for lineno, obj in iter_jsonl(path):
                text = _record_text(obj, fields)
                if not text:
                    raise BadRecord(str(path), lineno, f"record has none of the fields {list(fields)}")
                yield text

        index = cls.from_texts(texts(), n=n, name=name or parse_eval_set(path)[0])
        index.sources = [str(path)]
        return index

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, n: int = 13, fields: Sequence[str] = DEFAULT_FIELDS, name: str | None = None
    ) -> "NgramIndex":
        """Index an evaluation file by its type: JSONL(.gz)/JSON lines, Parquet (the string
        columns among ``fields``, concatenated per row) or plain text (one record per line)."""
        path = Path(path)
        name = name or parse_eval_set(path)[0]
        if path.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            if not path.is_file():
                raise FileNotFoundError(f"evaluation set not found: {path}")
            schema = pq.read_schema(path)
            cols = [f for f in fields if f in schema.names]
            if not cols:
                raise ValueError(f"{path}: none of the fields {list(fields)} among its columns {schema.names}")
            rows = pq.read_table(path, columns=cols).to_pylist()
            index = cls.from_texts((_record_text(r, cols) for r in rows), n=n, name=name)
        elif path.name.endswith((".txt", ".txt.gz")):
            import gzip

            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
                index = cls.from_texts((line for line in fh if line.strip()), n=n, name=name)
        else:
            return cls.from_jsonl(path, n=n, fields=fields, name=name)
        index.sources = [str(path)]
        return index

    def __len__(self) -> int:
        return len(self.hashes)

    def stats(self) -> dict[str, Any]:
        return {"n": self.n, "records": self.n_records, "too_short": self.too_short, "ngrams": len(self.hashes), "sources": self.sources}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, hashes=self.hashes, n=self.n, name=self.name, n_records=self.n_records, too_short=self.too_short)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NgramIndex":
        with np.load(path) as z:
            return cls(name=str(z["name"]), n=int(z["n"]), hashes=z["hashes"], n_records=int(z["n_records"]), too_short=int(z["too_short"]))


def _in_index(hashes: np.ndarray, index: NgramIndex) -> np.ndarray:
    """bool mask: which of ``hashes`` occur in ``index`` (one ``searchsorted``)."""
    if not len(hashes) or not len(index.hashes):
        return np.zeros(len(hashes), bool)
    pos = np.searchsorted(index.hashes, hashes)
    pos[pos == len(index.hashes)] = 0
    return index.hashes[pos] == hashes


def _distinct_matches(hashes: np.ndarray, index: NgramIndex) -> int:
    return int(len(np.unique(hashes[_in_index(hashes, index)])))


def count_overlap(text: str, index: NgramIndex) -> int:
    """Number of distinct word ``index.n``-grams of ``text`` that occur in the evaluation set."""
    return _distinct_matches(ngram_hashes(text, index.n), index)


def count_overlap_batch(texts: list[str], index: NgramIndex) -> np.ndarray:
    """``count_overlap`` for many texts at once (one vectorised pass): int64[len(texts)]."""
    spans = GramSpans(texts, index.n, full_only=True)
    hashes = spans.fast_hash64()
    out = np.zeros(len(texts), np.int64)
    hit = _in_index(hashes, index)
    doc, h = spans.doc[hit], hashes[hit]
    if not len(doc):
        return out
    order = np.lexsort((h, doc))  # by document, then hash: repeats become neighbours
    doc, h = doc[order], h[order]
    first = np.ones(len(doc), bool)
    first[1:] = (doc[1:] != doc[:-1]) | (h[1:] != h[:-1])
    return np.bincount(doc[first], minlength=len(texts)).astype(np.int64)


class DecontamStep(DocumentStep):
    """Drops (``decontam:<set>``) or flags documents with ≥ ``min_matches`` distinct n-grams
    in an evaluation set.

    ``mode="flag"`` keeps every document and writes ``quality["contam_ngrams"]`` (distinct
    matching n-grams over all sets, 0.0 when clean) and, when matched,
    ``meta["contam_sets"]``. Only the config is pickled; ``setup()`` builds the indexes.
    """

    name = "decontam"

    def __init__(
        self,
        eval_sets: Sequence[str | os.PathLike],
        n: int = 13,
        mode: str = "drop",
        min_matches: int = 1,
        fields: Sequence[str] = DEFAULT_FIELDS,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"decontam mode must be one of {MODES}, got {mode!r}")
        if n < 1 or min_matches < 1:
            raise ValueError("decontam: n and min_matches must be ≥ 1")
        specs = [str(s) for s in eval_sets]
        if not specs:
            raise ValueError("decontam: at least one evaluation set is needed")
        names = [parse_eval_set(s)[0] for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"decontam: evaluation set names must be unique, got {names} (use name=path)")
        super().__init__(eval_sets=specs, n=int(n), mode=mode, min_matches=int(min_matches), fields=list(fields))
        self.indexes: list[NgramIndex] = []

    def setup(self) -> None:
        c = self.config
        self.indexes = []
        for spec in c["eval_sets"]:
            name, path = parse_eval_set(spec)
            self.indexes.append(NgramIndex.from_file(path, n=c["n"], fields=c["fields"], name=name))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.indexes = []

    def process(self, doc: Document) -> StepResult:
        c = self.config
        hashes = ngram_hashes(doc.text, c["n"])  # once for all sets (they share n)
        counts = {ix.name: _distinct_matches(hashes, ix) for ix in self.indexes}
        hit = [name for name, k in counts.items() if k >= c["min_matches"]]
        if c["mode"] == "drop":
            return Drop(f"decontam:{hit[0]}") if hit else doc
        quality = {**doc.quality, "contam_ngrams": float(sum(counts.values()))}
        meta = {**doc.meta, "contam_sets": hit} if hit else doc.meta
        return doc.replace(quality=quality, meta=meta)


def run_decontam(
    docs_or_path,
    out_dir: str | os.PathLike,
    step: DecontamStep,
    keep_rejected: bool = False,
    shard_docs: int = 10_000,
    progress: bool = True,
    force: bool = False,
) -> StageManifest:
    """Run ``step`` over documents (path or Documents) into ``out_dir`` with a manifest.

    The config hash covers the evaluation files' contents, so an output is reused (unless
    ``force``) only when the step, the eval sets and the input manifest are all unchanged."""
    out = Path(out_dir)
    started = time.time()
    errors: list[str] = []  # malformed input records (FILE:ROW: why): counted, the rest goes on
    if isinstance(docs_or_path, (str, os.PathLike)):
        docs = read_documents(docs_or_path, on_error=lambda e: errors.append(str(e)))
        in_path = Path(docs_or_path)
        input_hash = manifest_hash(in_path) if in_path.is_dir() else None
    else:
        docs, input_hash = iter(docs_or_path), None
    eval_hashes = {}
    for spec in step.config["eval_sets"]:
        name, path = parse_eval_set(spec)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation set not found: {path}")
        eval_hashes[name] = file_hash(path)[:16]
    conf = {**step.describe(), "keep_rejected": keep_rejected, "eval_sha256": eval_hashes}
    chash = config_hash(conf)
    if not force and (old := StageManifest.reusable(out, chash, input_hash, "decontam")):
        log.info("decontam: %s is up to date; skipping", out)
        return old
    out.mkdir(parents=True, exist_ok=True)
    clear_stage(out)
    step.ensure_setup()  # up front: the manifest lists the indexes even for empty input
    acc = Accounting()
    rejected = ShardWriter(out / "rejected", "part", shard_docs, rejected=True) if keep_rejected else None
    on_drop = (lambda d, reason: rejected.write(d, reason)) if rejected is not None else None
    flagged: Counter = Counter()
    with ShardWriter(out, "part", shard_docs) as writer:
        for doc in run_steps(tqdm(docs, desc="decontam", unit="doc", disable=not progress or None), [step], acc, on_drop):
            flagged.update(doc.meta.get("contam_sets") or ())
            writer.write(doc)
    files = writer.files + (rejected.close() if rejected is not None else [])
    for e in errors:
        log.error("decontam: %s", e)
        acc.seen(0)
        acc.dropped("malformed", 0)
    manifest = StageManifest.from_shards(
        "decontam", conf, chash, input_hash, acc, folder=out, files=files, started=started,
        extra={"eval_sets": {ix.name: ix.stats() for ix in step.indexes}, "flagged": dict(sorted(flagged.items())),
               **({"n_malformed": len(errors), "errors": errors[:20]} if errors else {})},
    )
    manifest.write(out)
    return manifest
