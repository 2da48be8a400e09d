"""Distributed connected components (Large-Star/Small-Star) vs a plain union-find.

The pure function ``connected_components`` composes the same reducers and keying as the Beam
transform, so hypothesis exercises it on many graphs (random, long chains, stars, in any label
order); the real Beam transform runs on a few fixed graphs on the DirectRunner.
"""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.dedup.unionfind import UnionFind
from beam_pipelines.components import (
    ConnectedComponents,
    NotConvergedError,
    connected_components,
    large_star_reduce,
    small_star_reduce,
)


def union_find_components(edges) -> dict:
    """Reference: the local executor's ``UnionFind`` → {node: smallest node of its set}.
    Self-loops are skipped: a node only in a self-loop is a singleton, reported by neither."""
    uf = UnionFind()
    for u, v in edges:
        if u != v:
            uf.union(u, v)
    return {x: min(group) for group in uf.components() for x in group}


edge_lists = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(edge_lists)
def test_random_graphs_match_union_find(edges):
    labels, rounds = connected_components(edges)
    assert labels == union_find_components(edges)
    assert rounds <= 12


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 600), st.randoms(use_true_random=False), st.sampled_from(["chain", "star", "chain+stars"]))
def test_chains_and_stars_in_any_label_order(n, rnd, shape):
    nodes = list(range(n))
    rnd.shuffle(nodes)  # label order unrelated to the structure: the hard case for min-label propagation
    if shape == "chain":
        edges = [(nodes[i], nodes[i + 1]) for i in range(n - 1)]
    elif shape == "star":
        edges = [(nodes[0], nodes[i]) for i in range(1, n)]
    else:  # a chain whose every node carries two leaves
        k = n // 3 or 1
        edges = [(nodes[i], nodes[i + 1]) for i in range(k - 1)]
        edges += [(nodes[i % k], nodes[i]) for i in range(k, n)]
    labels, _ = connected_components(edges)
    assert labels == union_find_components(edges)
    assert set(labels.values()) == {min(nodes)}


def test_string_labels_and_self_loops():
    edges = [("warc:b", "warc:a"), ("warc:c", "warc:b"), ("warc:x", "warc:x"), ("warc:z", "warc:y")]
    labels, _ = connected_components(edges)
    assert labels == {"warc:a": "warc:a", "warc:b": "warc:a", "warc:c": "warc:a", "warc:y": "warc:y", "warc:z": "warc:y"}


def test_reducers_report_changes_only_when_they_rewire():
    assert large_star_reduce(1, [2, 3]) == ([(2, 1), (3, 1)], 0)  # already a star centred on 1
    new, changed = large_star_reduce(2, [1, 3])
    assert new == [(3, 1)] and changed == 1  # 3 is rewired to the neighbourhood minimum
    assert small_star_reduce(3, [1]) == ([(3, 1)], 0)
    new, changed = small_star_reduce(3, [1, 2])
    assert sorted(new) == [(2, 1), (3, 1)] and changed == 1


def test_not_converged_is_an_error():
    with pytest.raises(NotConvergedError, match="cc_max_rounds"):
        connected_components([(i, i + 1) for i in range(500)], max_rounds=2)


def _fixed_graphs():
    rnd = random.Random(7)
    chain = list(range(300))
    rnd.shuffle(chain)
    star_nodes = [f"s{i:03d}" for i in range(80)]
    rnd.shuffle(star_nodes)
    g = [(chain[i], chain[i + 1]) for i in range(299)]  # long chain, shuffled labels
    g += [(1000 + i, 1000 + j) for i in range(6) for j in range(6)]  # a clique incl. self-loops
    g += [(2000, 2001)]
    strings = [(star_nodes[0], s) for s in star_nodes[1:]]  # a star whose centre is not the min
    return g, strings


def test_beam_transform_matches_union_find():
    ints, strings = _fixed_graphs()
    with beam.Pipeline(runner="DirectRunner") as p:
        for name, edges in (("Ints", ints), ("Strings", strings)):
            out = p | f"Create{name}" >> beam.Create(edges) | f"CC{name}" >> ConnectedComponents(max_rounds=16)
            assert_that(out, equal_to(sorted(union_find_components(edges).items())), label=f"Check{name}")


def test_beam_transform_fails_when_not_converged():
    with pytest.raises(Exception, match="cc_max_rounds"):
        with beam.Pipeline(runner="DirectRunner") as p:
            _ = p | beam.Create([(i, i + 1) for i in range(200)]) | ConnectedComponents(max_rounds=2)
