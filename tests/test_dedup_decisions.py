"""Near-duplicate *decisions* on a truth set with exact Jaccard: every drop defensible, no group
vanishes, and the local and Beam executors decide the same.

Truth set: real English text (stdlib docstrings, as in test_dedup_quality.py) cut into
200-word bases; per base one of four designs — a singleton, a pair (base + a light edit), a
star (base + three edits of it at different rates) and a *chain* (each copy an edit of the
previous one, so neighbours are close and the ends are not: the case where union-find alone
drops a document that resembles no kept one). True Jaccard is computed exactly on 5-word
shingle sets for every pair inside a design (different bases share no 5-word shingle in
practice; a drop against a document of another base counts as a false drop anyway).

- precision: share of near-dropped documents whose kept document (``dup_cluster``) has true
  J ≥ 0.6 with them (target ≥ 0.99);
- recall@0.8: share of designed pairs with true J ≥ 0.8 of which at most one is kept (≥ 0.95);
- no vanished group: every design keeps at least one document.
"""

from __future__ import annotations

import itertools
import random

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.dedup import Dedup, WriteNearReport
from stepcrawl.dedup import DedupConfig, run_dedup
from stepcrawl.dedup.verify import adjacency, greedy_cover, verified_bucket_pairs
from stepcrawl.document import Document
from stepcrawl.io import read_documents
from test_dedup_quality import edit, jaccard, stdlib_words


@pytest.fixture(scope="module")
def truth_set():
    words = stdlib_words()
    vocab = sorted(set(words))
    rng = random.Random(20261202)
    size, n_bases = 200, 200
    assert len(words) // size >= n_bases
    docs: list[Document] = []
    groups: list[list[str]] = []
    for i in range(n_bases):
        base = words[i * size:(i + 1) * size]
        design = ("single", "pair", "star", "chain")[i % 4]
        texts = [base]
        if design == "pair":
            texts.append(edit(base, rng.uniform(0.0, 0.02), vocab, rng))
        elif design == "star":
            texts += [edit(base, r, vocab, rng) for r in (0.005, 0.015, 0.03)]
        elif design == "chain":
            for _ in range(4):
                texts.append(edit(texts[-1], 0.015, vocab, rng))
        ids = [f"b{i:03d}-{k}" for k in range(len(texts))]
        docs += [Document(id=d, text=" ".join(t)) for d, t in zip(ids, texts)]
        groups.append(ids)
    text = {d.id: d.text for d in docs}
    truth = {(a, b): jaccard(text[a], text[b]) for g in groups for a, b in itertools.combinations(g, 2)}
    return docs, groups, text, truth


def _true_j(truth, text, a, b):
    return truth.get((a, b)) or truth.get((b, a)) or jaccard(text[a], text[b])


def _score(kept_ids: set[str], cluster_of: dict[str, str | None], dropped: dict[str, str], truth, text, groups):
    near = [d for d, reason in dropped.items() if reason == "dup:near"]
    defensible = [d for d in near if _true_j(truth, text, d, cluster_of[d]) >= 0.6]
    high = [(a, b) for (a, b), j in truth.items() if j >= 0.8]
    caught = [(a, b) for a, b in high if not (a in kept_ids and b in kept_ids)]
    vanished = [g for g in groups if not set(g) & kept_ids]
    return len(defensible) / max(1, len(near)), len(caught) / len(high), vanished, len(near), len(high)


def test_local_decisions_are_defensible(truth_set, tmp_path):
    docs, groups, text, truth = truth_set
    m = run_dedup(docs, tmp_path / "out", DedupConfig(), keep_rejected=True, progress=False)
    kept = {d.id: d for d in read_documents(tmp_path / "out")}
    rejected = {d.id: d for d in read_documents(tmp_path / "out" / "rejected")}
    table = pq.read_table(next((tmp_path / "out" / "rejected").glob("*.parquet")))
    dropped = dict(zip(table.column("id").to_pylist(), table.column("drop_reason").to_pylist()))
    cluster_of = {**{i: d.dup_cluster for i, d in kept.items()}, **{i: d.dup_cluster for i, d in rejected.items()}}
    precision, recall, vanished, n_near, n_high = _score(set(kept), cluster_of, dropped, truth, text, groups)
    report = m.extra["near"]
    print(f"\nnear drops={n_near} precision={precision:.4f} pairs J>=0.8={n_high} recall={recall:.4f} "
          f"vanished={len(vanished)} report={report}")
    assert n_near >= 100 and n_high >= 100
    assert precision >= 0.99
    assert recall >= 0.95
    assert vanished == []
    # every dropped document's keeper is kept and was verified against it
    assert all(cluster_of[d] in kept for d in dropped)
    assert report["min_keeper_jaccard"] >= DedupConfig().verify_threshold
    assert report["verified_pairs"] <= report["candidate_pairs"]
    # the chains are the case a plain union-find gets wrong: some keep several members
    assert report["components_keeping_several"] >= 1
    # the per-cluster report: one row per keeper, accounting for every near drop
    clusters = pq.read_table(tmp_path / "out" / "_near_clusters.parquet").to_pylist()
    assert sum(c["n_dropped"] for c in clusters) == n_near
    assert {c["keeper"] for c in clusters} == {cluster_of[d] for d, r in dropped.items() if r == "dup:near"}
    assert min(c["min_jaccard"] for c in clusters) == report["min_keeper_jaccard"]


def test_beam_decides_as_the_local_executor(truth_set, tmp_path):
    docs, groups, text, truth = truth_set
    run_dedup(docs, tmp_path / "local", DedupConfig(), progress=False)
    local = sorted((d.id, d.dup_cluster) for d in read_documents(tmp_path / "local"))
    assert any(c is not None for _, c in local)
    report = tmp_path / "beam" / "_near_clusters.parquet"
    with beam.Pipeline(options=PipelineOptions(["--runner", "DirectRunner"])) as p:
        kept, _, near_pairs = p | beam.Create(docs) | Dedup(DedupConfig(), max_rounds=12, with_report=True)
        assert_that(kept | beam.Map(lambda d: (d.id, d.dup_cluster)), equal_to(local))
        near_pairs | WriteNearReport(str(report))
    # the per-keeper report: the same rows as the local executor's
    assert pq.read_table(report).to_pylist() == pq.read_table(tmp_path / "local" / "_near_clusters.parquet").to_pylist()


def test_greedy_cover_keeps_one_per_neighbourhood_and_never_two_neighbours():
    # chain a - b - c - d (only neighbours similar), a ranked best
    adj = adjacency([("a", "b"), ("b", "c"), ("c", "d")])
    cover = greedy_cover(["a", "b", "c", "d"], adj)
    assert cover == {"b": "a", "d": "c"}  # c is kept: it resembles no kept document otherwise
    kept = {"a", "c"}
    assert all(k in adj[d] for d, k in cover.items())
    assert not any(y in adj[x] for x in kept for y in kept if x != y)


def test_verified_bucket_pairs_rejects_an_unlucky_band():
    import numpy as np

    sig = np.arange(112, dtype=np.uint32)
    close = sig.copy()
    close[:10] += 1000  # agrees on 102/112 rows
    far = sig + 1000
    far[:8] = sig[:8]  # shares one band (8 rows) only
    pairs = list(verified_bucket_pairs(["x", "y", "z"], np.stack([sig, close, far]), 0.7))
    assert [(a, b) for a, b, _ in pairs] == [("x", "y")]
    assert pairs[0][2] == pytest.approx(102 / 112)
