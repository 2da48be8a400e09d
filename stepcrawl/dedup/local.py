"""The local dedup executor: URL → exact → MinHash-LSH near-duplicates, one process (pass 1,
most of the CPU, optionally on several: ``workers``).

Pass 1 streams the input once and keeps, per document, only what the decisions need (id,
tier, length, URL key, exact key, MinHash signature: ~0.5 KB at 112 permutations). The global
decisions (groups, LSH buckets, union-find, survivors) are made in memory, then pass 2 streams
the input again and writes the kept documents (``dup_cluster`` set) and, on request, the
rejected ones with their reason. Memory therefore grows with the number of documents, not
their text: a few million documents per run. Larger corpora use the Beam form of the same
pure functions (``beam_pipelines``: signatures → band keys → GroupByKey → components).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from stepcrawl.dedup.config import DedupConfig
from stepcrawl.dedup.minhash import MAX_HASH, MinHasher, band_ids
from stepcrawl.dedup.normalize import exact_key, normalize_url
from stepcrawl.dedup.survivor import survivor_key
from stepcrawl.dedup.unionfind import UnionFind
from stepcrawl.dedup.verify import adjacency, greedy_cover, keeper_rows, verified_bucket_pairs
from stepcrawl.document import Document
from stepcrawl.faults import kill_point
from stepcrawl.io import ShardWriter, batched, document_files, read_documents, write_parquet
from stepcrawl.manifest import Accounting, StageManifest, clear_stage, config_hash, manifest_hash

log = logging.getLogger(__name__)

STAGE = "dedup"
DROP_URL, DROP_EXACT, DROP_NEAR = "dup:url", "dup:exact", "dup:near"
NEAR_REPORT = "_near_clusters.parquet"  # per kept document: near-duplicates dropped against it ("_": not a document file)


@dataclass
class DedupPlan:
    """The outcome of pass 1 for ``n`` documents (by input position)."""

    n: int
    ids: list[str]
    drop: list[str | None]  # drop reason per position, None = kept
    cluster: list[str | None]  # dup_cluster per position (survivor id), None = no duplicates
    extra: dict = field(default_factory=dict)
    # one row per kept document that near-duplicates were dropped against (NEAR_REPORT file)
    near_clusters: list[dict] = field(default_factory=list)


def _iter_input(docs_or_path, errors: list[str] | None = None) -> tuple[callable, str | None]:
    """A function returning a fresh iterator over the input (read twice), and its manifest hash.
    Malformed records of a path input are appended to ``errors`` (FILE:ROW: reason) on each
    read and skipped, so one bad row costs only itself."""
    if isinstance(docs_or_path, (str, os.PathLike)):
        path = Path(docs_or_path)
        on_error = None if errors is None else (lambda e: errors.append(str(e)))
        return (lambda: read_documents(path, on_error=on_error)), (manifest_hash(path) if path.is_dir() else None)
    if isinstance(docs_or_path, (list, tuple)):
        return (lambda: iter(docs_or_path)), None
    docs = list(docs_or_path)  # a one-shot iterable: materialise so pass 2 can see it again
    return (lambda: iter(docs)), None


def _verified_edges(live: np.ndarray, sigs: np.ndarray, ids: list[str], cfg: DedupConfig, report: dict) -> dict[tuple[int, int], float]:
    """Verified near-duplicate edges ``{(i, j): estimated J}`` between input positions: LSH
    bucket members (per band) in canonical order (id, then position), checked pair by pair."""
    edges: dict[tuple[int, int], float] = {}
    bids = band_ids(sigs[live], cfg)
    for band in range(cfg.bands):
        col = bids[:, band]
        order = np.argsort(col, kind="stable")
        sorted_col = col[order]
        starts = np.flatnonzero(np.r_[True, sorted_col[1:] != sorted_col[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for a, b in zip(starts.tolist(), ends.tolist()):
            if b - a < 2:
                continue
            members = sorted((int(live[k]) for k in order[a:b]), key=lambda i: (ids[i], i))
            report["candidate_pairs"] += (b - a) * (b - a - 1) // 2
            for x, y, est in verified_bucket_pairs(members, sigs[members], cfg.verify_threshold):
                edges[(min(x, y), max(x, y))] = est
    report["verified_pairs"] = len(edges)
    return edges


def _resolve_near(edges: dict[tuple[int, int], float], rank: list[tuple], drop: list[str | None], uf: UnionFind,
                  report: dict, ids: list[str]) -> list[dict]:
    """Greedy cover per component of the verified graph (stepcrawl.dedup.verify); returns the
    per-cluster report: keeper id, documents dropped against it, their lowest and mean
    estimated Jaccard with it."""
    graph = UnionFind()
    for a, b in edges:
        graph.union(a, b)
    adj = adjacency(edges)
    lowest = None
    per_keeper: dict[int, list[float]] = {}
    for members in graph.components():
        report["components"] += 1
        cover = greedy_cover(sorted(members, key=rank.__getitem__), adj)
        if len(members) - len(cover) > 1:
            report["components_keeping_several"] += 1
        for dropped, keeper in cover.items():
            drop[dropped] = DROP_NEAR
            uf.union(keeper, dropped)
            j = edges[(min(dropped, keeper), max(dropped, keeper))]
            lowest = j if lowest is None else min(lowest, j)
            per_keeper.setdefault(keeper, []).append(j)
    report["min_keeper_jaccard"] = None if lowest is None else round(lowest, 4)
    return keeper_rows({ids[k]: js for k, js in per_keeper.items()})


@dataclass
class DocKeys:
    """Pass 1's output for a run of consecutive documents: what the decisions need of each."""

    ids: list[str] = field(default_factory=list)
    keys: list[tuple] = field(default_factory=list)  # survivor_key
    url_keys: list[str | None] = field(default_factory=list)
    exact_keys: list[str | None] = field(default_factory=list)
    sig_blocks: list[np.ndarray] = field(default_factory=list)  # MinHash signatures, in order
    errors: list[str] = field(default_factory=list)  # malformed input records (FILE:ROW: reason)


def doc_keys(docs: Iterable[Document], cfg: DedupConfig, progress: bool = False) -> DocKeys:
    """Pass 1 over ``docs``: each document's survivor key, URL key, exact key and signature."""
    out = DocKeys()
    hasher = MinHasher(cfg) if cfg.near else None
    bar = tqdm(desc="dedup: signing", unit="doc", disable=not progress or None)
    for batch in batched(docs, cfg.batch_docs):
        for doc in batch:
            out.ids.append(doc.id)
            out.keys.append(survivor_key(doc))
            out.url_keys.append(normalize_url(doc.url) if cfg.url else None)
            out.exact_keys.append(exact_key(doc.text) if cfg.exact else None)
        if hasher is not None:
            out.sig_blocks.append(hasher.signatures([d.text for d in batch]))
        bar.update(len(batch))
    bar.close()
    return out


def file_keys(path: str, cfg: DedupConfig) -> DocKeys:
    """Pass 1 over one input file (a worker's share of a parallel pass 1); malformed records
    are reported in ``errors`` exactly as a serial read reports them."""
    errors: list[str] = []
    keys = doc_keys(read_documents(Path(path), on_error=lambda e: errors.append(str(e))), cfg)
    keys.errors = errors
    return keys


def parallel_keys(files: list[Path], cfg: DedupConfig, workers: int) -> DocKeys:
    """Pass 1 over ``files`` on ``workers`` processes, merged in file order: the same keys, in
    the same order, as one serial read (signatures do not depend on their batch)."""
    from concurrent.futures import ProcessPoolExecutor

    merged = DocKeys()
    with ProcessPoolExecutor(max_workers=min(workers, len(files))) as pool:
        for part in pool.map(file_keys, [str(f) for f in files], [cfg] * len(files)):
            for f in fields(DocKeys):
                getattr(merged, f.name).extend(getattr(part, f.name))
    return merged


def plan_dedup(docs: Iterable[Document], cfg: DedupConfig, progress: bool = True) -> DedupPlan:
    """Pass 1 + global decisions: which positions are dropped and why, and their clusters."""
    return plan_from_keys(doc_keys(docs, cfg, progress), cfg)


def plan_from_keys(k: DocKeys, cfg: DedupConfig) -> DedupPlan:
    """The global decisions from pass 1's output."""
    ids, keys, url_keys, exact_keys, sig_blocks = k.ids, k.keys, k.url_keys, k.exact_keys, k.sig_blocks
    n = len(ids)
    drop: list[str | None] = [None] * n
    uf = UnionFind()
    # Survivor order: the documented rule, then input position (ids need not be unique).
    rank = [(*k, i) for i, k in enumerate(keys)]

    def resolve(groups: Iterable[list[int]], reason: str) -> None:
        for members in groups:
            alive = [i for i in members if drop[i] is None]
            if len(alive) < 2:
                continue
            keep = min(alive, key=rank.__getitem__)
            for i in alive:
                if i != keep:
                    drop[i] = reason
                    uf.union(keep, i)

    def grouped(values: list) -> list[list[int]]:
        groups: dict = {}
        for i, v in enumerate(values):
            if v is not None and drop[i] is None:
                groups.setdefault(v, []).append(i)
        return [g for g in groups.values() if len(g) > 1]

    if cfg.url:
        resolve(grouped(url_keys), DROP_URL)
    if cfg.exact:
        resolve(grouped(exact_keys), DROP_EXACT)
    no_shingles = 0
    near_clusters: list[dict] = []
    near_report = {"candidate_pairs": 0, "verified_pairs": 0, "components": 0, "components_keeping_several": 0,
                   "min_keeper_jaccard": None}
    if cfg.near and n:
        sigs = np.concatenate(sig_blocks)
        empty = np.all(sigs == MAX_HASH, axis=1)
        no_shingles = int(empty.sum())
        live = np.flatnonzero(~empty & np.array([d is None for d in drop]))
        if len(live) > 1:
            edges = _verified_edges(live, sigs, ids, cfg, near_report)
            near_clusters = _resolve_near(edges, rank, drop, uf, near_report, ids)
    # dup_cluster: the id of the one kept member of each union-find component.
    cluster: list[str | None] = [None] * n
    sizes: Counter = Counter()
    for members in uf.components():
        kept = [i for i in members if drop[i] is None]
        assert len(kept) == 1, "a duplicate cluster must keep exactly one document"
        for i in members:
            cluster[i] = ids[kept[0]]
        sizes[len(members)] += 1
    n_clusters = sum(sizes.values())
    extra = {
        "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "n_dup_clusters": n_clusters,
        "largest_cluster": max(sizes, default=1),
        "singletons": n - sum(k * v for k, v in sizes.items()),
        "no_shingles": no_shingles,
        "lsh": {
            "num_perm": cfg.num_perm,
            "bands": cfg.bands,
            "rows": cfg.rows,
            "threshold": round(cfg.threshold, 4),
            "verify_threshold": cfg.verify_threshold,
        },
        "near": near_report,
    }
    return DedupPlan(n=n, ids=ids, drop=drop, cluster=cluster, extra=extra, near_clusters=near_clusters)


def run_dedup(
    docs_or_path,
    out_dir: str | os.PathLike,
    cfg: DedupConfig | None = None,
    keep_rejected: bool = False,
    progress: bool = True,
    force: bool = False,
    workers: int = 1,
) -> StageManifest:
    """Deduplicate documents (a Parquet/JSONL path or Documents) into ``out_dir``.

    Writes ``part-*.parquet`` (kept documents, ``dup_cluster`` = survivor id for members of a
    duplicate cluster), ``rejected/part-*.parquet`` with ``drop_reason`` when
    ``keep_rejected``, and ``_manifest.json`` (drops by reason, cluster-size histogram). A
    finished output with the same config and input manifest is reused unless ``force``.
    ``workers`` > 1 runs pass 1 (normalising, hashing, signing: most of the CPU) over a folder's
    files on that many processes; the decisions and pass 2 stay serial (same output).
    """
    cfg = cfg or DedupConfig()
    out = Path(out_dir)
    started = time.time()
    errors: list[str] = []
    open_input, input_hash = _iter_input(docs_or_path, errors)
    conf = {**cfg.to_dict(), "keep_rejected": keep_rejected}
    chash = config_hash(conf)
    if not force and (old := StageManifest.reusable(out, chash, input_hash, STAGE)):
        log.info("dedup: %s is up to date (same config and input); skipping", out)
        return old
    out.mkdir(parents=True, exist_ok=True)
    clear_stage(out, extra=(NEAR_REPORT,))

    files = document_files(docs_or_path) if workers > 1 and isinstance(docs_or_path, (str, os.PathLike)) else []
    if len(files) > 1:
        keys = parallel_keys(files, cfg, workers)
        errors.extend(keys.errors)
        plan = plan_from_keys(keys, cfg)
    else:
        plan = plan_dedup(open_input(), cfg, progress=progress)
    kill_point("dedup.planned")  # kill matrix: duplicates decided, nothing written yet
    bad = list(errors)  # pass 1's list (pass 2 meets the same records again and appends them twice)
    acc = Accounting()
    for e in bad:  # malformed input records: counted, and listed in the manifest
        log.error("dedup: %s", e)
        acc.seen(0)
        acc.dropped("malformed", 0)
    writer = ShardWriter(out, "part", cfg.shard_docs)
    rejected = ShardWriter(out / "rejected", "part", cfg.shard_docs, rejected=True) if keep_rejected else None
    seen = 0
    for i, doc in enumerate(tqdm(open_input(), total=plan.n, desc="dedup: writing", unit="doc", disable=not progress or None)):
        if i >= plan.n or doc.id != plan.ids[i]:
            raise RuntimeError(f"dedup: input changed between passes at document {i} ({doc.id!r})")
        seen += 1
        acc.seen(doc.n_chars)
        doc = doc.replace(dup_cluster=plan.cluster[i])
        reason = plan.drop[i]
        if reason is None:
            acc.kept(doc.n_chars)
            writer.write(doc)
        else:
            acc.dropped(reason, doc.n_chars)
            if rejected is not None:
                rejected.write(doc, reason)
    if seen != plan.n:
        raise RuntimeError(f"dedup: input changed between passes ({plan.n} then {seen} documents)")
    files = writer.close() + (rejected.close() if rejected is not None else [])
    if plan.near_clusters:
        import pyarrow as pa

        write_parquet(out / NEAR_REPORT, pa.Table.from_pylist(plan.near_clusters))
    manifest = StageManifest.from_shards(
        STAGE, conf, chash, input_hash, acc, folder=out, files=files, started=started,
        extra={**plan.extra, **({"n_malformed": len(bad), "errors": bad[:20]} if bad else {})},
    )
    manifest.write(out)
    return manifest
