"""Documents → token ids + per-token flags, and the parallel corpus encoder.

A document becomes ``<|meta|> meta-body <|/meta|> body </s>``:
- meta tokens are flagged ``META|LOSS`` (the trainer drops their loss when the curriculum says);
- body tokens are flagged ``LOSS`` where the document's spans carry loss (plain text: all);
- ``</s>`` closes every document and is a target (the model must learn to stop). No ``<s>``:
  in packed sequences the previous document's ``</s>`` already marks the boundary.

Structured documents (those with ``spans``) are encoded span by span, and role markers inside
them are inserted by id, so token masks line up with character spans exactly and markers are
never split. Plain documents are encoded in one batched sentencepiece call (the fast path).
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing as mp
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import sentencepiece as spm
from tqdm import tqdm

from stepcrawl.document import Document
from stepcrawl.errors import StepcrawlError
from stepcrawl.io import document_files, read_documents, read_json, write_json, write_parquet
from tokenizer import special
from tokenizer.indexed import IndexedDatasetWriter, token_dtype
from tokenizer.masks import LOSS, META
from tokenizer.meta import meta_body
from stepcrawl.faults import kill_point
from stepcrawl.manifest import file_hash
from tokenizer.train import TOKENIZER_INFO, TOKENIZER_MODEL

log = logging.getLogger(__name__)
T = TypeVar("T")

_MARKER_RE = re.compile("|".join(re.escape(m) for m in special.SPLIT_MARKERS))


class Tokenizer:
    """A trained tokenizer folder: sentencepiece model + ``tokenizer.json``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        model = self.folder / TOKENIZER_MODEL
        if not model.exists():
            raise FileNotFoundError(f"no tokenizer at {self.folder} (missing {TOKENIZER_MODEL}); run `stepcrawl train-tokenizer`")
        self.sp = spm.SentencePieceProcessor(model_file=str(model))
        info_path = self.folder / TOKENIZER_INFO
        self.info = read_json(info_path) if info_path.exists() else {"sha256": file_hash(model)}
        self.vocab_size = self.sp.get_piece_size()
        self.special_ids = {s: self.sp.piece_to_id(s) for s in special.CONTROL_SYMBOLS}
        self.id_to_special = {i: s for s, i in self.special_ids.items()}
        self.eos_id = self.sp.eos_id()
        self.pad_id = self.sp.pad_id()
        self.dtype = token_dtype(self.vocab_size)
        # Meta bodies repeat heavily (one per source × kind × lang × domain): cache their ids
        # so the meta string costs a dict lookup, not a sentencepiece call, per document.
        self._meta_cache: dict[str, list[int]] = {}

    @property
    def sha256(self) -> str:
        return self.info["sha256"]

    # -- text ------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        return self.sp.encode(text) if text else []

    def encode_with_markers(self, text: str) -> list[int]:
        """Encode text in which role/meta marker strings become their single control ids."""
        ids: list[int] = []
        pos = 0
        for m in _MARKER_RE.finditer(text):
            ids.extend(self.encode_text(text[pos : m.start()]))
            ids.append(self.special_ids[m.group(0)])
            pos = m.end()
        ids.extend(self.encode_text(text[pos:]))
        return ids

    def decode(self, ids) -> str:
        """Inverse of encoding: control ids are rendered as their marker strings, EOS as nothing."""
        out: list[str] = []
        run: list[int] = []
        for i in map(int, ids):
            if i in self.id_to_special or i == self.eos_id:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                out.append(self.id_to_special.get(i, ""))
            else:
                run.append(i)
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    # -- documents -------------------------------------------------------------------------
    _META_CACHE_MAX = 1 << 16

    def _meta_body_ids(self, body: str) -> list[int]:
        ids = self._meta_cache.get(body)
        if ids is None:
            if len(self._meta_cache) >= self._META_CACHE_MAX:  # bounded: many-domain crawls
                self._meta_cache.clear()
            ids = self._meta_cache[body] = [
                self.special_ids[special.META_OPEN], *self.encode_text(body), self.special_ids[special.META_CLOSE]
            ]
        return ids

    def body_ids(self, doc: Document) -> tuple[list[int], list[int]]:
        """Body ids and their flags, honouring spans (uncovered characters carry loss)."""
        if not doc.spans:
            ids = self.encode_text(doc.text)
            return ids, [LOSS] * len(ids)
        ids: list[int] = []
        flags: list[int] = []
        pos = 0
        for span in sorted(doc.spans, key=lambda s: (s.start, s.end)):
            start, end = max(span.start, pos), min(span.end, len(doc.text))
            if start > pos:  # gap between spans
                gap = self.encode_with_markers(doc.text[pos:start])
                ids += gap
                flags += [LOSS] * len(gap)
            if end > start:
                part = self.encode_with_markers(doc.text[start:end])
                ids += part
                flags += [LOSS if span.loss else 0] * len(part)
                pos = end
        if pos < len(doc.text):
            tail = self.encode_with_markers(doc.text[pos:])
            ids += tail
            flags += [LOSS] * len(tail)
        return ids, flags

    def _assemble(self, meta, body, body_flags=None) -> tuple[np.ndarray, np.ndarray]:
        """``meta + body + </s>`` as arrays, filled in place (one C-level conversion per part
        instead of a concatenated Python list); flags: META|LOSS on meta, the body's own
        (LOSS everywhere when None), LOSS on </s>."""
        m, n = len(meta), len(meta) + len(body) + 1
        ids = np.empty(n, dtype=self.dtype)
        ids[:m] = meta
        ids[m : n - 1] = body
        ids[n - 1] = self.eos_id
        flags = np.full(n, LOSS, dtype=np.uint8)
        flags[:m] |= META
        if body_flags is not None:
            flags[m : n - 1] = body_flags
        return ids, flags

    def encode_document(self, doc: Document, with_meta: bool = True) -> tuple[np.ndarray, np.ndarray]:
        meta = self._meta_body_ids(meta_body(doc)) if with_meta else ()
        body, body_flags = self.body_ids(doc)
        return self._assemble(meta, body, body_flags)

    def encode_documents(self, docs: list[Document], with_meta: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """Batch form: plain documents (no spans) go through one sentencepiece call."""
        plain = [i for i, d in enumerate(docs) if not d.spans]
        bodies = dict(zip(plain, self.sp.encode([docs[i].text for i in plain], num_threads=1))) if plain else {}
        results = []
        for i, d in enumerate(docs):
            if i in bodies:
                meta = self._meta_body_ids(meta_body(d)) if with_meta else ()
                results.append(self._assemble(meta, bodies[i]))
            else:
                results.append(self.encode_document(d, with_meta))
        return results


# ---------------------------------------------------------------------------------------------
# Parallel corpus encoding: one work unit per input file → one output shard (resumable).

DOCS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("lang", pa.string()),
        ("tier", pa.string()),
        ("cluster", pa.int64()),
        ("n_tokens", pa.int64()),
        ("n_chars", pa.int64()),
        ("url", pa.string()),
        ("warc_file", pa.string()),
        ("warc_offset", pa.int64()),
        ("meta", pa.string()),
    ]
)

MAX_LISTED_ERRORS = 20
SHARD_FILES = (".bin", ".idx", ".mask.bin", ".mask.idx", ".docs.parquet")


@dataclass(frozen=True)
class EncodeTask:
    source: str
    input_file: str
    out_prefix: str  # folder/part-NNNNN
    tokenizer_dir: str
    with_meta: bool = True
    batch_docs: int = 256
    # Route each document to ``<root>/<source>.<Tier>/part-NNNNN`` by its quality tier
    # (untiered documents stay in ``<root>/<source>/``); ``root`` is out_prefix's grandparent.
    split_tiers: bool = False


_WORKER_TOKENIZER: dict[tuple, Tokenizer] = {}


def _tokenizer(folder: str) -> Tokenizer:
    """One loaded tokenizer per process (and inherited by forked workers); keyed by the model
    file's identity so a tokenizer re-trained into the same folder is reloaded."""
    model = Path(folder) / TOKENIZER_MODEL
    try:
        st = model.stat()
        key: tuple = (str(folder), st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return Tokenizer(folder)  # raises the clear "no tokenizer at …" error
    if key not in _WORKER_TOKENIZER:
        _WORKER_TOKENIZER.clear()
        _WORKER_TOKENIZER[key] = Tokenizer(folder)
    return _WORKER_TOKENIZER[key]


def _done_path(prefix: str) -> Path:
    return Path(prefix + ".done.json")


_UNSAFE = re.compile(r"[^A-Za-z0-9_+-]")


def tier_dataset(source: str, tier: str | None) -> str:
    """Name of the per-tier token dataset (``web.High``, ``web.Medium-High``); untiered
    documents keep the source's own name."""
    return f"{source}.{_UNSAFE.sub('_', tier)}" if tier else source


def _split_done_path(task: EncodeTask) -> Path:
    # Not inside <source>/: with --split-tiers that folder may hold no dataset at all.
    prefix = Path(task.out_prefix)
    return prefix.parent.parent / "_split" / task.source / (prefix.name + ".done.json")


class _ShardOut:
    """The five files of one output shard (tokens, masks, docs.parquet) and its counts."""

    def __init__(self, prefix: str, dtype) -> None:
        self.prefix = prefix
        self.tokens = IndexedDatasetWriter(prefix, dtype=dtype)
        self.masks = IndexedDatasetWriter(prefix + ".mask", dtype=np.uint8)
        self.rows: list[dict] = []
        self.n_tokens = 0
        self.by_tier: dict[str, int] = {}

    def add(self, doc: Document, ids: np.ndarray, flags: np.ndarray) -> None:
        self.tokens.add(ids)
        self.masks.add(flags)
        self.n_tokens += len(ids)
        tier = doc.tier or "none"
        self.by_tier[tier] = self.by_tier.get(tier, 0) + len(ids)
        self.rows.append(
            {
                "doc_id": doc.id,
                "source": doc.source,
                "kind": doc.kind,
                "lang": doc.lang,
                "tier": doc.tier,
                "cluster": doc.cluster,
                "n_tokens": len(ids),
                "n_chars": doc.n_chars,
                "url": doc.url,
                "warc_file": doc.warc_file,
                "warc_offset": doc.warc_offset,
                "meta": json.dumps(doc.meta, ensure_ascii=False, sort_keys=True),
            }
        )

    def abort(self) -> None:
        self.tokens.abort()
        self.masks.abort()

    def close(self, input_file: str) -> dict:
        self.tokens.close()
        self.masks.close()
        write_parquet(self.prefix + ".docs.parquet", pa.Table.from_pylist(self.rows, schema=DOCS_SCHEMA))
        return {
            "name": Path(self.prefix).name,
            "input": input_file,
            "n_docs": len(self.rows),
            "n_tokens": self.n_tokens,
            "by_tier": self.by_tier,
            "sha256": {Path(self.prefix + ext).name: file_hash(self.prefix + ext) for ext in SHARD_FILES},
        }


def _remove_stale_temps(task: EncodeTask) -> None:
    """Delete the temporary files a killed run left for this shard (``.tmp-part-NNNNN.*`` of
    ``atomic_path``; SIGKILL runs no cleanup): the shard is encoded again from scratch, under new
    temporary names, so without this they would stay beside the finished dataset forever."""
    prefix = Path(task.out_prefix)
    folders = [prefix.parent]
    if task.split_tiers:  # the shard's tier datasets: <source>/ and <source>.<Tier>/
        root = prefix.parent.parent
        folders = [root / task.source, *root.glob(glob.escape(task.source) + ".*")]
    for folder in folders:
        for stale in folder.glob(f".tmp-{glob.escape(prefix.name)}.*") if folder.is_dir() else []:
            stale.unlink(missing_ok=True)


def encode_shard(task: EncodeTask) -> dict:
    """Encode one input file into ``out_prefix``.{bin,idx,mask.*,docs.parquet}; returns its
    record (also written as ``.done.json``, the resume marker, after every file is in place).

    With ``task.split_tiers`` the record is ``{"name", "input", "split": {dataset: record}}``,
    one shard per tier dataset that received documents (see ``tier_dataset``)."""
    done = _split_done_path(task) if task.split_tiers else _done_path(task.out_prefix)
    if done.exists():
        return read_json(done)
    tok = _tokenizer(task.tokenizer_dir)
    prefix = Path(task.out_prefix)
    _remove_stale_temps(task)
    outs: dict[str, _ShardOut] = {}
    if not task.split_tiers:
        outs[task.source] = _ShardOut(task.out_prefix, tok.dtype)

    def out_for(doc: Document) -> _ShardOut:
        if not task.split_tiers:
            return outs[task.source]
        name = tier_dataset(task.source, doc.tier)
        if name not in outs:  # opened lazily: a tier absent from this file gets no shard
            outs[name] = _ShardOut(str(prefix.parent.parent / name / prefix.name), tok.dtype)
        return outs[name]

    errors: list[str] = []  # malformed input records: FILE:LINE / FILE:ROW: reason
    try:
        batch: list[Document] = []

        def flush() -> None:
            for doc, (ids, flags) in zip(batch, tok.encode_documents(batch, task.with_meta)):
                out_for(doc).add(doc, ids, flags)
                kill_point("tokenize.document")  # kill matrix: mid-shard, its files half written
            batch.clear()

        for doc in read_documents(task.input_file, on_error=lambda e: errors.append(str(e))):
            batch.append(doc)
            if len(batch) >= task.batch_docs:
                flush()
        flush()
    except BaseException:
        for out in outs.values():
            out.abort()
        raise
    records = {name: out.close(task.input_file) for name, out in sorted(outs.items())}
    kill_point("tokenize.shard-written")  # kill matrix: shard files in place, .done.json not yet
    record = {"name": prefix.name, "input": task.input_file, "split": records} if task.split_tiers else records[task.source]
    # dropped input is recorded once per input file (on the unsplit record, or beside "split")
    record["n_malformed"] = len(errors)
    record["errors"] = errors[:MAX_LISTED_ERRORS]
    write_json(done, record)
    return record


def input_drops(records: list[dict]) -> dict:
    """The manifest fields for malformed input skipped while encoding (from the per-file
    records of ``encode_shard``): ``{"drops": {"malformed": n}, "errors": [FILE:LINE: why, …]}``,
    or nothing when every record was read. Public: the Beam pipeline writes the same fields."""
    n = sum(int(r.get("n_malformed") or 0) for r in records)
    if not n:
        return {}
    return {"drops": {"malformed": n}, "errors": [e for r in records for e in r.get("errors", [])][:MAX_LISTED_ERRORS]}


def _encode_shard_in_worker(task: EncodeTask) -> tuple[str, object]:
    """``encode_shard`` for a pool worker: any failure comes back as a plain string, which
    always pickles (an exception that cannot be pickled back would leave the pool waiting)."""
    try:
        return "ok", encode_shard(task)
    except Exception as exc:  # noqa: BLE001 — re-raised in the parent, with the file named
        msg = str(exc) or type(exc).__name__
        return "error", msg if task.input_file in msg else f"{task.input_file}: {type(exc).__name__}: {msg}"


def corpus_sources(corpus: str | os.PathLike) -> dict[str, Path]:
    """Source name → folder. A corpus is a folder of per-source folders; a folder that directly
    holds Parquet/JSONL files is a single source named after the folder."""
    root = Path(corpus)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {root}")
    direct = [f for f in root.iterdir() if f.is_file() and f.name.endswith((".parquet", ".jsonl", ".jsonl.gz"))]
    if direct:
        return {root.name: root}
    sources = {
        d.name: d
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(("_", ".")) and d.name != "rejected" and document_files(d)
    }
    if not sources:
        raise ValueError(f"{root}: no source folders with Parquet/JSONL documents")
    return sources


def select_sources(all_sources: dict[str, T], sources: list[str] | None = None) -> dict[str, T]:
    """``all_sources`` (name → folder, as from :func:`corpus_sources`) limited to ``sources``
    (all when None or empty), in the corpus order; a name the corpus lacks is an error."""
    if not sources:
        return all_sources
    unknown = sorted(set(sources) - set(all_sources))
    if unknown:
        raise ValueError(f"unknown sources {unknown}; the corpus has {sorted(all_sources)}")
    return {k: v for k, v in all_sources.items() if k in sources}


def tokenize_corpus(
    corpus: str | os.PathLike,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int = 1,
    sources: list[str] | None = None,
    with_meta: bool = True,
    progress: bool = True,
    split_tiers: bool = False,
) -> dict[str, dict]:
    """Encode every source of ``corpus`` into ``out_dir/<source>/``; returns manifests by
    dataset name (the source, or with ``split_tiers`` ``<source>.<Tier>`` per quality tier plus
    ``<source>`` for untiered documents, each a complete token dataset with its manifest).

    Work units are input files; finished units (``.done.json``) are skipped on re-run, so a
    killed job resumes where it stopped. Manifests are written last.
    """
    tok = _tokenizer(str(tokenizer_dir))  # loaded once: forked workers inherit it
    all_sources = select_sources(corpus_sources(corpus), sources)
    tasks: list[EncodeTask] = []
    for name, folder in all_sources.items():
        for i, f in enumerate(document_files(folder)):
            prefix = str(Path(out_dir) / name / f"part-{i:05d}")
            tasks.append(EncodeTask(name, str(f), prefix, str(tokenizer_dir), with_meta, split_tiers=split_tiers))
        if not split_tiers:
            (Path(out_dir) / name).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    records: dict[str, list[dict]] = {} if split_tiers else {name: [] for name in all_sources}
    parent: dict[str, str] = {name: name for name in all_sources}

    bad: dict[str, list[dict]] = {}  # source → records of its input files with malformed input

    def collect(task: EncodeTask, rec: dict) -> None:
        # malformed input of a file belongs to the source's own dataset (for split tiers: the
        # untiered <source> name), so each is counted once
        if rec.get("n_malformed"):
            bad.setdefault(task.source, []).append(rec)
        if not split_tiers:
            records[task.source].append(rec)
            return
        for dataset, r in rec["split"].items():
            records.setdefault(dataset, []).append(r)
            parent[dataset] = task.source

    bar = tqdm(total=len(tasks), desc="tokenize", unit="shard", disable=not progress)
    if workers <= 1:
        for task in tasks:
            collect(task, encode_shard(task))
            bar.update()
    else:
        # concurrent.futures, not multiprocessing.Pool: a worker that dies (OOM killer, segfault)
        # raises BrokenProcessPool here instead of hanging the parent forever.
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for task, (status, rec) in zip(tasks, pool.map(_encode_shard_in_worker, tasks)):
                    if status != "ok":
                        pool.shutdown(wait=False, cancel_futures=True)  # drop queued work: fail fast
                        raise StepcrawlError(str(rec))
                    collect(task, rec)
                    bar.update()
        except BrokenProcessPool as exc:
            raise StepcrawlError(f"a tokenize worker died ({exc}); re-run to resume from the finished shards") from None
    bar.close()
    # the dataset whose manifest reports a source's malformed input: the source's own, else
    # (split tiers, no untiered documents) its first tier dataset
    for src in list(bad):
        owner = src if src in records else min((d for d in records if parent.get(d) == src), default=None)
        if owner is not None and owner != src:
            bad[owner] = bad.pop(src)
    manifests = {}
    for name, recs in sorted(records.items()):
        by_tier: dict[str, int] = {}
        for r in recs:
            for tier, n in r["by_tier"].items():
                by_tier[tier] = by_tier.get(tier, 0) + n
        manifest = {
            "source": name,
            "corpus": str(all_sources[parent[name]]),
            "tokenizer": {"path": str(tokenizer_dir), "sha256": tok.sha256, "vocab_size": tok.vocab_size},
            "dtype": np.dtype(tok.dtype).name,
            "with_meta": with_meta,
            "n_docs": sum(r["n_docs"] for r in recs),
            "n_tokens": sum(r["n_tokens"] for r in recs),
            "by_tier": dict(sorted(by_tier.items())),
            "shards": [{k: r[k] for k in ("name", "n_docs", "n_tokens", "sha256")} for r in recs],
            **input_drops(bad.get(name, [])),
            "wall_time_s": round(time.time() - t0, 3),
        }
        if split_tiers:
            manifest["split_of"] = parent[name]
            tiers = [t for t in by_tier if t != "none"]
            manifest["tier"] = tiers[0] if name != parent[name] and len(tiers) == 1 else None
        write_json(Path(out_dir) / name / "manifest.json", manifest)
        manifests[name] = manifest
    return manifests


def verify_shards(source_dir: str | os.PathLike) -> list[str]:
    """Re-hash every shard file of a source against its manifest; returns mismatching files."""
    folder = Path(source_dir)
    manifest = read_json(folder / "manifest.json")
    bad = []
    for shard in manifest["shards"]:
        for fname, digest in shard["sha256"].items():
            if not (folder / fname).exists() or file_hash(folder / fname) != digest:
                bad.append(fname)
    return bad
