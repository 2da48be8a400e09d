"""build-mix end to end on synthetic token shards written in the exact tokenizer layout:
realised mixture, replay, epoch caps, determinism, packing invariants, long documents,
cluster down-sampling, resume, contamination and lineage."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from curricula import CurriculumError, load_curriculum
from curricula.mixer import build_mix
from curricula.planner import phase_allocation
from curricula.schema import validate_curriculum
from curricula.synthetic import EOS_ID, write_corpus, write_source
from stepcrawl.cli import main
from tokenizer.indexed import IndexedDataset
from tokenizer.masks import PAD
from curricula.schema import bundled

FULL, TINY = str(bundled("full")), str(bundled("tiny"))

DEMO = ["web", "code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    """Seven demo-like sources, ~100k tokens each, tiers and clusters set, 2 shards each."""
    root = tmp_path_factory.mktemp("tokens")
    write_corpus(root, {s: 400 for s in DEMO}, min_len=16, max_len=900, docs_per_shard=250)
    return root


@pytest.fixture(scope="module")
def mid(tokens, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mix") / "mid"
    build_mix(TINY, "mid", tokens, out, seed=7, progress=False)
    return out


def _read(folder: Path):
    return IndexedDataset(folder / "tokens"), IndexedDataset(folder / "mask"), IndexedDataset(folder / "segments")


def _source_doc(tokens: Path, source: str, shard: str, i: int):
    return IndexedDataset(tokens / source / shard)[i], IndexedDataset(tokens / source / f"{shard}.mask")[i]


def test_realised_mixture_and_replay(mid):
    cur = load_curriculum("tiny")
    top = json.loads((mid / "manifest.json").read_text())
    assert [p["name"] for p in top["phases"]] == ["mid1", "mid2"]
    for ph in top["phases"]:
        m = json.loads((mid / ph["path"] / "manifest.json").read_text())
        phase = cur.phase(ph["name"])
        alloc = phase_allocation(cur, phase)
        assert m["tokens_by_entry"] == {e: a + b for e, (a, b) in alloc.items()}
        assert m["tokens"] == phase.tokens == sum(m["tokens_by_entry"].values())
        assert m["mixture"]["max_abs_error"] <= m["mixture"]["tolerance"]
        assert ph["n_sequences"] == -(-phase.tokens // phase.seq_len)
        assert m["replay"]["tokens"] == phase.replay.tokens
        # replay comes from stage1's entries, in stage1's proportions
        stage1 = cur.phase("stage1").weights
        assert set(m["replay"]["by_entry"]) == set(stage1)
        for e, n in m["replay"]["by_entry"].items():
            assert abs(n - phase.replay.tokens * stage1[e]) < 1
        # every prefix tracks the target: deviation <= longest piece / prefix tokens
        lin = pq.read_table(mid / ph["path"] / "lineage.parquet").to_pandas()
        lin["n"] = lin.token_end - lin.token_start
        longest = int(lin.groupby(["sequence"]).n.sum().max()) + int(lin.n.max())
        half = lin[lin.sequence < ph["n_sequences"] // 2]
        got = half.groupby("entry").n.sum()
        for e, share in m["mixture"]["target"].items():
            assert abs(got.get(e, 0) / half.n.sum() - share) <= longest / half.n.sum() + 1e-9


def test_packing_invariants(mid, tokens):
    for name, seq_len in (("mid1", 512), ("mid2", 1024)):
        folder = mid / name
        toks, mask, segs = _read(folder)
        m = json.loads((folder / "manifest.json").read_text())
        assert len(toks) == len(mask) == len(segs) == m["n_sequences"]
        assert set(toks.sizes.tolist()) == {seq_len} and set(mask.sizes.tolist()) == {seq_len}
        lin = pq.read_table(folder / "lineage.parquet").to_pylist()
        by_seq: dict[int, list] = {}
        for r in lin:
            by_seq.setdefault(r["sequence"], []).append(r)
        total = 0
        prev_piece = None
        for s in range(len(toks)):
            seg = segs[s].tolist()
            assert sum(seg) == seq_len and all(x > 0 for x in seg)
            rows = sorted(by_seq.get(s, []), key=lambda r: r["segment"])
            assert [r["segment"] for r in rows] == list(range(len(rows)))
            pos = 0
            for r, length in zip(rows, seg):
                assert r["token_end"] - r["token_start"] == length
                src_t, src_m = _source_doc(tokens, r["source"], r["shard"], r["doc_index"])
                assert np.array_equal(toks[s][pos : pos + length], src_t[r["token_start"] : r["token_end"]])
                assert np.array_equal(mask[s][pos : pos + length], src_m[r["token_start"] : r["token_end"]])
                # a piece that ends its document ends with EOS; a split continues at position 0
                if r["token_end"] == len(src_t):
                    assert toks[s][pos + length - 1] == EOS_ID
                if r["token_start"] > 0:
                    assert pos == 0 and prev_piece is not None
                    assert (prev_piece["doc_id"], prev_piece["token_end"]) == (r["doc_id"], r["token_start"])
                prev_piece = r
                pos += length
                total += length
            if len(seg) > len(rows):  # padding: only in the last sequence, as its own segment
                assert s == len(toks) - 1 and len(seg) == len(rows) + 1
                assert set(mask[s][pos:].tolist()) == {PAD} and set(toks[s][pos:].tolist()) == {0}
            else:
                assert pos == seq_len
        assert total == m["tokens"]  # no token lost or duplicated
        assert m["pad_tokens"] == len(toks) * seq_len - total


def test_long_documents_only_in_the_long_entry(mid, tokens):
    lin = pq.read_table(mid / "mid2" / "lineage.parquet").to_pandas()
    long = lin[lin.entry == "web_long"]
    assert len(long) > 0
    for shard, i in set(zip(long["shard"], long["doc_index"])):
        assert IndexedDataset(tokens / "web" / shard).sizes[i] >= 512


def test_tier_ranges_select_only_their_tiers(mid, tokens):
    """tiny.yaml's web_hq (High + Medium-High) draws no Medium page, in its own share and in
    replay; web_mq (Medium) appears in mid1 only through stage1's replay."""
    docs = pq.read_table(sorted((tokens / "web").glob("*.docs.parquet"))).to_pandas().set_index("doc_id")
    assert set(docs.tier) >= {"High", "Medium-High", "Medium"}
    lin = pq.read_table(mid / "mid1" / "lineage.parquet").to_pandas()
    for entry, allowed in (("web_hq", {"High", "Medium-High"}), ("web_mq", {"Medium"})):
        drawn = lin[lin.entry == entry].doc_id.unique()
        assert len(drawn) > 0 and set(docs.loc[drawn].tier) <= allowed
    m = json.loads((mid / "mid1" / "manifest.json").read_text())
    assert m["tokens_by_entry"]["web_mq"] == m["replay"]["by_entry"]["web_mq"] > 0


def test_same_seed_is_byte_identical_and_other_seed_reorders(tokens, mid, tmp_path):
    again = tmp_path / "again"
    build_mix(TINY, "mid", tokens, again, seed=7, progress=False)
    other = tmp_path / "other"
    build_mix(TINY, "mid", tokens, other, seed=8, progress=False)
    for phase in ("mid1", "mid2"):
        for f in ("tokens.bin", "tokens.idx", "mask.bin", "segments.bin", "segments.idx", "lineage.parquet"):
            assert (again / phase / f).read_bytes() == (mid / phase / f).read_bytes(), f
        assert (other / phase / "tokens.bin").read_bytes() != (mid / phase / "tokens.bin").read_bytes()
        a = json.loads((mid / phase / "manifest.json").read_text())
        b = json.loads((other / phase / "manifest.json").read_text())
        assert a["tokens_by_entry"] == b["tokens_by_entry"]


def test_resume_skips_finished_phases_and_refuses_a_changed_config(tokens, tmp_path):
    out = tmp_path / "mix"
    build_mix(TINY, "mid", tokens, out, seed=1, progress=False, phases=["mid1"])
    assert not (out / "mid2").exists()
    stamp = (out / "mid1" / "tokens.bin").stat().st_mtime_ns
    build_mix(TINY, "mid", tokens, out, seed=1, progress=False)
    assert (out / "mid1" / "tokens.bin").stat().st_mtime_ns == stamp  # skipped
    assert (out / "mid2" / "manifest.json").exists()
    with pytest.raises(CurriculumError, match="different configuration"):
        build_mix(TINY, "mid", tokens, out, seed=2, progress=False)
    build_mix(TINY, "mid", tokens, out, seed=2, progress=False, overwrite=True)
    assert json.loads((out / "mid1" / "manifest.json").read_text())["seed"] == 2
    assert not any(p.name.startswith(".tmp") for p in out.iterdir())


SMALL = yaml.safe_load(
    """
name: small
attention_block: 64
sources: {web: {}, code: {}}
max_epochs: {web: 3, code: 3}
stages:
  - name: s
    phases:
      - name: a
        tokens: 20k
        seq_len: 128
        mixture: {web: 0.8, code: 0.2}
        max_epochs: {web: 3}
        schedule: {global_batch: 4, lr: {shape: constant, peak: 1.0e-3}}
"""
)


@pytest.fixture(scope="module")
def small_tokens(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    write_source(root, "web", 60, seed=3, min_len=50, max_len=150)  # ~6k tokens
    write_source(root, "code", 200, seed=4, min_len=50, max_len=150)
    return root


def test_epochs_repeat_whole_permutations_within_the_cap(small_tokens, tmp_path):
    cur = validate_curriculum(copy.deepcopy(SMALL))
    out = tmp_path / "m"
    build_mix(cur, "s", small_tokens, out, progress=False)
    m = json.loads((out / "a" / "manifest.json").read_text())
    web = m["epochs"]["web"]
    assert 2 < web["epochs_used"] <= 3 and web["epochs_started"] == 3
    lin = pq.read_table(out / "a" / "lineage.parquet").to_pandas()
    draws = lin[(lin.entry == "web") & (lin.token_start == 0)].doc_id.tolist()
    assert sorted(draws[:60]) == sorted(f"web-{i}" for i in range(60))  # epoch 1: each doc once
    assert sorted(draws[60:120]) == sorted(f"web-{i}" for i in range(60))  # epoch 2: again, reshuffled
    assert draws[:60] != draws[60:120]


def test_epoch_cap_exceeded_fails_before_any_work(small_tokens, tmp_path):
    raw = copy.deepcopy(SMALL)
    raw["max_epochs"] = {"web": 2, "code": 3}
    out = tmp_path / "m"
    with pytest.raises(CurriculumError, match=r"max_epochs\.web"):
        build_mix(validate_curriculum(raw), "s", small_tokens, out, progress=False)
    assert not out.exists()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    rc = main(["build-mix", "--curriculum", str(path), "--stage", "s", "--tokens", str(small_tokens),
               "--out", str(out), "--quiet"])
    assert rc == 2 and not out.exists()


def test_cluster_downsampling(tmp_path):
    root = tmp_path / "tok"
    n = 400
    clusters = [0 if i % 2 == 0 else i for i in range(n)]  # cluster 0 holds ~half the tokens
    write_source(root, "web", n, seed=5, min_len=50, max_len=150, clusters=clusters)
    raw = copy.deepcopy(SMALL)
    raw["sources"] = {"web": {}}
    raw["max_epochs"] = {"web": 3}
    ph = raw["stages"][0]["phases"][0]
    ph.update(tokens="8k", mixture={"web": 1.0})
    shares = {}
    for name, down in (("plain", None), ("down", {"max_share": 0.1})):
        if down:
            ph["cluster_downsample"] = down
        build_mix(validate_curriculum(copy.deepcopy(raw)), "s", root, tmp_path / name, progress=False)
        lin = pq.read_table(tmp_path / name / "a" / "lineage.parquet").to_pandas()
        idx = lin.doc_id.str.split("-").str[1].astype(int)
        heavy = lin[idx % 2 == 0]
        shares[name] = (heavy.token_end - heavy.token_start).sum() / (lin.token_end - lin.token_start).sum()
    assert shares["plain"] > 0.35
    assert shares["down"] < 0.2
    # the phase manifest reports what down-sampling removed
    assert json.loads((tmp_path / "plain" / "a" / "manifest.json").read_text())["cluster_downsample"] is None
    rep = json.loads((tmp_path / "down" / "a" / "manifest.json").read_text())["cluster_downsample"]
    web = rep["by_entry"]["web"]
    assert rep["max_share"] == 0.1 and web["docs_before"] == web["docs_with_cluster"] == n
    assert n // 2 < web["docs_kept"] < n and web["tokens_kept"] < web["tokens_before"]


def test_contamination_report_counts_overlap(mid, tokens, tmp_path):
    lin = pq.read_table(mid / "mid1" / "lineage.parquet").to_pylist()
    r = next(r for r in lin if r["token_end"] - r["token_start"] >= 40)
    src, _ = _source_doc(tokens, r["source"], r["shard"], r["doc_index"])
    leaked = src[r["token_start"] : r["token_start"] + 40].tolist()
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"tokens": leaked}) + "\n" + json.dumps({"tokens": [5, 6, 7, 8] * 10}) + "\n")
    out = tmp_path / "c"
    assert main(["build-mix", "--curriculum", TINY, "--stage", "mid", "--tokens", str(tokens),
                 "--out", str(out), "--seed", "7", "--eval-set", str(evals), "--ngram", "8",
                 "--phase", "mid1", "--quiet"]) == 0
    rep = json.loads((out / "mid1" / "manifest.json").read_text())["contamination"]["eval.jsonl"]
    assert rep["eval_records"] == 2 and rep["n"] == 8 and rep["unit"].startswith("tokens")
    assert rep["overlap"] >= 40 and rep["by_source"].get(r["entry"], 0) >= 40
    assert rep["overlap"] < 1000  # random data: only the planted span (and its repeats)
    assert 0 < rep["overlap_fraction"] < 0.05


def test_lineage_cli(mid, tokens, capsys):
    assert main(["lineage", "--mix", str(mid), "--sequence", "2", "--phase", "mid2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    lin = pq.read_table(mid / "mid2" / "lineage.parquet", filters=[("sequence", "=", 2)]).to_pylist()
    assert [d["doc_id"] for d in info["documents"]] == [r["doc_id"] for r in sorted(lin, key=lambda r: r["segment"])]
    for d in info["documents"]:
        i = int(d["doc_id"].split("-")[-1])
        assert d["record"]["url"].endswith(f"/{d['source']}/{i}")
        if d["source"] == "web":
            assert d["record"]["warc_offset"] == 1000 * i
        else:
            assert d["record"]["meta"]["path"] == f"f{i}.py"
    assert sum(info["segments"]) == 1024
    assert main(["lineage", "--mix", str(mid), "--sequence", "0"]) == 0
    assert "sequence 0" in capsys.readouterr().out
    assert main(["lineage", "--mix", str(mid), "--sequence", "99999", "--phase", "mid1"]) == 2


def test_full_yaml_scaled_down_materialises(tmp_path):
    """`--scale 1e-9` of the real curriculum runs on a laptop: every full.yaml source present,
    web and books with tiers and a few documents longer than 32k tokens."""
    root = tmp_path / "tok"
    lengths = [120] * 300 + [40_000, 36_000]
    write_source(root, "web", 0, seed=1, lengths=lengths, docs_per_shard=128)
    write_source(root, "books", 0, seed=2, lengths=[200] * 200 + [33_000, 50_000], docs_per_shard=128,
                 tiers=("High", "Medium-High"))
    for i, s in enumerate(["code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning", "math"]):
        write_source(root, s, 150, seed=10 + i, min_len=50, max_len=300)
    out = tmp_path / "mix"
    assert main(["build-mix", "--curriculum", FULL, "--stage", "mid", "--tokens", str(root),
                 "--out", str(out), "--scale", "1e-9", "--quiet"]) == 0
    top = json.loads((out / "manifest.json").read_text())
    assert [(p["name"], p["seq_len"], p["tokens"], p["n_sequences"]) for p in top["phases"]] == [
        ("mid1", 32768, 386, 1), ("mid2", 131072, 364, 1)]
    m2 = json.loads((out / "mid2" / "manifest.json").read_text())
    assert m2["tokens_by_entry"]["web_long"] > 0 and m2["tokens_by_entry"]["books_long"] > 0
    lin = pq.read_table(out / "mid2" / "lineage.parquet").to_pandas()
    assert set(lin[lin.entry == "web_long"].doc_id) <= {"web-300", "web-301"}
    assert set(lin[lin.entry == "books_long"].doc_id) <= {"books-200", "books-201"}
    # tier filters: web tiers cycle High, Medium-High, Medium by document index
    lin1 = pq.read_table(out / "mid1" / "lineage.parquet").to_pandas()
    hq = lin1[lin1.entry == "web_hq"].doc_id.str.split("-").str[1].astype(int)
    mq = lin1[lin1.entry == "web_mq"].doc_id.str.split("-").str[1].astype(int)
    assert len(hq) and (hq % 3 != 2).all() and len(mq) and (mq % 3 == 2).all()


def test_a_failing_phase_leaves_no_partial_output(small_tokens, tmp_path):
    import shutil

    broken = tmp_path / "tokens"
    shutil.copytree(small_tokens, broken)
    (broken / "web" / "part-00000.docs.parquet").unlink()  # needed while packing (doc ids)
    # ...and unlisted, so the up-front checksum verification passes and packing itself fails
    mf = broken / "web" / "manifest.json"
    m = json.loads(mf.read_text())
    for shard in m["shards"]:
        shard["sha256"].pop("part-00000.docs.parquet", None)
    mf.write_text(json.dumps(m))
    out = tmp_path / "m"
    with pytest.raises(CurriculumError, match="part-00000.docs.parquet"):
        build_mix(validate_curriculum(copy.deepcopy(SMALL)), "s", broken, out, progress=False)
    assert not (out / "a").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
