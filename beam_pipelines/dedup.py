"""Distributed dedup: URL → exact → MinHash-LSH near-duplicates, as Beam shuffles.

Same decisions as the local executor (``stepcrawl.dedup.local.plan_dedup``), made with the
same pure functions (``normalize_url``, ``exact_key``, ``MinHasher.signatures``,
``band_keys``, ``survivor_key``/``choose_survivor``), but no step needs all documents in one
process — and **documents cross the shuffle once**. Every decision is taken on a small
:class:`DocKeys` record (id, tier, length, URL key, text hash, band keys: ~0.85 KB pickled with the
default 14 bands, whatever the document's size) and only the final ``CoGroupByKey`` (by document) brings each document together
with its verdict:

0. **Keys** — documents are signed in batches (``BatchElements`` → one
   ``MinHasher.signatures`` call per batch, as locally: every document is signed, a document
   without shingles gets no band keys) → ``(uid, document)`` and one ``DocKeys`` per document.
1. **URL** — ``DocKeys`` by ``normalize_url(url)`` → ``GroupByKey`` → the group keeps its
   ``choose_survivor`` member, the others are decided ``dup:url``.
2. **Exact** — the URL survivors' ``DocKeys`` by ``exact_key(text)`` → ``GroupByKey`` →
   ``dup:exact``.
3. **Near** — the exact survivors' ``(band_key, id)`` pairs → ``GroupByKey`` → every bucket
   with ≥ 2 ids gives star edges (smallest id ↔ each other) →
   :class:`beam_pipelines.components.ConnectedComponents` (Large-Star/Small-Star rounds) →
   ``(id, root)`` joined with the ``DocKeys`` → ``DocKeys`` grouped by root →
   ``choose_survivor`` keeps one, the others are decided ``dup:near``.
4. **dup_cluster** — every decision records the edge ``dropped → keeper``; these edges form
   a forest of depth ≤ 3 (URL keeper → exact keeper → near keeper, and a keeper is never
   dropped twice), so two rounds of pointer jumping (``CoGroupByKey``; a check fails the
   pipeline if a third were needed) give each member its tree's root — the one kept document
   — which is exactly the local ``UnionFind`` component's kept member.
5. **Apply** — one ``CoGroupByKey`` by uid of the documents, the drop decisions and the
   cluster labels: a document leaves as kept or as ``(reason, document)``, with
   ``dup_cluster`` set on both.

Shuffle volume: documents once (step 5); ``DocKeys`` at most four times (URL, exact, the root
join, the root group); ids in the band and component shuffles. The previous design grouped
whole documents at each of steps 1–3 and again for the labels (four document shuffles,
five for near-duplicate candidates).

Every shuffle is keyed by :func:`doc_uid` (id + WARC file + offset), not by the bare id: the
same record read twice (a WARC file copied under another name) gives two documents with one
id. Locally, ties in ``survivor_key`` (which ends with the id) fall back to input position;
here they fall back to the uid, i.e. to (file name, offset) — the local input order — so the
same copy survives (tests/test_beam_filesystems.py reads a truncated copy of a WARC file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.components import DEFAULT_MAX_ROUNDS, ConnectedComponents
from beam_pipelines.transforms import NAMESPACE, Counters, batch_elements, tagged_outputs
from stepcrawl.dedup import DROP_EXACT, DROP_NEAR, DROP_URL, DedupConfig
from stepcrawl.document import Document

STAGE = "dedup"
DROPPED = "dropped"
PARENT = "parent"
REPORT = "report"
KEYS = "keys"
JUMP_ROUNDS = 2  # pointer-jumping rounds: 2 cover a forest of depth ≤ 4 (ours is ≤ 3)


# ------------------------------------------------------------------------------ pure parts
def doc_uid(doc: Document) -> str:
    """The key of one document *instance* in every dedup shuffle: ``id`` plus its WARC file
    and offset.

    Ids are unique per record, but the same record can enter twice (a WARC file copied or
    re-crawled under another name, overlapping input globs). The local executor tells such
    copies apart by input position; Beam has no positions, so keying by ``id`` alone would
    make a copy its own duplicate (a self-loop in the dup_cluster forest) and let the final
    join drop both copies. ``(file, offset)`` orders the copies as the local executor's input
    order does (files sorted by name, records by offset), so the same copy survives.
    """
    off = "" if doc.warc_offset is None else f"{doc.warc_offset:020d}"  # padded: sorts as numbers
    return f"{doc.id}\x00{doc.warc_file or ''}\x00{off}"


def uid_doc_id(uid: str) -> str:
    """The document id inside a :func:`doc_uid`."""
    return uid.split("\x00", 1)[0]


@dataclass(frozen=True)
class DocKeys:
    """What dedup decides on, instead of the document: ``survivor_key`` reads ``id``, ``tier``
    and ``n_chars`` (resolved here exactly as ``survivor_key`` resolves a Document's), ties
    between copies of one id fall back to ``uid``; the stages read ``url_key``, ``exact_key``
    and ``bands``."""

    uid: str
    id: str
    tier: str | None
    n_chars: int
    url_key: str | None = None
    exact_key: str | None = None
    bands: tuple[bytes, ...] = ()
    signature: bytes | None = None  # the MinHash rows (little-endian uint32), for verification


def doc_keys(doc: Document, cfg: DedupConfig, signature=None) -> DocKeys:
    """A document's :class:`DocKeys` (``signature``: its MinHash signature when near is on)."""
    from stepcrawl.dedup import band_keys, exact_key, is_empty_signature, normalize_url, survivor_key

    import numpy as np

    bands: tuple[bytes, ...] = ()
    sig_bytes = None
    if signature is not None and not is_empty_signature(signature):
        bands = tuple(band_keys(signature, cfg))
        sig_bytes = np.ascontiguousarray(signature, dtype="<u4").tobytes()
    return DocKeys(
        uid=doc_uid(doc),
        id=doc.id,
        tier=doc.tier,
        n_chars=-survivor_key(doc)[1],
        url_key=normalize_url(doc.url) if cfg.url else None,
        exact_key=exact_key(doc.text) if cfg.exact else None,
        bands=bands,
        signature=sig_bytes,
    )


def resolve_group(members: Iterable[DocKeys], reason: str) -> Iterator[tuple[str | None, DocKeys, str | None]]:
    """A duplicate group → ``(None, survivor, None)`` and ``(reason, dropped, survivor uid)``
    for the others. The survivor is ``stepcrawl.dedup.survivor_key``'s minimum (the rule of
    ``choose_survivor``), copies of one id ordered by ``uid``.

    Two passes over ``members`` and nothing kept in between: a ``GroupByKey`` result is a
    re-iterable that Dataflow/Flink page from the shuffle, so a group of a million copies of
    one boilerplate page is never held in a worker's memory at once.
    """
    from stepcrawl.dedup import survivor_key

    best = min(members, key=lambda m: (survivor_key(m), m.uid), default=None)
    if best is None:
        raise ValueError("resolve_group: empty group")
    kept = False
    for d in members:
        if d.uid == best.uid:
            if not kept:
                kept = True
                yield None, d, None
            # else: another copy of the survivor's own record (same uid): not a decision of
            # this group — ApplyDecisions drops it (see copy_reason)
        else:
            yield reason, d, best.uid


def copy_reason(doc: Document, cfg: DedupConfig) -> str | None:
    """Why the local executor drops a second, identical copy of ``doc``: the first stage whose
    key the copies share (URL if it has one, else the text hash, else a MinHash band), or None
    when no stage can see them (then both copies are kept, as locally)."""
    from stepcrawl.dedup import MinHasher, is_empty_signature, normalize_url

    if cfg.url and normalize_url(doc.url) is not None:
        return DROP_URL
    if cfg.exact:
        return DROP_EXACT
    if cfg.near and not is_empty_signature(MinHasher(cfg).signatures([doc.text])[0]):
        return DROP_NEAR
    return None


def verified_bucket_edges(members: Iterable[tuple[str, str, bytes]], threshold: float) -> Iterator[tuple[str, str, float]]:
    """One LSH bucket's ``(id, uid, signature)`` members → its verified edges ``(uid, uid,
    estimated J)``, smaller uid first (``stepcrawl.dedup.verify``; canonical order: id, then
    uid — the local executor's id, then input position). A pair found in several buckets gets
    the same J from each (the same two signatures), so ``Distinct`` merges them."""
    import numpy as np

    from stepcrawl.dedup.verify import verified_bucket_pairs

    ordered = sorted(set(members))
    if len(ordered) < 2:
        return
    sigs = np.stack([np.frombuffer(sig, dtype="<u4") for _, _, sig in ordered])
    for a, b, j in verified_bucket_pairs([uid for _, uid, _ in ordered], sigs, threshold):
        yield (a, b, j) if a < b else (b, a, j)


def resolve_near_component(members: Iterable[DocKeys], edges: Iterable[tuple[str, str, float]]
                           ) -> Iterator[tuple[DocKeys, str, float]]:
    """One component of the verified graph → ``(dropped, keeper uid, their estimated J)`` by
    the greedy cover of ``stepcrawl.dedup.verify``, members ranked as :func:`resolve_group`
    ranks them."""
    from stepcrawl.dedup import survivor_key
    from stepcrawl.dedup.verify import adjacency, greedy_cover

    by_uid = {m.uid: m for m in members}
    jaccard = {(a, b): j for a, b, j in edges}
    ranked = sorted(by_uid, key=lambda u: (survivor_key(by_uid[u]), u))
    for dropped, keeper in greedy_cover(ranked, adjacency(jaccard)).items():
        yield by_uid[dropped], keeper, jaccard[(min(dropped, keeper), max(dropped, keeper))]


# ------------------------------------------------------------------------------ DoFns
class ResolveGroups(beam.DoFn):
    """``(key, [DocKeys])`` → survivor (main), ``(dropped uid, reason)`` (tag ``dropped``) and
    ``(dropped uid, survivor uid)`` (tag ``parent``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def setup(self) -> None:
        self.drops = Counters(STAGE)

    def process(self, element) -> Iterator[Any]:
        _, members = element
        n = 0
        for reason, rec, keeper in resolve_group(members, self.reason):
            if reason is None:
                yield rec
                continue
            n += 1
            yield beam.pvalue.TaggedOutput(DROPPED, (rec.uid, reason))
            yield beam.pvalue.TaggedOutput(PARENT, (rec.uid, keeper))
        if n:
            self.drops.drop(self.reason, n)


class GroupDuplicates(beam.PTransform):
    """``DocKeys`` → (survivors, drop decisions ``(id, reason)``, parent edges) for one key
    attribute; records whose key is None pass unchanged."""

    def __init__(self, attr: str, reason: str) -> None:
        super().__init__()
        self.attr, self.reason = attr, reason

    def expand(self, keys):
        attr = self.attr
        keyed = keys | "Key" >> beam.Map(lambda k: (getattr(k, attr), k))
        # two Filters rather than beam.Partition: Partition is a multi-output ParDo, which the
        # DaskRunner mixes up (see beam_pipelines.transforms.tagged_outputs)
        with_key = keyed | "HasKey" >> beam.Filter(lambda kv: kv[0] is not None)
        no_key = keyed | "NoKey" >> beam.Filter(lambda kv: kv[0] is None)
        res = tagged_outputs(with_key | "Group" >> beam.GroupByKey(), "Resolve", ResolveGroups(self.reason), DROPPED, PARENT, main="kept")
        passed = no_key | "Unkey" >> beam.Values()
        kept = (res.kept, passed) | "Survivors" >> beam.Flatten()
        return kept, res[DROPPED], res[PARENT]


class SignBatch(beam.DoFn):
    """A batch of Documents → ``(uid, doc)`` (main) and their :class:`DocKeys` (tag ``keys``)."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        self.hasher = None
        if self.cfg.near:
            from stepcrawl.dedup import MinHasher

            self.hasher = MinHasher(self.cfg)  # permutations drawn once per worker
        self.no_shingles = Metrics.counter(f"{NAMESPACE}.{STAGE}", "no_shingles")

    def process(self, batch: list[Document]) -> Iterator[Any]:
        sigs = self.hasher.signatures([d.text for d in batch]) if self.hasher is not None else [None] * len(batch)
        for doc, sig in zip(batch, sigs):
            keys = doc_keys(doc, self.cfg, sig)
            if sig is not None and not keys.bands:
                self.no_shingles.inc()  # counted over every document, as the local executor does
            yield keys.uid, doc
            yield beam.pvalue.TaggedOutput(KEYS, keys)


def _band_members(k: DocKeys) -> Iterator[tuple[bytes, tuple[str, str, bytes]]]:
    for band in k.bands:
        yield band, (k.id, k.uid, k.signature)


def _bucket_to_edges(element, threshold: float) -> Iterator[tuple[str, str]]:
    _, members = element
    return verified_bucket_edges(members, threshold)


def _attach_edge_root(element) -> Iterator[tuple[str, tuple[str, str]]]:
    """CoGroupByKey row of an edge's first uid → ``(root, edge)``."""
    _, row = element
    for root in row["root"][:1]:
        for e in row["edges"]:
            yield root, e


class ResolveNear(beam.DoFn):
    """``(root, {"keys": [DocKeys], "edges": [(uid, uid, J)]})`` → ``(dropped uid, "dup:near")``
    (tag ``dropped``), ``(dropped uid, keeper uid)`` (tag ``parent``) and ``(keeper id, J)``
    (tag ``report``, for the per-keeper report)."""

    def setup(self) -> None:
        self.drops = Counters(STAGE)

    def process(self, element) -> Iterator[Any]:
        _, row = element
        n = 0
        for rec, keeper, j in resolve_near_component(row["keys"], row["edges"]):
            n += 1
            yield beam.pvalue.TaggedOutput(DROPPED, (rec.uid, DROP_NEAR))
            yield beam.pvalue.TaggedOutput(PARENT, (rec.uid, keeper))
            yield beam.pvalue.TaggedOutput(REPORT, (uid_doc_id(keeper), j))
        if n:
            self.drops.drop(DROP_NEAR, n)


def _attach_root(element) -> Iterator[tuple[str, DocKeys]]:
    """CoGroupByKey row of one uid → ``(root, DocKeys)`` when it is in a candidate graph."""
    _, row = element
    roots = row["root"]
    if roots:
        for k in row["keys"]:
            yield roots[0], k


class NearDuplicates(beam.PTransform):
    """``DocKeys`` → (drop decisions ``(id, "dup:near")``, parent edges, ``(keeper id, J)`` per
    near drop): MinHash-LSH buckets, every candidate pair verified, components of the verified
    graph, greedy cover."""

    def __init__(self, max_rounds: int = DEFAULT_MAX_ROUNDS, verify_threshold: float = DedupConfig.verify_threshold) -> None:
        super().__init__()
        self.max_rounds = max_rounds
        self.verify_threshold = verify_threshold

    def expand(self, keys):
        edges = (
            keys
            | "BandKeys" >> beam.FlatMap(_band_members)
            | "GroupBuckets" >> beam.GroupByKey()
            | "VerifiedEdges" >> beam.FlatMap(_bucket_to_edges, self.verify_threshold)
            | "DistinctEdges" >> beam.Distinct()
        )
        roots = edges | "Pairs" >> beam.Map(lambda e: (e[0], e[1])) | "Components" >> ConnectedComponents(self.max_rounds)
        members = (
            {"keys": keys | "ByUid" >> beam.Map(lambda k: (k.uid, k)), "root": roots}
            | "JoinRoots" >> beam.CoGroupByKey()
            | "AttachRoot" >> beam.FlatMap(_attach_root)
        )
        edges_by_root = (
            {"edges": edges | "ByFirstUid" >> beam.Map(lambda e: (e[0], e)), "root": roots}
            | "JoinEdgeRoots" >> beam.CoGroupByKey()
            | "AttachEdgeRoot" >> beam.FlatMap(_attach_edge_root)
        )
        components = {"keys": members, "edges": edges_by_root} | "GroupComponents" >> beam.CoGroupByKey()
        res = tagged_outputs(components, "Resolve", ResolveNear(), DROPPED, PARENT, REPORT, main="unused")
        return res[DROPPED], res[PARENT], res[REPORT]


# ------------------------------------------------------------------------------ dup_cluster
def jump_pointers(parent: dict[str, str]) -> dict[str, str]:
    """One pointer-jumping round, pure form of :class:`_JumpRound`: p(x) ← p(p(x))."""
    return {x: parent.get(p, p) for x, p in parent.items()}


def cluster_roots(parents: list[tuple[str, str]], rounds: int = JUMP_ROUNDS) -> dict[str, str]:
    """{member: root} for a forest of (child, parent) edges, roots included (pure spec)."""
    parent = dict(parents)
    for _ in range(rounds):
        parent = jump_pointers(parent)
    if any(p in parent for p in parent.values()):
        raise RuntimeError("dup_cluster forest deeper than pointer jumping covered")
    out = dict(parent)
    out.update({p: p for p in parent.values()})
    return out


def _jump(element) -> Iterator[tuple[str, str]]:
    node, row = element
    own = row["own"]
    new_parent = own[0] if own else node
    for child in row["children"]:
        yield child, new_parent


def _check_root(element) -> Iterator[tuple[str, str]]:
    node, row = element
    if row["own"] and row["children"]:
        raise RuntimeError(f"dup_cluster: {node} still has a parent after {JUMP_ROUNDS} pointer-jumping rounds")
    for child in row["children"]:
        yield child, node
    if row["children"]:
        yield node, node


def _own_and_children(edge: tuple[str, str]) -> Iterator[tuple[str, tuple[int, str]]]:
    """A parent edge under both of its nodes: the child's own parent, the parent's child."""
    child, parent = edge
    yield child, (0, parent)
    yield parent, (1, child)


def _as_row(element) -> tuple[str, dict[str, list[str]]]:
    node, tagged = element
    row: dict[str, list[str]] = {"own": [], "children": []}
    for tag, value in tagged:
        row["children" if tag else "own"].append(value)
    return node, row


def _with_own_and_children(parents, label: str):
    """``(node, {"own": [its parent], "children": [its children]})`` for every node of a
    parent-edge collection — what ``{"own": p, "children": p | KvSwap()} | CoGroupByKey()``
    gives, from one keyed ``FlatMap`` and one ``GroupByKey``. Why not the CoGroupByKey: its
    ``Flatten`` of two views of one collection doubles the partitions on the DaskRunner (a
    Dask ``concat``) at every round, 2 → 280 over the pointer-jumping rounds (docs/BEAM.md)."""
    return (
        parents
        | f"{label}Keys" >> beam.FlatMap(_own_and_children)
        | f"{label}Group" >> beam.GroupByKey()
        | f"{label}Rows" >> beam.Map(_as_row)
    )


class ClusterLabels(beam.PTransform):
    """Parent edges ``(child, parent)`` → ``(member, root)`` for every member, roots included."""

    def expand(self, parents):
        current = parents
        for r in range(JUMP_ROUNDS):
            current = _with_own_and_children(current, f"Jump{r}") | f"NewParents{r}" >> beam.FlatMap(_jump)
        return _with_own_and_children(current, "CheckRoots") | "Labels" >> beam.FlatMap(_check_root)


class ApplyDecisions(beam.DoFn):
    """One uid's document(s), drop decision and cluster label → kept doc (main) or
    ``(reason, doc)`` (tag ``dropped``), with ``dup_cluster`` = the id of the cluster's kept
    document.

    Two documents share a uid only when one record (same id, file and offset) was read twice;
    the first keeps the decision and the others leave with :func:`copy_reason`, counted like
    any drop.
    """

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        self.drops = Counters(STAGE)

    def process(self, element) -> Iterator[Any]:
        uid, row = element
        root = row["root"][0] if row["root"] else None
        reasons = row["drop"]
        docs = row["doc"]
        if root is None and len(docs) > 1:  # copies of one record form a cluster of their own
            root = uid
        for n, doc in enumerate(docs):
            if root is not None:
                doc = doc.replace(dup_cluster=uid_doc_id(root))
            if n:  # a second copy of the same record
                reason = copy_reason(doc, self.cfg)
                if reason is not None:
                    self.drops.drop(reason)
                    yield beam.pvalue.TaggedOutput(DROPPED, (reason, doc))
                    continue
            if reasons:
                yield beam.pvalue.TaggedOutput(DROPPED, (reasons[0], doc))
            else:
                yield doc


class Dedup(beam.PTransform):
    """Documents → (kept documents, dropped ``(reason, Document)``), local-executor decisions.

    Counters: ``stepcrawl.dedup:drop:dup:{url,exact,near}``, ``stepcrawl:drop:…``,
    ``stepcrawl.dedup:no_shingles`` and the components' per-round change counters.
    """

    def __init__(self, cfg: DedupConfig | None = None, max_rounds: int = DEFAULT_MAX_ROUNDS, with_report: bool = False) -> None:
        super().__init__()
        self.cfg = cfg or DedupConfig()
        self.max_rounds = max_rounds
        self.with_report = with_report  # also return (keeper id, J) per near drop (NearReport)

    def expand(self, docs):
        cfg = self.cfg
        if not (cfg.url or cfg.exact or cfg.near):
            none = docs.pipeline | "NoDrops" >> beam.Create([])
            return (docs, none, none) if self.with_report else (docs, none)
        batches = batch_elements(docs, "Batch", cfg.batch_docs)
        signed = tagged_outputs(batches, "Sign", SignBatch(cfg), KEYS, main="docs")
        live = signed[KEYS]
        decisions, parents = [], []
        if cfg.url:
            live, d, p = live | "Url" >> GroupDuplicates("url_key", DROP_URL)
            decisions.append(d)
            parents.append(p)
        if cfg.exact:
            live, d, p = live | "Exact" >> GroupDuplicates("exact_key", DROP_EXACT)
            decisions.append(d)
            parents.append(p)
        near_pairs = None
        if cfg.near:
            d, p, near_pairs = live | "Near" >> NearDuplicates(self.max_rounds, cfg.verify_threshold)
            decisions.append(d)
            parents.append(p)
        labels = tuple(parents) | "AllParents" >> beam.Flatten() | "ClusterLabels" >> ClusterLabels()
        drops = tuple(decisions) | "AllDecisions" >> beam.Flatten()
        joined = {"doc": signed.docs, "drop": drops, "root": labels} | "ApplyDecisions" >> beam.CoGroupByKey()
        res = tagged_outputs(joined, "SetDupCluster", ApplyDecisions(cfg), DROPPED, main="kept")
        if not self.with_report:
            return res.kept, res[DROPPED]
        if near_pairs is None:
            near_pairs = docs.pipeline | "NoNearPairs" >> beam.Create([])
        return res.kept, res[DROPPED], near_pairs


def _report_bytes(pairs: list[tuple[str, float]]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from stepcrawl.dedup.verify import keeper_rows

    by_keeper: dict[str, list[float]] = {}
    for keeper, j in pairs:
        by_keeper.setdefault(keeper, []).append(j)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(keeper_rows(by_keeper)), buf, compression="zstd")
    return buf.getvalue()


class WriteNearReport(beam.PTransform):
    """``(keeper id, J)`` per near drop → the local executor's ``_near_clusters.parquet`` at
    ``path`` (one small file: a row per keeper), yielding the path; nothing for no near drop,
    as locally. Gathered with a global combine without defaults (no side input: see
    docs/BEAM.md on the DaskRunner)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def expand(self, pairs):
        from beam_pipelines import io as bio

        path = self.path

        def write(all_pairs: list) -> str:
            bio.write_bytes(path, _report_bytes(all_pairs))
            return path

        return (
            pairs
            | "AllPairs" >> beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()
            | "Write" >> beam.Map(write)
        )
