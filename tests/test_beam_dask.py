"""The Beam pipelines on a second, really distributed runner: Beam's DaskRunner on a local
``dask.distributed`` cluster of two worker processes, against the local executor.

The runner has faults of its own (mixed-up tagged outputs, lost ``finish_bundle`` outputs,
only the last transform's ancestors computed, side inputs as nested computations, a ``Flatten``
that adds up partitions); our transforms work around them (beam_pipelines.transforms,
beam_pipelines.dedup, docs/BEAM.md "DaskRunner"). Inputs are kept small: every Beam transform
is a Dask task graph layer, and the cost is per layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from beam_pipelines import build_mix as beam_mix  # noqa: E402
from beam_pipelines import curate as beam_curate  # noqa: E402
from beam_pipelines import tokenize as beam_tokenize  # noqa: E402
from beam_pipelines.testing import SampleSpec, write_sample_warcs  # noqa: E402
from stepcrawl.curate import CurateConfig, curate  # noqa: E402
from stepcrawl.io import read_documents  # noqa: E402
from test_beam_tokenize_mix import _tree, corpus  # noqa: E402,F401  (the shared corpus fixture)

ROOT = Path(__file__).resolve().parent.parent
DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"


@pytest.fixture(scope="module")
def dask_cluster():
    """One local cluster for the module: two worker processes, one thread each."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield ["--runner", DASK, "--dask_client_address", cluster.scheduler_address, "--dask_npartitions", "2"]
    cluster.close()


def test_dask_curate_equals_local_executor(dask_cluster, tmp_path):
    """Extract → annotate → filter → write (+ --keep_rejected) on Dask; dedup in the next test."""
    crawl = tmp_path / "crawl"
    write_sample_warcs(str(crawl), SampleSpec(n_unique=14, n_exact=2, n_near=2, n_url_dups=1, n_spam=2, n_files=2, seed=7))
    local = curate([str(crawl)], str(tmp_path / "local"), CurateConfig(langs=["en"], dedup=False), progress=False).to_dict()
    beam_curate.run(["--input", str(crawl), "--output", str(tmp_path / "dask"), "--langs", "en", "--keep_rejected",
                     "--no_dedup", *dask_cluster])
    manifest = json.loads((tmp_path / "dask" / "web" / "_manifest.json").read_text())
    b = {d.id: d for d in read_documents(tmp_path / "dask" / "web")}
    l = {d.id: d for d in read_documents(tmp_path / "local" / "web")}
    assert set(b) == set(l) and len(b) >= 10
    for i in b:
        assert (b[i].text, b[i].dup_cluster, b[i].tier, b[i].lang, b[i].warc_offset) == \
               (l[i].text, l[i].dup_cluster, l[i].tier, l[i].lang, l[i].warc_offset)
    for key in ("docs_in", "docs_out", "drops"):
        assert manifest[key] == local[key], key
    assert manifest["extra"]["funnel"] == local["extra"]["funnel"]
    # the --keep_rejected branch ran although nothing downstream reads it
    rejected = list(read_documents(tmp_path / "dask" / "rejected"))
    assert len(rejected) == sum(manifest["drops"].values())


def _dedup_docs():
    """12 documents: URL duplicates, exact duplicates, and near duplicates (one word changed)."""
    from stepcrawl.document import Document

    import random

    rng = random.Random(5)  # letters only: the exact key ignores digits and case
    base = [" ".join("".join(rng.choices("abcdefghij", k=6)) for _ in range(200)) for _ in range(8)]
    texts = [base[i % 8] for i in range(12)]
    texts[9] = texts[1].replace(texts[1].split()[7], "changed", 1)  # near-duplicates of d01 and d02
    texts[10] = texts[2].replace(texts[2].split()[30], "other", 1)
    return [Document(id=f"d{i:02d}", text=texts[i], url=f"https://x.test/{i % 10}", tier=("High", "Medium")[i % 2])
            for i in range(12)]


@pytest.mark.parametrize("near", [False, True], ids=["url+exact", "url+exact+near"])
def test_dask_dedup_equals_local(dask_cluster, tmp_path, near):
    """Dedup's URL, exact and near-duplicate stages with the dup_cluster labels (pointer
    jumping) on Dask, against the local executor. Near-dup's components rounds are unrolled
    (``max_rounds``) as in every Beam run; 4 rounds converge on this graph."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from beam_pipelines.dedup import Dedup
    from stepcrawl.dedup import DedupConfig, run_dedup

    docs = _dedup_docs()
    cfg = DedupConfig(near=near)
    run_dedup(docs, tmp_path / "local", cfg, progress=False)
    local = sorted((d.id, d.dup_cluster) for d in read_documents(tmp_path / "local"))
    manifest = json.loads((tmp_path / "local" / "_manifest.json").read_text())
    assert len(local) < len(docs) and any(c for _, c in local)
    assert ("dup:near" in manifest["drops"]) == near  # the near stage really decides something
    with beam.Pipeline(options=PipelineOptions(dask_cluster)) as p:
        kept, dropped = p | beam.Create(docs) | Dedup(cfg, max_rounds=4)
        assert_that(kept | beam.Map(lambda d: (d.id, d.dup_cluster)), equal_to(local), label="Kept")
        assert_that(dropped | "Reasons" >> beam.Map(lambda rd: rd[0]),
                    equal_to([r for r, n in manifest["drops"].items() for _ in range(n)]), label="Drops")


def test_dask_tokenize_equals_local(dask_cluster, corpus, tmp_path):  # noqa: F811
    from tokenizer.encode import tokenize_corpus
    from tokenizer.train import TokenizerConfig, train_tokenizer

    tok = tmp_path / "tok"
    train_tokenizer([corpus], tok, TokenizerConfig(vocab_size=600, threads=1))
    tokenize_corpus(corpus, tok, tmp_path / "local", workers=1, progress=False)
    beam_tokenize.run(["--input", str(corpus), "--tokenizer", str(tok), "--output", str(tmp_path / "dask"), *dask_cluster])
    local, dask = _tree(tmp_path / "local"), _tree(tmp_path / "dask")
    assert set(dask) == set(local)
    assert {k: v for k, v in dask.items() if not k.endswith(".done.json")} == {k: v for k, v in local.items() if not k.endswith(".done.json")}


def test_dask_build_mix_equals_local(dask_cluster, tmp_path):
    from curricula.mixer import build_mix
    from curricula.synthetic import write_corpus

    tokens = tmp_path / "tokens"
    write_corpus(tokens, {s: 60 for s in ("web", "code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning")},
                 min_len=32, max_len=600, docs_per_shard=40)
    curriculum = str(ROOT / "curricula" / "tiny.yaml")
    build_mix(curriculum, "mid", tokens, tmp_path / "local", seed=3, progress=False)
    beam_mix.run(["--curriculum", curriculum, "--stage", "mid", "--tokens", str(tokens), "--output", str(tmp_path / "dask"),
                  "--seed", "3", *dask_cluster])
    assert _tree(tmp_path / "dask") == _tree(tmp_path / "local")
