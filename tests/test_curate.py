"""The curate stage end to end: accounting on every step, --keep-rejected, resume after kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stepcrawl.curate import CurateConfig, curate
from stepcrawl.io import read_documents
from stepcrawl.manifest import StageManifest
from stepcrawl.stats import format_stats, load_stats, plot_stats

sys.path.insert(0, str(Path(__file__).parent))
from test_extract import make_warc, real_pages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "quality"


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory) -> str:
    from stepcrawl.quality import train_quality

    out = tmp_path_factory.mktemp("qm") / "quality.bin"
    train_quality(SAMPLES / "positive.jsonl", SAMPLES / "negative.jsonl", out)
    return str(out)


def _html(text: str) -> bytes:
    return f"<html><head><title>t</title></head><body><article><p>{text}</p></article></body></html>".encode()


def build_crawl(folder: Path) -> int:
    """Two WARCs: real docs pages, spam, an exact duplicate, empty/image/404 records.
    Returns the number of response records."""
    folder.mkdir(parents=True, exist_ok=True)
    spam = [json.loads(line)["text"] for line in open(SAMPLES / "negative.jsonl")][:10]
    pages = real_pages()
    extra = [(f"http://spam.test/{i}", _html(t), "text/html") for i, t in enumerate(spam)]
    extra += [("http://x.test/empty", b"", "text/html"), ("http://x.test/i.png", b"\x89PNG", "image/png"),
              ("http://x.test/404", b"<html>gone</html>", "text/html", 404), ("http://docs.test/again.html", pages[7][1], "text/html")]
    a, b = pages[:6] + extra[:7], pages[6:] + extra[7:]
    make_warc(folder / "a.warc.gz", a)
    make_warc(folder / "b.warc.gz", b)
    return len(a) + len(b)


def _check_funnel(manifest: dict) -> None:
    funnel = manifest["extra"]["funnel"]
    for f in funnel:
        assert f["docs_in"] == f["docs_out"] + sum(f["drops"].values()), f
    for prev, nxt in zip(funnel, funnel[1:]):
        assert prev["docs_out"] == nxt["docs_in"], (prev["step"], nxt["step"])
    assert manifest["docs_in"] == manifest["docs_out"] + sum(manifest["drops"].values())


@pytest.fixture(scope="module")
def curated(tmp_path_factory, quality_model):
    """One curate run shared by the tests below (the pipeline's imports dominate a small run)."""
    root = tmp_path_factory.mktemp("curated")
    n_records = build_crawl(root / "crawl")
    out = root / "corpus"
    m = curate([root / "crawl"], out, CurateConfig(quality_model=quality_model), keep_rejected=True, progress=False)
    shutil.copytree(out / "web", root / "web-first-run")  # later tests re-run `out` with other configs
    return root, out, m.to_dict(), n_records


def test_curate_accounts_for_every_record(curated, tmp_path):
    _, out, d, n_records = curated
    assert d["docs_in"] == n_records
    _check_funnel(d)
    kept = list(read_documents(out / "web"))
    assert len(kept) == d["docs_out"] > 0
    rejected = pq.read_table(out / "rejected").to_pylist() if (out / "rejected").exists() else []
    # every response record is in exactly one place: the corpus or rejected/ (with a reason)
    places = [(doc.warc_file, doc.warc_offset) for doc in kept] + [(r["warc_file"], r["warc_offset"]) for r in rejected]
    assert len(places) == len(set(places)) == n_records
    assert sum(d["drops"].values()) == len(rejected)
    reasons = {r["drop_reason"] for r in rejected}
    assert {"extract:empty", "extract:unsupported-type", "extract:http-status"} <= reasons
    # spam is gone, real documentation stays; every kept doc has lang, tier >= Medium, signals
    urls = {doc.url for doc in kept}
    assert not any(u.startswith("http://spam.test/") for u in urls)
    assert len(urls & {"http://docs.test/py-copy.html", "http://docs.test/again.html"}) == 1  # exact dup: one survives
    assert "http://docs.test/py-getpass.html" in urls
    for doc in kept:
        assert doc.lang and doc.tier in ("High", "Medium-High", "Medium")
        assert {"gopher_quality", "c4_quality", "fineweb_quality", "gopher_repetition", "fasttext_hq", "n_words"} <= set(doc.quality)
        assert doc.fetched_at and doc.warc_file in ("a.warc.gz", "b.warc.gz")
    assert {"en", "de", "fr", "ja", "zh"} <= set(d["extra"]["langs"])
    # stats: funnel text and a PNG
    text = format_stats(load_stats(out))
    assert "extract:empty" in text and "Medium-High" in text and "annotate" in text
    png = plot_stats(load_stats(out), tmp_path / "funnel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decontam_stage_drops_documents_overlapping_an_eval_set(curated, quality_model, tmp_path):
    import shutil

    root, out, before, _ = curated
    out2 = tmp_path / "corpus"
    shutil.copytree(out, out2)  # finished units are reused (same inputs, same config)
    getpass = next(d for d in read_documents(out / "web") if d.url.endswith("py-getpass.html"))
    eval_set = tmp_path / "evalset.jsonl"
    eval_set.write_text(json.dumps({"question": getpass.text[100:500]}) + "\n")
    cfg = CurateConfig(quality_model=quality_model, decontam_sets=[f"mmlu={eval_set}"])
    d = curate([root / "crawl"], out2, cfg, keep_rejected=True, progress=False).to_dict()
    _check_funnel(d)
    n = d["drops"]["decontam:mmlu"]  # getpass, and pages sharing its 13-grams (the same "Availability" note)
    assert d["extra"]["funnel"][-1]["step"] == "decontam" and 1 <= n < before["docs_out"]
    assert d["docs_out"] == before["docs_out"] - n
    assert getpass.id not in {x.id for x in read_documents(out2 / "web")}
    assert pq.read_table(out2 / "rejected" / "decontam").column("drop_reason").to_pylist() == ["decontam:mmlu"] * n


def test_rerun_skips_finished_units_and_config_change_redoes_them(curated, quality_model):
    root, out, _, _ = curated
    unit = out / "_work" / "filter" / "a.warc.gz" / "_manifest.json"
    first = unit.stat().st_mtime_ns
    before = sorted((d.id, d.tier) for d in read_documents(out / "web"))
    curate([root / "crawl"], out, CurateConfig(quality_model=quality_model), keep_rejected=True, progress=False)
    assert unit.stat().st_mtime_ns == first  # skipped
    assert sorted((d.id, d.tier) for d in read_documents(out / "web")) == before
    curate([root / "crawl"], out, CurateConfig(quality_model=quality_model, min_tier="High"), progress=False)
    assert unit.stat().st_mtime_ns != first  # different config: redone
    assert all(d.tier == "High" for d in read_documents(out / "web"))


def test_corrupt_warc_is_reported_and_other_files_continue(tmp_path, quality_model):
    crawl = tmp_path / "crawl"
    build_crawl(crawl)
    data = (crawl / "a.warc.gz").read_bytes()
    (crawl / "a.warc.gz").write_bytes(data[: len(data) * 2 // 3])  # truncated mid-file
    m = curate([crawl], tmp_path / "corpus", CurateConfig(quality_model=quality_model), progress=False).to_dict()
    errors = m["extra"]["errors"]
    assert len(errors) == 1 and errors[0]["file"].endswith("a.warc.gz") and errors[0]["offset"] > 0
    assert f"offset {errors[0]['offset']}" in errors[0]["error"]
    files = {d.warc_file for d in read_documents(tmp_path / "corpus" / "web")}
    assert files == {"a.warc.gz", "b.warc.gz"}  # a's records before the damage are kept
    _check_funnel(m)


def test_each_step_as_a_subcommand_keeps_the_invariant(tmp_path, quality_model, capsys):
    from stepcrawl.cli import main

    build_crawl(tmp_path / "crawl")
    assert main(["extract", str(tmp_path / "crawl"), "--out", str(tmp_path / "ex"), "--keep-rejected", "--no-progress"]) == 0
    # annotate any JSONL of {"text": ...} too: concatenate extracted docs with foreign ones
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("\n".join(json.dumps({"text": t}) for t in ["Ein kurzer deutscher Satz über Pakete und Versionen.", "短い日本語の文です。"]) + "\n")
    assert main(["annotate", str(tmp_path / "ex"), str(foreign), "--out", str(tmp_path / "an"), "--langs", "en,de",
                 "--quality-model", quality_model, "--keep-rejected", "--no-progress"]) == 0
    assert main(["filter", str(tmp_path / "an"), "--out", str(tmp_path / "fi"), "--min-tier", "Medium-High", "--keep-rejected", "--no-progress"]) == 0
    prev_out = None
    for stage in ("ex", "an", "fi"):
        m = StageManifest.read(tmp_path / stage).to_dict()
        assert m["docs_in"] == m["docs_out"] + sum(m["drops"].values())
        assert len(list(read_documents(tmp_path / stage))) == m["docs_out"]
        rej = pq.read_table(tmp_path / stage / "rejected").num_rows if m["drops"] else 0
        assert rej == sum(m["drops"].values())
        if prev_out is not None and stage != "an":
            assert m["docs_in"] == prev_out
        prev_out = m["docs_out"]
    an = StageManifest.read(tmp_path / "an").to_dict()
    assert an["docs_in"] == StageManifest.read(tmp_path / "ex").accounting.docs_out + 2
    assert an["drops"].get("lang:not-allowed", 0) >= 3  # fr, es, ja, zh pages and the Japanese line
    assert all(d.lang in ("en", "de") for d in read_documents(tmp_path / "an"))
    assert all(d.tier in ("High", "Medium-High") for d in read_documents(tmp_path / "fi"))
    out = capsys.readouterr().out
    assert "filter:" in out and "→" in out


def _web(out: Path) -> list[tuple]:
    return sorted((d.id, d.text, d.tier, d.lang, d.warc_file, d.warc_offset) for d in read_documents(out / "web"))


def test_killed_run_resumes_to_the_same_result(tmp_path, quality_model):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    pages = [p for p in real_pages() if "/py-" in p[0]]  # the five small pages
    for i in range(4):  # four work units, same pages under different URLs (dedup keeps one)
        make_warc(crawl / f"part{i}.warc.gz", [(f"http://m{i}.test/{u.rsplit('/', 1)[1]}", body, ct) for u, body, ct in pages])
    cfg = CurateConfig(quality_model=quality_model)
    ref = tmp_path / "ref"
    curate([crawl], ref, cfg, progress=False)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "stepcrawl", "curate", str(crawl), "--out", str(out), "--quality-model", quality_model, "--no-progress"]
    # SIGKILLed by stepcrawl.faults when unit 3 of 4 is written but not yet marked done (no polling:
    # on a loaded machine a poll can miss the moment); tests/test_kill_matrix.py has the other points
    env = {**os.environ, "STEPCRAWL_KILL_AT": "filter.unit-written:3"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    units = out / "_work" / "filter"
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in units.glob("*/_manifest.json")}
    assert len(done_before) == 2 and (units / "part2.warc.gz").is_dir(), "killed in unit 3, after two finished units"
    assert not (out / "web" / "_manifest.json").exists()
    curate([crawl], out, cfg, progress=False)
    for name, mtime in done_before.items():  # finished units were not redone
        assert (units / name / "_manifest.json").stat().st_mtime_ns == mtime
    assert _web(out) == _web(ref)
    a, b = StageManifest.read(out / "web").to_dict(), StageManifest.read(ref / "web").to_dict()
    assert (a["docs_in"], a["docs_out"], a["drops"]) == (b["docs_in"], b["docs_out"], b["drops"])


def test_workers_and_cluster_stage(curated, quality_model, tmp_path):
    """--workers 2 (units in processes) gives the single-process corpus; --cluster stores a
    cluster id on every kept document and the cluster sizes in the manifest."""
    root, out, d1, _ = curated
    cfg = CurateConfig(quality_model=quality_model, cluster=True, cluster_k=3)
    m = curate([root / "crawl"], tmp_path / "c2", cfg, workers=2, progress=False).to_dict()
    _check_funnel(m)
    assert m["extra"]["stages"][-1] == "cluster" and m["extra"]["funnel"][-1]["step"] == "cluster"
    assert (m["docs_in"], m["docs_out"], m["drops"]) == (d1["docs_in"], d1["docs_out"], d1["drops"])
    docs = list(read_documents(tmp_path / "c2" / "web"))
    ref = {x.id: (x.text, x.tier, x.lang) for x in read_documents(root / "web-first-run")}
    assert {x.id: (x.text, x.tier, x.lang) for x in docs} == ref
    sizes = m["extra"]["cluster_sizes"]
    assert len(sizes) == 3 and sum(sizes.values()) == len(docs)
    assert all(x.cluster is not None and 0 <= x.cluster < 3 for x in docs)
    assert {str(c): n for c, n in Counter(x.cluster for x in docs).items()} == {k: v for k, v in sizes.items() if v}


def test_extract_timeout_is_a_counted_drop(tmp_path, capsys):
    """A pathological page is dropped as extract:timeout by `stepcrawl extract --extract-timeout`;
    the other pages of the file go on and the invariant holds."""
    from stepcrawl.cli import main
    from test_extract import _slow_page

    small = [p for p in real_pages() if "/py-" in p[0]][:2]
    (tmp_path / "crawl").mkdir()
    make_warc(tmp_path / "crawl" / "s.warc.gz", small[:1] + [("http://slow.test/", _slow_page() * 2, "text/html")] + small[1:])
    assert main(["extract", str(tmp_path / "crawl"), "--out", str(tmp_path / "ex"), "--extract-timeout", "0.5",
                 "--keep-rejected", "--no-progress"]) == 0
    m = StageManifest.read(tmp_path / "ex").to_dict()
    assert m["drops"] == {"extract:timeout": 1} and m["docs_in"] == 3 and m["docs_out"] == 2
    rej = pq.read_table(tmp_path / "ex" / "rejected").to_pylist()
    assert [(r["url"], r["drop_reason"]) for r in rej] == [("http://slow.test/", "extract:timeout")]


def test_curate_manifest_has_stage_times_that_stats_prints(curated):
    _, out, d, _ = curated
    times = d["extra"]["stage_times_s"]
    assert {"read", "extract", "langid", "signals", "classifier", "tier", "write", "dedup", "publish"} <= set(times)
    assert all(v >= 0 for v in times.values()) and times["extract"] > 0
    filter_times = StageManifest.read(out / "_work" / "filter").extra["stage_times_s"]
    assert set(filter_times) <= set(times)  # the units' breakdown, merged, then the global stages
    text = format_stats(load_stats(out))
    assert "time per stage" in text and "signals" in text and "extract" in text
