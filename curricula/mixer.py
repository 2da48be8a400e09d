"""build-mix: materialise every phase of a stage as packed, fixed-length training sequences.

Pipeline per phase (small pure pieces, one thin executor):

1. **Allocate** (``planner.phase_allocation``): entry → exact tokens (main + replay), summing
   to the scaled phase budget; the whole curriculum is checked against the token manifests
   first, so a bad curriculum fails before any work.
2. **Draw** (``EntryStream``): each source entry walks its source's documents in a seeded
   Feistel order (one fresh key per epoch, O(1) memory), skipping documents its filters reject
   (tiers, ``long_docs``, cluster down-sampling), until it has emitted exactly its allocation;
   the last document is cut to the exact remainder.
3. **Interleave** (``interleave``): always take the next document from the entry that is
   furthest behind its target (smallest emitted/target, ties by mixture order): stride
   scheduling, so *every prefix* of the phase tracks the mixture, not just the total.
4. **Pack** (``Packer``): documents are concatenated (each keeps its own EOS from the token
   shards); a document that does not fit the space left is split at the sequence boundary and
   continues at position 0 of the next sequence (the trainer restarts positions per segment);
   the final sequence is padded with the PAD id, mask PAD, as its own last segment.
5. **Write**: ``tokens``/``mask``/``segments`` indexed datasets, ``lineage.parquet`` (one row
   per document piece) and ``manifest.json`` into a temporary folder renamed into place when
   complete. A phase whose folder already holds a manifest with the same config hash is
   skipped, so a re-run resumes after the last finished phase.

Memory is bounded independently of corpus size: tokens are read by mmap one document at a
time, document order is computed (not stored), and filters cost one byte per document of a
filtered source.
"""

from __future__ import annotations

import heapq
import json
import logging
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curricula.contamination import ContaminationCounter, load_eval_sets
from curricula.permute import FeistelPermutation, derive_key, uniform
from curricula.planner import (
    SourceManifest,
    parse_scale,
    phase_allocation,
    plan,
    read_source_manifest,
    scaled,
)
from curricula.schema import Curriculum, CurriculumError, Phase, SourceSpec, load_curriculum
from stepcrawl.faults import kill_point
from stepcrawl.io import write_json
from stepcrawl.manifest import config_hash
from tokenizer.indexed import IndexedDataset, IndexedDatasetWriter
from tokenizer.masks import PAD
from tokenizer.special import PAD_ID

log = logging.getLogger(__name__)

LINEAGE_SCHEMA = pa.schema(
    [
        ("sequence", pa.int64()),
        ("segment", pa.int32()),
        ("source", pa.string()),
        ("entry", pa.string()),
        ("shard", pa.string()),
        ("doc_index", pa.int64()),
        ("doc_id", pa.string()),
        ("token_start", pa.int64()),
        ("token_end", pa.int64()),
    ]
)

# Realised mixture tolerance: each entry emits exactly its allocation, which is within one
# token of weight × budget, so whole-phase shares are within 1/budget of the targets; any
# *prefix* of the phase deviates by at most (longest document) / (prefix tokens).


def pad_id(tokenizer_info: dict) -> int:
    """The PAD id a mix is padded with (and records in its manifest): the tokenizer's own,
    else the reserved ``tokenizer.special.PAD_ID``. Public: the Beam pipeline uses it too."""
    return int(tokenizer_info.get("pad_id", PAD_ID))


# --------------------------------------------------------------------------------------------
# integrity: what the token manifests promise, checked once before use
# --------------------------------------------------------------------------------------------

VERIFY_CACHE = ".sha256-verified.json"


def verify_source_files(manifest: SourceManifest) -> int:
    """Check every shard file of a token source against the sha256 its manifest records;
    returns how many files were hashed (0 when all were already verified).

    Hashing a large corpus on every build-mix would cost more than the mix, so a file verified
    once is remembered in ``TOKENS/<source>/.sha256-verified.json`` by (size, mtime_ns, digest):
    a file rewritten since (same size or not) has a new mtime and is hashed again; a manifest
    that now promises another digest is re-checked too. A read-only token folder just means no
    cache. A missing file, a file whose bytes differ, or a manifest without checksums is refused
    with a CurriculumError naming the file."""
    from stepcrawl.io import read_json
    from stepcrawl.manifest import file_hash

    folder = manifest.path
    cache_path = folder / VERIFY_CACHE
    try:
        cache = read_json(cache_path) if cache_path.exists() else {}
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}  # a damaged cache only costs a re-hash
    hashed = 0
    for shard in manifest.shards:
        digests = shard.get("sha256") if isinstance(shard, dict) else None
        if not isinstance(digests, dict) or not digests:
            raise CurriculumError(f"{folder / 'manifest.json'}: shard {shard.get('name') if isinstance(shard, dict) else shard!r} "
                                  f"records no sha256; re-run `stepcrawl tokenize`")
        for fname, digest in sorted(digests.items()):
            f = folder / fname
            try:
                st = f.stat()
            except OSError:
                raise CurriculumError(f"{f}: missing (listed in {folder / 'manifest.json'})") from None
            key = [st.st_size, st.st_mtime_ns, digest]
            if cache.get(fname) == key:
                continue
            actual = file_hash(f)
            hashed += 1
            if actual != digest:
                raise CurriculumError(f"{f}: sha256 {actual[:16]}… does not match {digest[:16]}… recorded in "
                                      f"{folder / 'manifest.json'} (changed or corrupt); re-run `stepcrawl tokenize`")
            cache[fname] = key
    if hashed:
        try:
            write_json(cache_path, cache)
        except OSError:
            log.info("%s: cannot write the verification cache (read-only?); files will be re-hashed next time", folder)
    return hashed


def check_token_ids(tokens: np.ndarray, vocab_size: int | None, where: str) -> None:
    """Refuse a document holding a token id outside ``[0, vocab_size)``: corrupt bytes that a
    checksum did not catch (or a shard from another tokenizer) must not reach the trainer."""
    if not vocab_size or not len(tokens):
        return
    hi = int(tokens.max())
    if hi >= vocab_size or (tokens.dtype.kind == "i" and int(tokens.min()) < 0):
        bad = hi if hi >= vocab_size else int(tokens.min())
        raise CurriculumError(f"{where}: token id {bad} outside the tokenizer's vocabulary of {vocab_size}")


# --------------------------------------------------------------------------------------------
# reading one source's shards
# --------------------------------------------------------------------------------------------


def _plain_view(ds: IndexedDataset) -> np.ndarray:
    """A plain ndarray over the shard's ``.bin`` mmap (slicing an ``np.memmap`` builds a new
    memmap object per call, ~10x slower in the per-document loop)."""
    if ds.n_elements == 0:
        return np.empty(0, dtype=ds.dtype)
    return np.memmap(ds.bin_path, mode="r", dtype=ds.dtype).view(np.ndarray)


class SourceReader:
    """mmap access to the documents of ``TOKENS/<source>/`` by global document index."""

    def __init__(self, manifest: SourceManifest) -> None:
        self.manifest = manifest
        self.path = manifest.path
        self.shards = [s["name"] for s in manifest.shards]
        if not self.shards:
            raise CurriculumError(f"{self.path}/manifest.json: source {manifest.source!r} lists no shards")
        self.tokens = [IndexedDataset(self.path / s) for s in self.shards]
        self.masks = [IndexedDataset(self.path / f"{s}.mask") for s in self.shards]
        for s, t, m in zip(self.shards, self.tokens, self.masks):
            if not np.array_equal(t.sizes, m.sizes):
                raise CurriculumError(f"{self.path / s}: mask lengths differ from token lengths")
        counts = np.array([len(t) for t in self.tokens], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.n_docs = int(self.offsets[-1])
        self._columns: OrderedDict[tuple[int, str], pa.Array] = OrderedDict()
        # plain ndarray views of the mmaps: slicing an np.memmap builds a memmap per call
        self._tok_bins = [_plain_view(t) for t in self.tokens]
        self._mask_bins = [_plain_view(m) for m in self.masks]
        self._tok_ptr = [t.pointers for t in self.tokens]
        self._mask_ptr = [m.pointers for m in self.masks]

    def locate(self, idx: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self.offsets, idx, side="right") - 1)
        return shard, idx - int(self.offsets[shard])

    def length(self, idx: int) -> int:
        s, i = self.locate(idx)
        return int(self.tokens[s].sizes[i])

    def sizes(self, shard: int) -> np.ndarray:
        return np.asarray(self.tokens[shard].sizes)

    def column(self, shard: int, name: str) -> pa.Array:
        """One column of a shard's docs.parquet as an Arrow array (compact: strings stay in
        Arrow buffers, not Python objects), LRU-cached for the most recent shards."""
        key = (shard, name)
        if key in self._columns:
            self._columns.move_to_end(key)
            return self._columns[key]
        f = self.path / f"{self.shards[shard]}.docs.parquet"
        if not f.exists():
            raise CurriculumError(f"{f}: missing (needed for column {name!r})")
        values = pq.read_table(f, columns=[name]).column(name).combine_chunks()
        if len(values) != len(self.tokens[shard]):
            raise CurriculumError(f"{f}: {len(values)} rows but {len(self.tokens[shard])} documents")
        self._columns[key] = values
        while len(self._columns) > 64:
            self._columns.popitem(last=False)
        return values

    def read(self, idx: int, start: int, end: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Tokens and mask flags ``[start, end)`` of document ``idx``; plus (shard, index)."""
        s, i = self.locate(idx)
        off = int(self._tok_ptr[s][i]) // self._tok_bins[s].itemsize
        moff = int(self._mask_ptr[s][i])
        return (self._tok_bins[s][off + start : off + end], self._mask_bins[s][moff + start : moff + end], s, i)


def _clusters(reader: SourceReader, shard: int) -> np.ndarray:
    """The shard's ``cluster`` column as float64 (NaN = no cluster)."""
    col = reader.column(shard, "cluster")
    return np.asarray(col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def eligible_tokens(reader: SourceReader, elig: np.ndarray | None) -> int:
    """Tokens in the documents ``elig`` marks (all documents when None)."""
    total = 0
    for s in range(len(reader.shards)):
        sizes = np.asarray(reader.sizes(s), dtype=np.int64)
        total += int(sizes.sum() if elig is None else sizes[elig[int(reader.offsets[s]) : int(reader.offsets[s + 1])]].sum())
    return total


def filter_eligibility(reader: SourceReader, spec: SourceSpec) -> np.ndarray | None:
    """Which documents pass the entry's ``tiers`` / ``long_docs`` filters (bool per document),
    or None when the entry has neither."""
    if spec.tiers is None and spec.long_docs is None:
        return None
    parts = []
    for s in range(len(reader.shards)):
        keep = np.ones(len(reader.tokens[s]), dtype=bool)
        if spec.long_docs is not None:
            keep &= reader.sizes(s) >= spec.long_docs.min_tokens
        if spec.tiers is not None:
            hit = pc.is_in(reader.column(s, "tier"), value_set=pa.array(spec.tiers, pa.string()))
            keep &= hit.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        parts.append(keep)
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def cluster_downsample(reader: SourceReader, base: np.ndarray | None, downsample: float, key: int) -> np.ndarray:
    """``base`` (None: every document) with heavy clusters thinned: a cluster holding a share
    s > ``downsample`` of the entry's (filtered) tokens keeps each of its documents with
    probability downsample / s, decided by a seeded hash of the document index (deterministic,
    order-free). Documents without a cluster stay. ``base`` is not modified."""
    elig = np.ones(reader.n_docs, dtype=bool) if base is None else base.copy()
    totals: dict[int, int] = {}
    for s in range(len(reader.shards)):
        lo = int(reader.offsets[s])
        sel = elig[lo : lo + len(reader.tokens[s])]
        clusters = _clusters(reader, s)
        m = sel & ~np.isnan(clusters)
        if m.any():
            uniq, inv = np.unique(clusters[m].astype(np.int64), return_inverse=True)
            sums = np.bincount(inv, weights=reader.sizes(s)[m].astype(np.float64))
            for c, t in zip(uniq.tolist(), sums.tolist()):
                totals[c] = totals.get(c, 0) + int(t)
    grand = eligible_tokens(reader, elig)
    heavy = {c: downsample * grand / t for c, t in totals.items() if grand and t / grand > downsample}
    if heavy:
        heavy_ids = np.array(sorted(heavy), dtype=np.int64)
        heavy_p = np.array([heavy[c] for c in heavy_ids.tolist()])
        for s in range(len(reader.shards)):
            lo, hi = int(reader.offsets[s]), int(reader.offsets[s + 1])
            clusters = _clusters(reader, s)
            p_keep = np.ones(hi - lo)
            valid = np.flatnonzero(~np.isnan(clusters))
            cl = clusters[valid].astype(np.int64)
            pos = np.minimum(np.searchsorted(heavy_ids, cl), len(heavy_ids) - 1)
            hit = heavy_ids[pos] == cl
            p_keep[valid[hit]] = heavy_p[pos[hit]]
            u = uniform(key, np.arange(lo, hi))
            elig[lo:hi] &= u < p_keep
    return elig


def eligibility(reader: SourceReader, spec: SourceSpec, downsample: float | None, key: int) -> np.ndarray | None:
    """Which documents an entry may draw (bool per document), or None when all may: its
    filters, then cluster down-sampling (``cluster_downsample``) when ``downsample`` is set."""
    base = filter_eligibility(reader, spec)
    return base if downsample is None else cluster_downsample(reader, base, downsample, key)


def downsample_report(reader: SourceReader, before: np.ndarray | None, after: np.ndarray | None) -> dict:
    """What cluster down-sampling did to one entry: documents and tokens eligible before and
    after, and how many of them carry a cluster at all (a source without ``cluster``
    annotations passes through unchanged, which the report makes visible)."""
    n_before = n_after = t_before = t_after = clustered = 0
    for s in range(len(reader.shards)):
        lo, hi = int(reader.offsets[s]), int(reader.offsets[s + 1])
        sizes = np.asarray(reader.sizes(s), dtype=np.int64)
        b = np.ones(hi - lo, bool) if before is None else before[lo:hi]
        a = np.ones(hi - lo, bool) if after is None else after[lo:hi]
        n_before, n_after = n_before + int(b.sum()), n_after + int(a.sum())
        t_before, t_after = t_before + int(sizes[b].sum()), t_after + int(sizes[a].sum())
        clustered += int((b & ~np.isnan(_clusters(reader, s))).sum())
    return {"docs_before": n_before, "docs_kept": n_after, "docs_with_cluster": clustered,
            "tokens_before": t_before, "tokens_kept": t_after}


# --------------------------------------------------------------------------------------------
# drawing documents
# --------------------------------------------------------------------------------------------


@dataclass
class Piece:
    """A document (or its cut-off head) drawn by an entry."""

    entry: str
    source: str
    doc: int  # global document index in the source
    start: int
    end: int


class EntryStream:
    """Documents of one entry in seeded epoch order, up to exactly ``target`` tokens."""

    def __init__(self, entry: str, reader: SourceReader, elig: np.ndarray | None, target: int,
                 key: int, max_epochs: float, where: str) -> None:
        self.entry, self.reader, self.elig, self.target = entry, reader, elig, target
        self.key, self.max_epochs, self.where = key, max_epochs, where
        self.emitted = 0
        self.epoch = 0
        self.docs_drawn = 0
        self.supply = self._supply()
        self._iter = self._order()

    def _supply(self) -> int:
        """Tokens this entry can draw after its filters (cluster down-sampling included)."""
        return eligible_tokens(self.reader, self.elig)

    def check_cap(self) -> None:
        """Fail before packing when the target needs more epochs than the cap allows (the
        planner checks the manifests; this re-checks after cluster down-sampling)."""
        if self.target and (self.supply == 0 or Fraction(self.target, self.supply) > Fraction(str(self.max_epochs))):
            epochs = f"{self.target / self.supply:.3g}" if self.supply else "inf"
            raise CurriculumError(
                f"{self.where}: mixture.{self.entry}: needs {self.target} tokens = {epochs} epochs of the "
                f"{self.supply} tokens left after filters, over max_epochs {self.max_epochs}"
            )

    def _order(self) -> Iterator[int]:
        while True:
            perm = FeistelPermutation(self.reader.n_docs, derive_key(self.key, "epoch", self.epoch))
            found = False
            for chunk in perm.chunks(8192):
                if self.elig is not None:
                    chunk = chunk[self.elig[chunk]]
                for d in chunk.tolist():
                    found = True
                    yield d
            if not found:
                raise CurriculumError(f"{self.where}: mixture.{self.entry}: no document passes the entry's filters")
            self.epoch += 1

    @property
    def done(self) -> bool:
        return self.emitted >= self.target

    def next_piece(self) -> Piece:
        while True:
            d = next(self._iter)
            n = self.reader.length(d)
            if n > 0:
                break
        take = min(n, self.target - self.emitted)
        self.emitted += take
        self.docs_drawn += 1
        return Piece(self.entry, self.reader.manifest.source, d, 0, take)


def interleave(streams: list[EntryStream]) -> Iterator[Piece]:
    """Stride scheduling over token targets: next piece from the entry with the smallest
    emitted/target ratio (ties: mixture order)."""
    # float keys: exact Fractions cost ~5x more per comparison, and a float ratio is
    # deterministic (IEEE) - it only decides which entry goes next, never a token count.
    heap = [(0.0, i) for i, s in enumerate(streams) if s.target > 0]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        s = streams[i]
        piece = s.next_piece()
        yield piece
        if not s.done:
            heapq.heappush(heap, (s.emitted / s.target, i))


# --------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------


@dataclass
class Packer:
    """Greedy packing into ``seq_len`` sequences, written straight to indexed datasets."""

    folder: Path
    seq_len: int
    dtype: np.dtype
    pad_id: int
    pad_flag: int
    tokens_w: IndexedDatasetWriter = field(init=False)
    mask_w: IndexedDatasetWriter = field(init=False)
    seg_w: IndexedDatasetWriter = field(init=False)

    def __post_init__(self) -> None:
        self.tokens_w = IndexedDatasetWriter(self.folder / "tokens", dtype=self.dtype.type)
        self.mask_w = IndexedDatasetWriter(self.folder / "mask", dtype=np.uint8)
        self.seg_w = IndexedDatasetWriter(self.folder / "segments", dtype=np.int32)
        self.buf = np.empty(self.seq_len, dtype=self.dtype)
        self.mbuf = np.empty(self.seq_len, dtype=np.uint8)
        self.fill = 0
        self.segments: list[int] = []
        self.n_sequences = 0
        self.pad_tokens = 0
        self.lineage_rows: dict[str, list] = {k: [] for k in LINEAGE_SCHEMA.names}
        self._lineage_writer = pq.ParquetWriter(self.folder / "lineage.parquet", LINEAGE_SCHEMA, compression="zstd")

    def add(self, piece: Piece, tokens: np.ndarray, mask: np.ndarray, shard: str, doc_index: int, doc_id: str) -> None:
        off, n = 0, len(tokens)
        while off < n:
            take = min(self.seq_len - self.fill, n - off)
            self.buf[self.fill : self.fill + take] = tokens[off : off + take]
            self.mbuf[self.fill : self.fill + take] = mask[off : off + take]
            r = self.lineage_rows
            r["sequence"].append(self.n_sequences)
            r["segment"].append(len(self.segments))
            r["source"].append(piece.source)
            r["entry"].append(piece.entry)
            r["shard"].append(shard)
            r["doc_index"].append(doc_index)
            r["doc_id"].append(doc_id)
            r["token_start"].append(piece.start + off)
            r["token_end"].append(piece.start + off + take)
            self.segments.append(take)
            self.fill += take
            off += take
            if self.fill == self.seq_len:
                self._flush()

    def _flush(self) -> None:
        self.tokens_w.add(self.buf)
        self.mask_w.add(self.mbuf)
        self.seg_w.add(np.asarray(self.segments, dtype=np.int32))
        self.n_sequences += 1
        self.fill = 0
        self.segments = []
        if len(self.lineage_rows["sequence"]) >= 65536:
            self._write_lineage()

    def _write_lineage(self) -> None:
        if self.lineage_rows["sequence"]:
            self._lineage_writer.write_table(pa.table(self.lineage_rows, schema=LINEAGE_SCHEMA))
            self.lineage_rows = {k: [] for k in LINEAGE_SCHEMA.names}

    def close(self) -> None:
        if self.fill:
            pad = self.seq_len - self.fill
            self.buf[self.fill :] = self.pad_id
            self.mbuf[self.fill :] = self.pad_flag
            self.segments.append(pad)
            self.pad_tokens += pad
            self.fill = self.seq_len
            self._flush()
        self._write_lineage()
        self._lineage_writer.close()
        for w in (self.tokens_w, self.mask_w, self.seg_w):
            w.close()

    def abort(self) -> None:
        for w in (self.tokens_w, self.mask_w, self.seg_w):
            w.abort()
        try:
            self._lineage_writer.close()
        except Exception:  # noqa: BLE001 — best effort while unwinding another error
            pass


# --------------------------------------------------------------------------------------------
# the executor
# --------------------------------------------------------------------------------------------


def sources_needed(cur: Curriculum, phases: list[Phase], scale: Fraction) -> list[str]:
    """The token sources ``phases`` draw from, sorted: those with a non-zero allocation (main
    or replay) in ``phase_allocation``. Public so the Beam pipeline reads the same sources."""
    return sorted({cur.sources[e].source for p in phases for e, (m, r) in phase_allocation(cur, p, scale).items() if m + r})


def select_phases(cur: Curriculum, stage: str, phases: list[str] | None = None) -> list[Phase]:
    """The phases of ``stage`` to build, in curriculum order: all, or those named in
    ``phases``; a name the stage does not have is an error (a typo must not build nothing)."""
    st = cur.stage(stage)
    todo = [p for p in st.phases if phases is None or p.name in phases]
    if phases:
        missing = sorted(set(phases) - {p.name for p in st.phases})
        if missing:
            raise CurriculumError(f"stage {stage!r}: no phase(s) {missing}")
    return todo


def phase_config(cur: Curriculum, phase: Phase, scale: Fraction, seed: int, manifests: dict[str, SourceManifest],
                 eval_sets: list[str], ngram: int) -> dict:
    """Everything a phase's output depends on (its hash decides skip-on-resume)."""
    alloc = phase_allocation(cur, phase, scale)
    return {
        "phase": phase.model_dump(mode="json", by_alias=True),
        "sources": {e: cur.sources[e].model_dump(mode="json") for e in alloc},
        "allocation": {e: list(v) for e, v in alloc.items()},
        "epoch_caps": {e: cur.epoch_cap(phase, e) for e in alloc},
        "scale": str(scale),
        "seed": seed,
        "token_manifests": {
            s: {"n_docs": m.n_docs, "n_tokens": m.n_tokens,
                "shards": [(x.get("name"), x.get("sha256")) for x in m.shards]}
            for s, m in sorted(manifests.items())
            if s in {cur.sources[e].source for e in alloc}
        },
        "eval_sets": [(str(p), Path(p).stat().st_size if Path(p).exists() else None) for p in eval_sets],
        "ngram": ngram,
        "format": 1,
    }


def build_phase(cur: Curriculum, stage_name: str, phase: Phase, readers: dict[str, SourceReader],
                out: Path, scale: Fraction, seed: int, counter: ContaminationCounter | None,
                config: dict, progress: bool = True) -> dict:
    """Materialise one phase into ``out/<phase.name>/`` atomically; returns its manifest."""
    from tqdm import tqdm

    where = f"stage {stage_name!r} / phase {phase.name!r}"
    alloc = phase_allocation(cur, phase, scale)
    total = scaled(phase.tokens, scale)
    dtypes = {np.dtype(r.tokens[0].dtype) for r in readers.values()}
    if len(dtypes) > 1:
        raise CurriculumError(f"{where}: token shards have different dtypes {sorted(map(str, dtypes))}")
    dtype = dtypes.pop() if dtypes else np.dtype(np.int32)  # no reader: an empty (scaled-to-0) phase
    tok_info = next(iter(readers.values())).manifest.tokenizer if readers else {}
    vocab_size = tok_info.get("vocab_size")
    t0 = time.time()
    streams: list[EntryStream] = []
    downsampled: dict[str, dict] = {}
    for entry, (main, rep) in alloc.items():
        if main + rep == 0:  # nothing to draw (tiny --scale): its source may not even be read
            continue
        spec = cur.sources[entry]
        reader = readers[spec.source]
        key = derive_key(seed, phase.name, entry)
        elig = filter_eligibility(reader, spec)
        if phase.cluster_downsample is not None:  # report against the filtered set, computed once
            base, elig = elig, cluster_downsample(reader, elig, phase.cluster_downsample.max_share,
                                                  derive_key(seed, "cluster", phase.name, entry))
            downsampled[entry] = downsample_report(reader, base, elig)
        streams.append(EntryStream(entry, reader, elig, main + rep, key, cur.epoch_cap(phase, entry), where))
        streams[-1].check_cap()
    final = out / phase.name
    tmp = out / f".tmp-{phase.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    packer = Packer(tmp, phase.seq_len, dtype, pad_id(tok_info), PAD)
    bar = tqdm(total=total, desc=f"build-mix {phase.name}", unit="tok", unit_scale=True, disable=not progress)
    try:
        for piece in interleave(streams):
            reader = readers[piece.source]
            toks, mask, s, i = reader.read(piece.doc, piece.start, piece.end)
            check_token_ids(toks, vocab_size, f"{reader.path / reader.shards[s]}.bin: document {i}")
            doc_id = str(reader.column(s, "doc_id")[i].as_py())
            if counter is not None:
                counter.add(piece.entry, toks)
            packer.add(piece, toks, mask, reader.shards[s], i, doc_id)
            bar.update(len(toks))
        packer.close()
    except BaseException:
        packer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    emitted = {e: 0 for e in alloc} | {s.entry: s.emitted for s in streams}
    assert sum(emitted.values()) == total, (emitted, total)
    by_source: dict[str, int] = {}
    for s in streams:
        by_source[s.reader.manifest.source] = by_source.get(s.reader.manifest.source, 0) + s.emitted
    # target = the declared mixture with replay folded in (exact fractions); realised = what was
    # written. Largest-remainder allocation puts every entry within one token of its quota.
    effective = cur.effective_mixture(phase.name)
    target_share = {e: float(effective.get(e, 0)) for e in alloc}
    realised_share = {e: emitted[e] / total if total else 0.0 for e in alloc}
    manifest = {
        "phase": phase.name,
        "stage": stage_name,
        "seq_len": phase.seq_len,
        "n_sequences": packer.n_sequences,
        "tokens": total,
        "pad_tokens": packer.pad_tokens,
        "tokens_by_source": dict(sorted(by_source.items())),
        "tokens_by_entry": emitted,
        "mixture": {
            "target": target_share,
            "realised": realised_share,
            "max_abs_error": max((abs(realised_share[e] - target_share[e]) for e in alloc), default=0.0) if total else 0.0,
            "tolerance": 1 / total if total else 0.0,
            "tolerance_rule": "whole phase: each entry within one token of weight × budget (largest remainder); "
                              "any prefix of P tokens: within longest document / P (stride scheduling)",
        },
        "replay": {
            "from": phase.replay.from_ if phase.replay else None,
            "tokens": sum(r for _, r in alloc.values()),
            "by_entry": {e: r for e, (_, r) in alloc.items() if r},
        },
        "epochs": {
            s.entry: {
                "source": s.reader.manifest.source,
                "supply_tokens": s.supply,
                "epochs_used": s.emitted / s.supply if s.supply else 0.0,
                "docs_drawn": s.docs_drawn,
                "epochs_started": s.epoch + 1 if s.docs_drawn else 0,
                "max_epochs": s.max_epochs,
            }
            for s in streams
        },
        "contamination": counter.report() if counter is not None else {},
        "cluster_downsample": (
            {"max_share": phase.cluster_downsample.max_share, "by_entry": downsampled}
            if phase.cluster_downsample else None
        ),
        "seed": seed,
        "scale": str(scale),
        "config_hash": config_hash(config),
        "packing": "greedy: documents concatenated with their EOS; a document that does not fit is "
                   "split at the sequence boundary and continues at position 0 of the next sequence; "
                   "the last sequence is padded (PAD id, mask PAD) as its own final segment",
        "wall_time_s": round(time.time() - t0, 3),
    }
    write_json(tmp / "manifest.json", manifest)
    kill_point("build-mix.phase-packed")  # kill matrix: phase complete in .tmp-<phase>, not renamed
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return manifest


def build_mix(
    curriculum: Curriculum | str | Path,
    stage: str,
    tokens_dir: str | Path,
    out_dir: str | Path,
    scale: Fraction | str | float | None = None,
    seed: int = 0,
    eval_sets: list[str | Path] | tuple = (),
    phases: list[str] | None = None,
    overwrite: bool = False,
    ngram: int = 13,
    progress: bool = True,
) -> dict:
    """Materialise ``stage`` (all its phases, or ``phases``) under ``out_dir``; returns the mix
    manifest. Every check (schema, allocation, data supply under epoch caps, tokenizer
    consistency, existing outputs) runs before the first token is written."""
    cur = curriculum if isinstance(curriculum, Curriculum) else load_curriculum(curriculum)
    scale = parse_scale(scale)
    todo = select_phases(cur, stage, phases)
    eval_sets = [str(p) for p in eval_sets]
    for p in eval_sets:
        if not Path(p).is_file():
            raise CurriculumError(f"--eval-set: no such file {p}")
    # 1. whole-curriculum budget check against the data (plan-wide accounting)
    needed = sources_needed(cur, todo, scale)
    manifests = {s: read_source_manifest(tokens_dir, s) for s in needed}
    for m in manifests.values():  # the bytes are what the manifests promise, before any use
        verify_source_files(m)
    plan(cur, tokens_dir, scale, sources=set(needed)).check()
    shas = {m.tokenizer.get("sha256") for m in manifests.values()}
    if len(shas) > 1:
        raise CurriculumError(f"token sources were made with different tokenizers: "
                              f"{ {s: m.tokenizer.get('sha256') for s, m in manifests.items()} }")
    tok_info = next(iter(manifests.values())).tokenizer if manifests else {}
    out = Path(out_dir)
    configs = {p.name: phase_config(cur, p, scale, seed, manifests, eval_sets, ngram) for p in todo}
    built: dict[str, dict] = {}  # phases already built with this configuration (resume)
    for p in todo:
        mf = out / p.name / "manifest.json"
        if mf.exists() and not overwrite:
            old = json.loads(mf.read_text(encoding="utf-8"))
            if old.get("config_hash") != config_hash(configs[p.name]):
                raise CurriculumError(
                    f"{out / p.name}: holds a mix built with a different configuration; "
                    f"use another --out or --overwrite"
                )
            built[p.name] = old
    # 2. work
    readers = {s: SourceReader(m) for s, m in manifests.items()}
    indexes = load_eval_sets(eval_sets, tok_info, ngram) if eval_sets else []
    out.mkdir(parents=True, exist_ok=True)
    phase_manifests = []
    for p in todo:
        if p.name in built:
            log.info("phase %s: already built with this configuration, skipping", p.name)
            phase_manifests.append(built[p.name])
            continue
        counter = ContaminationCounter(indexes) if indexes else None
        phase_manifests.append(
            build_phase(cur, stage, p, readers, out, scale, seed, counter, configs[p.name], progress)
        )
    mix = mix_manifest(cur.name, stage, seed, str(scale), str(Path(tokens_dir).resolve()), tok_info, phase_manifests)
    write_json(out / "manifest.json", mix)
    return mix


def mix_manifest(curriculum: str, stage: str, seed: int, scale: str, tokens_dir: str, tok_info: dict,
                 phase_manifests: list[dict]) -> dict:
    """The stage's ``manifest.json`` (what the trainer reads first) from its phases' manifests,
    in curriculum order — one builder for the local and the Beam build-mix."""
    return {
        "curriculum": curriculum,
        "stage": stage,
        "seed": seed,
        "scale": scale,
        "tokens_dir": tokens_dir,
        "tokenizer": tok_info,
        "pad_id": pad_id(tok_info),
        "phases": [
            {"name": m["phase"], "path": m["phase"], "seq_len": m["seq_len"],
             "n_sequences": m["n_sequences"], "tokens": m["tokens"]}
            for m in phase_manifests
        ],
    }


__all__ = ["LINEAGE_SCHEMA", "Packer", "build_mix", "build_phase", "check_token_ids", "interleave", "verify_source_files"]
