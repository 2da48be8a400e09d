"""Distributed dedup: URL → exact → MinHash-LSH near-duplicates, as Beam shuffles.

Same decisions as the local executor (``stepcrawl.dedup.local.plan_dedup``), made with the
same pure functions (``normalize_url``, ``exact_key``, ``MinHasher.signatures``,
``band_keys``, ``survivor_key``/``choose_survivor``), but no step needs all documents in one
process:

1. **URL** — key kept documents by ``normalize_url(url)`` → ``GroupByKey`` → the group keeps
   its ``choose_survivor`` member, the others leave as ``dup:url``.
2. **Exact** — the URL survivors by ``exact_key(text)`` → ``GroupByKey`` → ``dup:exact``.
3. **Near** — the exact survivors are signed in batches (``BatchElements`` → one
   ``MinHasher.signatures`` call per batch; a document without shingles gets no band keys, as
   locally); each signature's ``band_keys`` are emitted as ``(band_key, id)`` →
   ``GroupByKey`` → every bucket with ≥ 2 ids gives star edges (smallest id ↔ each other) →
   :class:`beam_pipelines.components.ConnectedComponents` (Large-Star/Small-Star rounds) →
   ``(id, root)`` joined back to the documents (``CoGroupByKey``) → documents grouped by root
   → ``choose_survivor`` keeps one, the others leave as ``dup:near``.
4. **dup_cluster** — every drop records the edge ``dropped → keeper``; these edges form a
   forest of depth ≤ 3 (URL keeper → exact keeper → near keeper, and a keeper is never
   dropped twice), so two rounds of pointer jumping (``CoGroupByKey``; a check fails the
   pipeline if a third were needed) give each member its tree's root — the one kept document
   — which is exactly the local ``UnionFind`` component's kept member. It is set on kept and
   dropped documents alike.

Locally, ties in ``survivor_key`` fall back to input position; here documents are keyed by
``id``, which the survivor key already contains, so with unique ids (every stepcrawl source
makes them unique) the survivors are identical.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.components import DEFAULT_MAX_ROUNDS, ConnectedComponents
from beam_pipelines.transforms import NAMESPACE
from stepcrawl.dedup import DROP_EXACT, DROP_NEAR, DROP_URL, DedupConfig
from stepcrawl.document import Document

STAGE = "dedup"
DROPPED = "dropped"
PARENT = "parent"
JUMP_ROUNDS = 2  # pointer-jumping rounds: 2 cover a forest of depth ≤ 4 (ours is ≤ 3)


# ------------------------------------------------------------------------------ pure parts
def url_group_key(doc: Document) -> str | None:
    from stepcrawl.dedup import normalize_url

    return normalize_url(doc.url)


def exact_group_key(doc: Document) -> str | None:
    from stepcrawl.dedup import exact_key

    return exact_key(doc.text)


def resolve_group(members: Iterable[Document], reason: str) -> Iterator[tuple[str | None, Document, str | None]]:
    """A duplicate group → ``(None, survivor, None)`` and ``(reason, dropped, survivor id)``
    for the others, in input order.

    Two passes over ``members`` and nothing kept in between: a ``GroupByKey`` result is a
    re-iterable that Dataflow/Flink page from the shuffle, so a group of a million copies of
    one boilerplate page is never held in a worker's memory at once.
    """
    from stepcrawl.dedup import choose_survivor

    keep_id = choose_survivor(members)
    kept = False
    for d in members:
        if d.id == keep_id and not kept:
            kept = True
            yield None, d, None
        else:
            yield reason, d, keep_id


def bucket_edges(ids: list[str]) -> list[tuple[str, str]]:
    """A bucket's members as star edges around its smallest id (same connectivity as the
    local executor's chain of sorted members)."""
    uniq = sorted(set(ids))
    return [(uniq[0], x) for x in uniq[1:]]


# ------------------------------------------------------------------------------ DoFns
class _DropCounter:
    def __init__(self) -> None:
        self._c: dict[str, Any] = {}

    def inc(self, reason: str, n: int = 1) -> None:
        if reason not in self._c:
            self._c[reason] = (
                Metrics.counter(f"{NAMESPACE}.{STAGE}", f"drop:{reason}"),
                Metrics.counter(NAMESPACE, f"drop:{reason}"),
            )
        for c in self._c[reason]:
            c.inc(n)


class ResolveGroups(beam.DoFn):
    """``(key, [Document])`` → survivor (main), ``(reason, doc)`` (tag ``dropped``) and
    ``(dropped id, survivor id)`` (tag ``parent``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def setup(self) -> None:
        self.drops = _DropCounter()

    def process(self, element) -> Iterator[Any]:
        _, members = element
        n = 0
        for reason, doc, keeper in resolve_group(members, self.reason):
            if reason is None:
                yield doc
                continue
            n += 1
            yield beam.pvalue.TaggedOutput(DROPPED, (reason, doc))
            yield beam.pvalue.TaggedOutput(PARENT, (doc.id, keeper))
        if n:
            self.drops.inc(self.reason, n)


class GroupDuplicates(beam.PTransform):
    """Documents → (survivors, dropped ``(reason, doc)``, parent edges) for one key function;
    documents whose key is None pass unchanged."""

    def __init__(self, key_fn, reason: str) -> None:
        super().__init__()
        self.key_fn, self.reason = key_fn, reason

    def expand(self, docs):
        key_fn = self.key_fn
        keyed = docs | "Key" >> beam.Map(lambda d: (key_fn(d), d))
        with_key, no_key = keyed | "HasKey" >> beam.Partition(lambda kv, _: 0 if kv[0] is not None else 1, 2)
        res = (
            with_key
            | "Group" >> beam.GroupByKey()
            | "Resolve" >> beam.ParDo(ResolveGroups(self.reason)).with_outputs(DROPPED, PARENT, main="kept")
        )
        passed = no_key | "Unkey" >> beam.Values()
        kept = (res.kept, passed) | "Survivors" >> beam.Flatten()
        return kept, res[DROPPED], res[PARENT]


class SignBatch(beam.DoFn):
    """A batch of Documents → ``(id, doc)`` (main) and ``(band_key, id)`` (tag ``bands``)."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        from stepcrawl.dedup import MinHasher

        self.hasher = MinHasher(self.cfg)  # permutations drawn once per worker
        self.no_shingles = Metrics.counter(f"{NAMESPACE}.{STAGE}", "no_shingles")

    def process(self, batch: list[Document]) -> Iterator[Any]:
        from stepcrawl.dedup import band_keys, is_empty_signature

        sigs = self.hasher.signatures([d.text for d in batch])
        for doc, sig in zip(batch, sigs):
            yield doc.id, doc
            if is_empty_signature(sig):
                self.no_shingles.inc()
                continue
            for key in band_keys(sig, self.cfg):
                yield beam.pvalue.TaggedOutput("bands", (key, doc.id))


def _bucket_to_edges(element) -> list[tuple[str, str]]:
    _, ids = element
    return bucket_edges(list(ids))


def _attach_root(element) -> Iterator[Any]:
    """CoGroupByKey row of one id → ``(root, doc)`` (tag ``clustered``) or the doc (main)."""
    _, row = element
    roots = row["root"]
    for doc in row["doc"]:
        if roots:
            yield beam.pvalue.TaggedOutput("clustered", (roots[0], doc))
        else:
            yield doc


class NearDuplicates(beam.PTransform):
    """MinHash-LSH near-duplicate removal → (survivors, dropped, parent edges)."""

    def __init__(self, cfg: DedupConfig, max_rounds: int = DEFAULT_MAX_ROUNDS) -> None:
        super().__init__()
        self.cfg, self.max_rounds = cfg, max_rounds

    def expand(self, docs):
        signed = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.cfg.batch_docs)
            | "Sign" >> beam.ParDo(SignBatch(self.cfg)).with_outputs("bands", main="docs")
        )
        roots = (
            signed.bands
            | "GroupBuckets" >> beam.GroupByKey()
            | "CandidateEdges" >> beam.FlatMap(_bucket_to_edges)
            | "Components" >> ConnectedComponents(self.max_rounds)
        )
        joined = (
            {"doc": signed.docs, "root": roots}
            | "JoinRoots" >> beam.CoGroupByKey()
            | "AttachRoot" >> beam.FlatMap(_attach_root).with_outputs("clustered", main="single")
        )
        res = (
            joined.clustered
            | "GroupClusters" >> beam.GroupByKey()
            | "Resolve" >> beam.ParDo(ResolveGroups(DROP_NEAR)).with_outputs(DROPPED, PARENT, main="kept")
        )
        kept = (res.kept, joined.single) | "Survivors" >> beam.Flatten()
        return kept, res[DROPPED], res[PARENT]


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


class ClusterLabels(beam.PTransform):
    """Parent edges ``(child, parent)`` → ``(member, root)`` for every member, roots included."""

    def expand(self, parents):
        current = parents
        for r in range(JUMP_ROUNDS):
            current = (
                {"own": current, "children": current | f"ByParent{r}" >> beam.KvSwap()}
                | f"Jump{r}" >> beam.CoGroupByKey()
                | f"NewParents{r}" >> beam.FlatMap(_jump)
            )
        return (
            {"own": current, "children": current | "ByRoot" >> beam.KvSwap()}
            | "CheckRoots" >> beam.CoGroupByKey()
            | "Labels" >> beam.FlatMap(_check_root)
        )


def _label(element) -> Iterator[Any]:
    _, row = element
    root = row["root"][0] if row["root"] else None
    for tag, payload in row["doc"]:
        if tag == "kept":
            yield payload.replace(dup_cluster=root)
        else:
            reason, doc = payload
            yield beam.pvalue.TaggedOutput(DROPPED, (reason, doc.replace(dup_cluster=root)))


class Dedup(beam.PTransform):
    """Documents → (kept documents, dropped ``(reason, Document)``), local-executor decisions.

    Counters: ``stepcrawl.dedup:drop:dup:{url,exact,near}``, ``stepcrawl:drop:…``,
    ``stepcrawl.dedup:no_shingles`` and the components' per-round change counters.
    """

    def __init__(self, cfg: DedupConfig | None = None, max_rounds: int = DEFAULT_MAX_ROUNDS) -> None:
        super().__init__()
        self.cfg = cfg or DedupConfig()
        self.max_rounds = max_rounds

    def expand(self, docs):
        cfg = self.cfg
        dropped, parents = [], []
        kept = docs
        if cfg.url:
            kept, d, p = kept | "Url" >> GroupDuplicates(url_group_key, DROP_URL)
            dropped.append(d)
            parents.append(p)
        if cfg.exact:
            kept, d, p = kept | "Exact" >> GroupDuplicates(exact_group_key, DROP_EXACT)
            dropped.append(d)
            parents.append(p)
        if cfg.near:
            kept, d, p = kept | "Near" >> NearDuplicates(cfg, self.max_rounds)
            dropped.append(d)
            parents.append(p)
        if not parents:
            return kept, docs.pipeline | "NoDrops" >> beam.Create([])
        labels = tuple(parents) | "AllParents" >> beam.Flatten() | "ClusterLabels" >> ClusterLabels()
        tagged_kept = kept | "TagKept" >> beam.Map(lambda d: (d.id, ("kept", d)))
        tagged_drop = (
            tuple(dropped)
            | "AllDropped" >> beam.Flatten()
            | "TagDropped" >> beam.Map(lambda rd: (rd[1].id, ("drop", rd)))
        )
        all_docs = (tagged_kept, tagged_drop) | "AllDocs" >> beam.Flatten()
        res = (
            {"doc": all_docs, "root": labels}
            | "JoinClusters" >> beam.CoGroupByKey()
            | "SetDupCluster" >> beam.FlatMap(_label).with_outputs(DROPPED, main="kept")
        )
        return res.kept, res[DROPPED]
