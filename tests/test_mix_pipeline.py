"""tiny.yaml end to end on real token shards: corpus → `stepcrawl train-tokenizer` →
`stepcrawl tokenize` → `plan --tokens` → `build-mix` (both stages) → `lineage`, and a
word-level contamination report through stepcrawl.decontam on the decoded documents."""

from __future__ import annotations


import json
import random

import pyarrow.parquet as pq
import pytest

from stepcrawl.cli import main
from stepcrawl.document import Document, Span
from stepcrawl.io import read_documents, write_documents
from tokenizer.indexed import IndexedDataset
from curricula.schema import bundled

FULL, TINY = str(bundled("full")), str(bundled("tiny"))

WORDS = ("the model reads code from web pages commits issues and tool calls then reasons about "
         "python functions tests files patches errors outputs results").split()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    rng = random.Random(0)
    for src in ["web", "code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning"]:
        docs = []
        for i in range(80):
            n = rng.randint(20, 700) if not (src == "web" and i < 6) else 900  # some long web pages
            text = " ".join(rng.choice(WORDS) for _ in range(n))
            spans = None
            if src == "tool_use":
                cut = len(text) // 2
                spans = [Span(0, cut, "user", False), Span(cut, len(text), "assistant", True)]
            docs.append(Document(
                id=f"{src}-{i}", text=text, source=src, kind="web" if src == "web" else "code",
                tier=rng.choice(["High", "Medium-High", "Medium"]) if src == "web" else None,
                cluster=i % 4, url=f"https://ex.org/{src}/{i}",
                warc_file="c.warc.gz" if src == "web" else None, warc_offset=7 * i if src == "web" else None,
                meta={} if src == "web" else {"repo": "o/r", "commit": f"{i:08x}", "path": f"p{i}.py"},
                spans=spans,
            ))
        write_documents(root / "corpus" / src / "part-00000.parquet", docs)
    assert main(["train-tokenizer", str(root / "corpus"), "--vocab-size", "400", "--out", str(root / "tok")]) == 0
    assert main(["tokenize", str(root / "corpus"), "--tokenizer", str(root / "tok"), "--out", str(root / "tokens"),
                 "--workers", "1"]) == 0
    return root


def test_tiny_plan_and_build_on_real_shards(pipeline, capsys):
    root = pipeline
    capsys.readouterr()
    assert main(["plan", "--curriculum", TINY, "--tokens", str(root / "tokens"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["errors"] == [] and plan["total_tokens"] == 240_000
    for stage in ("pretrain", "mid"):
        assert main(["build-mix", "--curriculum", TINY, "--stage", stage, "--tokens",
                     str(root / "tokens"), "--out", str(root / "mix" / stage), "--quiet"]) == 0
    mid = json.loads((root / "mix" / "mid" / "manifest.json").read_text())
    assert [(p["name"], p["seq_len"], p["tokens"]) for p in mid["phases"]] == [("mid1", 512, 40_000), ("mid2", 1024, 30_000)]
    assert mid["tokenizer"]["sha256"] and mid["pad_id"] == 0
    # tool_use prompts (user span) carry no loss in the mix: mask bits survive packing
    lin = pq.read_table(root / "mix" / "mid" / "mid1" / "lineage.parquet").to_pylist()
    masks = IndexedDataset(root / "mix" / "mid" / "mid1" / "mask")
    seg = next(r for r in lin if r["entry"] == "tool_use" and r["token_start"] == 0)
    m = masks[seg["sequence"]]
    start = sum(IndexedDataset(root / "mix" / "mid" / "mid1" / "segments")[seg["sequence"]][: seg["segment"]])
    piece = m[start : start + seg["token_end"]]
    assert (piece & 2).any() and ((piece & 1) == 0).any() and (piece & 1).any()
    # lineage resolves to the source record
    capsys.readouterr()
    assert main(["lineage", "--mix", str(root / "mix" / "mid"), "--sequence", str(seg["sequence"]),
                 "--phase", "mid1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    doc = next(d for d in info["documents"] if d["doc_id"] == seg["doc_id"])
    assert doc["record"]["url"] == f"https://ex.org/tool_use/{seg['doc_id'].split('-')[-1]}"


def test_word_level_contamination_through_stepcrawl_decontam(pipeline):
    root = pipeline
    out = root / "mixc"
    # find a code document that the mid1 mix draws (seed 0), and leak a passage of it
    assert main(["build-mix", "--curriculum", TINY, "--stage", "mid", "--tokens",
                 str(root / "tokens"), "--out", str(out), "--phase", "mid1", "--quiet"]) == 0
    lin = pq.read_table(out / "mid1" / "lineage.parquet").to_pylist()
    r = next(x for x in lin if x["entry"] == "code" and x["token_start"] == 0 and x["token_end"] > 300)
    text = {d.id: d.text for d in read_documents(root / "corpus" / "code")}[r["doc_id"]]
    evals = root / "evals.jsonl"
    evals.write_text(json.dumps({"question": " ".join(text.split()[5:45])}) + "\n")
    assert main(["build-mix", "--curriculum", TINY, "--stage", "mid", "--tokens",
                 str(root / "tokens"), "--out", str(root / "mixc2"), "--phase", "mid1", "--quiet",
                 "--eval-set", str(evals)]) == 0
    rep = json.loads((root / "mixc2" / "mid1" / "manifest.json").read_text())["contamination"]["evals.jsonl"]
    assert rep["unit"].startswith("distinct matching word n-grams")
    assert rep["by_source"].get("code", 0) >= 20 and rep["overlap_docs"] >= 1
