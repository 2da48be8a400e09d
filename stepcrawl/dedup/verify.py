"""Near-duplicate decisions that can be defended pair by pair.

LSH buckets only propose *candidates*: two documents that share one band of MinHash rows.
Joining every candidate into a cluster (union-find) and keeping one member per cluster has
two faults: a candidate pair can be far below the threshold (an unlucky band), and chains
A~B~C put A and C in one cluster although they share little, so a cluster can drop a
document that resembles none of the kept ones (measured on edited real pages: precision
0.975, and whole groups vanished).

Here every candidate pair is *verified* by the estimated Jaccard of the two full signatures
(``bands × rows`` rows, standard error ≈ sqrt(J(1-J)/num_perm) ≈ 0.04 at J = 0.7 with 112
permutations) before it becomes an edge, and survivors are chosen per connected component
by a greedy cover: in survivor order (``survivor_key``), the best member not yet covered is
kept and every verified neighbour of it that is not kept is dropped with that keeper as its
parent. So

- every dropped document has a kept document it was verified against (estimated J ≥
  ``DedupConfig.verify_threshold``), which is its ``dup_cluster``;
- every component keeps at least one member (no group vanishes), and kept documents are
  never verified neighbours of each other.

These are pure functions over positions/keys and signatures; the local executor
(``stepcrawl.dedup.local``) and the Beam pipeline (``beam_pipelines.dedup``) both call them,
with the same canonical member order, so they decide the same.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

# A bucket of thousands of members (one boilerplate page crawled thousands of times) would
# cost n² comparisons: each member is compared with the first BUCKET_CAP members of its
# bucket (canonical order) only. Real near-duplicate groups that large are also exact/URL
# groups, removed before this stage, or share many bands, so they stay connected.
BUCKET_CAP = 64


def verified_bucket_pairs(members: Sequence[K], signatures: np.ndarray, threshold: float,
                          cap: int = BUCKET_CAP) -> Iterator[tuple[K, K, float]]:
    """``(a, b, estimated J)`` for the pairs of one LSH bucket whose signatures agree on at
    least ``threshold`` of their rows. ``members`` must be in canonical order (the same in
    every executor: the document id, then the executor's tie-break); member ``i`` is compared
    with members ``j < min(i, cap)`` — all pairs for buckets up to ``cap`` members."""
    sigs = np.asarray(signatures)
    n = len(members)
    for j in range(min(n - 1, cap)):
        est = np.mean(sigs[j + 1:] == sigs[j], axis=1)
        for off in np.flatnonzero(est >= threshold).tolist():
            yield members[j], members[j + 1 + off], float(est[off])


def greedy_cover(ranked: Sequence[K], neighbours: dict[K, set[K]]) -> dict[K, K]:
    """``{dropped: keeper}`` for one component whose members are given best first.

    The best uncovered member is kept; its uncovered verified neighbours are dropped with it
    as their keeper; repeat until every member is kept or covered."""
    covered: dict[K, K] = {}
    kept: set[K] = set()
    for node in ranked:
        if node in covered:
            continue
        kept.add(node)
        for other in neighbours.get(node, ()):
            if other not in kept and other not in covered:
                covered[other] = node
    return covered


def adjacency(edges: Iterable[tuple[K, K]]) -> dict[K, set[K]]:
    adj: dict[K, set[K]] = {}
    for a, b in edges:
        if a != b:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
    return adj


def keeper_rows(jaccards_by_keeper: dict[str, list[float]]) -> list[dict]:
    """The near-duplicate report (``_near_clusters.parquet``), one row per kept document id
    that near-duplicates were dropped against: how many, and their lowest and mean estimated
    Jaccard with it; sorted by id. Both executors build it here (values summed in sorted
    order, so the mean does not depend on the order a runner delivers them in)."""
    return [{"keeper": k, "n_dropped": len(js), "min_jaccard": round(min(js), 4),
             "mean_jaccard": round(sum(sorted(js)) / len(js), 4)}
            for k, js in sorted(jaccards_by_keeper.items())]

