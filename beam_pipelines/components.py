"""Distributed connected components: the alternating Large-Star / Small-Star algorithm.

Why this algorithm: near-duplicate dedup turns LSH band collisions into candidate edges
between document ids and needs the connected components of that graph. A union-find would
have to hold every edge in one process; Kiveris et al., "Connected Components in MapReduce
and Beyond" (SoCC 2014) give two shuffle-only operations whose alternation converges to one
star per component, centred on the component's smallest node, in O(log² n) rounds (a few
rounds in practice; a path of 4096 nodes needs ~13). Every round is a ``GroupByKey`` over the
current edges, so no worker ever holds more than one node's neighbourhood.

Definitions (ℓ is the node label's order; labels are any totally ordered values, here strings):

* **Large-Star** — key every edge by both endpoints. For node ``u`` with neighbours Γ(u) and
  ``m = min(Γ(u) ∪ {u})``, emit ``(v, m)`` for every neighbour ``v > u``.
* **Small-Star** — key every edge by its larger endpoint. For node ``u`` with smaller-or-equal
  neighbours N(u) and ``m = min(N(u) ∪ {u})``, emit ``(v, m)`` for every ``v ∈ N(u) ∪ {u}``,
  ``v != m``.

Edges are stored normalised as ``(larger, smaller)`` tuples. Reducers read their neighbours as
a set, so duplicate edges between rounds are harmless and no separate ``Distinct`` shuffle is
needed (a reducer emits at most one edge per distinct neighbour, so volume stays ≤ 2|E|). A round is Large-Star followed by Small-Star; the edge set is a fixed point exactly
when every component is a star ``{(v, min_C)}`` (proof sketch in docs/BEAM.md).

Change detection (the convergence test) is local to each reducer, so Beam can count it with a
``Metrics`` counter and the pure function can count it the same way:

* Large-Star changes the edge set iff some node ``u`` with a larger neighbour is not the
  minimum of its neighbourhood; it rewires ``|{v ∈ Γ(u): v > u}|`` edges.
* Small-Star changes the edge set iff some node has two or more smaller neighbours; it rewires
  ``|N(u)| - 1`` edges.

A Beam pipeline is a static graph, so the loop is *unrolled* to ``max_rounds`` rounds (a
bounded loop). Once converged, the remaining rounds are no-ops (each still shuffles the star
edges: ~|V| small tuples). After the last round a convergence check runs inside the pipeline:
if the final round still changed anything, the pipeline fails with an error that names
``--cc_max_rounds`` instead of silently emitting wrong clusters.

``connected_components`` (pure Python) is the executable specification: it composes exactly the
same reducer functions (``large_star_reduce``, ``small_star_reduce``) and the same keying as
the Beam transform ``ConnectedComponents`` below, so the property tests on random graphs, long
chains and stars cover the logic the Beam transform runs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, Iterable, Iterator, TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.transforms import drops_finish_bundle_outputs, tagged_outputs

N = TypeVar("N", bound=Hashable)
Edge = tuple[Any, Any]

DEFAULT_MAX_ROUNDS = 20
NAMESPACE = "stepcrawl"


class NotConvergedError(RuntimeError):
    """The unrolled loop ran out of rounds before the edge set stopped changing."""


def normalize_edge(u: N, v: N) -> Edge | None:
    """``(larger, smaller)``, or None for a self-loop (it carries no connectivity)."""
    if u == v:
        return None
    return (u, v) if u > v else (v, u)


# ---------------------------------------------------------------------- per-key reducers
def large_star_keys(edge: Edge) -> Iterator[tuple[Any, Any]]:
    """Large-Star map: every edge under both endpoints."""
    u, v = edge
    yield u, v
    yield v, u


def large_star_reduce(u: N, neighbours: Iterable[N]) -> tuple[list[Edge], int]:
    """Large-Star reduce for node ``u``: (new normalised edges, number of rewired edges)."""
    nbrs = set(neighbours)
    m = min(nbrs | {u})
    larger = [v for v in nbrs if v > u]
    out = [e for v in larger if (e := normalize_edge(v, m)) is not None]
    changed = len(larger) if m != u else 0
    return out, changed


def small_star_keys(edge: Edge) -> Iterator[tuple[Any, Any]]:
    """Small-Star map: every edge under its larger endpoint (edges are stored (larger, smaller))."""
    u, v = edge
    yield u, v


def small_star_reduce(u: N, smaller: Iterable[N]) -> tuple[list[Edge], int]:
    """Small-Star reduce for node ``u`` with its smaller neighbours N(u)."""
    nbrs = set(smaller)
    m = min(nbrs | {u})
    out = [e for v in nbrs | {u} if (e := normalize_edge(v, m)) is not None]
    changed = max(0, len(nbrs) - 1)
    return out, changed


# ---------------------------------------------------------------------- pure specification
def _group(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = defaultdict(list)
    for k, v in pairs:
        groups[k].append(v)
    return groups


def large_star(edges: Iterable[Edge]) -> tuple[list[Edge], int]:
    """One Large-Star operation: map, group by key, reduce — exactly the Beam stage's steps."""
    out: list[Edge] = []
    changed = 0
    for u, nbrs in _group(p for e in edges for p in large_star_keys(e)).items():
        new, c = large_star_reduce(u, nbrs)
        out.extend(new)
        changed += c
    return out, changed


def small_star(edges: Iterable[Edge]) -> tuple[list[Edge], int]:
    """One Small-Star operation: map, group by key, reduce."""
    out: list[Edge] = []
    changed = 0
    for u, nbrs in _group(p for e in edges for p in small_star_keys(e)).items():
        new, c = small_star_reduce(u, nbrs)
        out.extend(new)
        changed += c
    return out, changed


def connected_components(
    edges: Iterable[tuple[N, N]], max_rounds: int = DEFAULT_MAX_ROUNDS
) -> tuple[dict[N, N], int]:
    """``({node: component root (its smallest node)}, rounds used)`` for the nodes in ``edges``.

    Nodes that appear in no edge are not returned (they are singleton components). Raises
    ``NotConvergedError`` after ``max_rounds`` rounds that still changed edges.
    """
    current = [e for u, v in edges if (e := normalize_edge(u, v)) is not None]
    for rnd in range(1, max_rounds + 1):
        current, c1 = large_star(current)
        current, c2 = small_star(current)
        if c1 + c2 == 0:
            return star_labels(current), rnd
    raise NotConvergedError(
        f"connected components did not converge in {max_rounds} rounds; raise --cc_max_rounds"
    )


def star_labels(edges: Iterable[Edge]) -> dict[Any, Any]:
    """Converged star edges (leaf, root) → {node: root}, roots included."""
    labels: dict[Any, Any] = {}
    for leaf, root in edges:
        labels[leaf] = root
        labels[root] = root
    return labels


# ---------------------------------------------------------------------- Beam form
class _StarReduce(beam.DoFn):
    """Runs one reducer on a grouped node and counts rewired edges in a Metrics counter."""

    def __init__(self, kind: str, round_no: int) -> None:
        self.kind = kind
        self.round_no = round_no
        self.reduce = large_star_reduce if kind == "large" else small_star_reduce
        self.counter = Metrics.counter(NAMESPACE, f"cc:{kind}_star_changes_round_{round_no:02d}")

    def process(self, element):
        u, nbrs = element
        out, changed = self.reduce(u, nbrs)
        if changed:
            self.counter.inc(changed)
            # Round-tagged side output: the convergence check needs it in-pipeline, and the
            # counter alone is only readable once the job is done.
            yield beam.pvalue.TaggedOutput("changed", changed)
        yield from out


class _StarOp(beam.PTransform):
    def __init__(self, kind: str, round_no: int) -> None:
        super().__init__()
        self.kind, self.round_no = kind, round_no

    def expand(self, edges):
        keys = large_star_keys if self.kind == "large" else small_star_keys
        grouped = edges | "Key" >> beam.FlatMap(keys) | "Group" >> beam.GroupByKey()
        res = tagged_outputs(grouped, "Reduce", _StarReduce(self.kind, self.round_no), "changed", main="edges")
        return res.edges, res.changed


def _fail_if_changed(total: int, max_rounds: int) -> Iterator[int]:
    if total:
        raise NotConvergedError(
            f"connected components still changed {total} edges in round {max_rounds} "
            f"(the last unrolled round); re-run with a larger --cc_max_rounds"
        )
    yield total


class ConnectedComponents(beam.PTransform):
    """PCollection of edges ``(u, v)`` → PCollection of ``(node, root)`` for every node in an
    edge, root = the smallest node of its component (roots map to themselves).

    ``max_rounds`` Large-Star/Small-Star rounds are unrolled into the graph; per-round change
    counts are Beam counters ``stepcrawl:cc:{large,small}_star_changes_round_NN``; the pipeline
    fails if the last round still changed edges (not converged).
    """

    def __init__(self, max_rounds: int = DEFAULT_MAX_ROUNDS) -> None:
        super().__init__()
        if max_rounds < 1:
            raise ValueError("max_rounds must be >= 1")
        self.max_rounds = max_rounds

    def expand(self, edges):
        current = (
            edges
            | "Normalize" >> beam.FlatMap(lambda e: [n] if (n := normalize_edge(*e)) is not None else [])
        )
        last_changes = []
        for rnd in range(1, self.max_rounds + 1):
            current, c_large = current | f"Round{rnd:02d}LargeStar" >> _StarOp("large", rnd)
            current, c_small = current | f"Round{rnd:02d}SmallStar" >> _StarOp("small", rnd)
            last_changes = [c_large, c_small]
        check = (
            last_changes
            | "LastRoundChanges" >> beam.Flatten()
            | "SumLastRound" >> beam.CombineGlobally(sum).without_defaults()  # no default side input: none = 0
            | "ConvergenceCheck" >> beam.FlatMap(_fail_if_changed, self.max_rounds)
        )
        labels = current | "StarLabels" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[1])])
        if drops_finish_bundle_outputs(edges.pipeline):
            # DaskRunner: a side input is a nested computation inside a worker task, which can
            # wait forever for a free worker; flattening the (empty on success) check into the
            # labels makes it part of the same graph, and the job still fails if it raises.
            quiet = check | "NoOutput" >> beam.FlatMap(lambda _: [])
            return (labels, quiet) | "WithCheck" >> beam.Flatten() | "DistinctLabels" >> beam.Distinct()
        # The check's (empty-on-success) output is a side input of the final step, so the
        # labels cannot be consumed before the check has run and passed.
        return (
            labels
            | "DistinctLabels" >> beam.Distinct()
            | "AfterCheck" >> beam.Map(lambda kv, _ok: kv, _ok=beam.pvalue.AsList(check))
        )
