"""Decontamination against evaluation sets: n-gram index, drop vs flag, n configurable."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stepcrawl.cli import main as cli_main
from stepcrawl.dedup import words
from stepcrawl.decontam import DecontamStep, NgramIndex, count_overlap, count_overlap_batch, parse_eval_set, run_decontam
from stepcrawl.document import Document
from stepcrawl.io import BadRecord, read_documents
from stepcrawl.steps import Drop

QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
PROBLEM = "Let f(x) = 3x + 2 and g(x) = x squared minus one; find the value of f composed with g at x equal to five, and simplify the result completely."
FILLER = "The weather in the valley was mild this spring and the farmers planted early. " * 4


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def eval_sets(tmp_path):
    gsm = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": QUESTION, "answer": "72"}, {"question": "Too short to index."}])
    math = write_jsonl(tmp_path / "math_test.jsonl", [{"problem": PROBLEM, "solution": "x"}])
    return gsm, math


def docs():
    return [
        Document(id="clean", text=FILLER),
        Document(id="gsm", text=FILLER + " " + QUESTION.upper().replace(",", " ;") + " " + FILLER),  # normalised match
        Document(id="math", text="Exercise: " + PROBLEM),
        Document(id="partial", text=FILLER + " " + " ".join(QUESTION.split()[:14])),  # ≥ 13 words: 1-2 n-grams
        Document(id="short", text=" ".join(QUESTION.split()[:12])),  # < 13 words
    ]


def test_index_and_count_overlap(eval_sets):
    gsm, _ = eval_sets
    index = NgramIndex.from_jsonl(gsm, n=13)
    assert index.name == "gsm8k" and index.n_records == 2 and index.too_short == 1
    n_words = len(QUESTION.split()) + 1  # + the answer "72"
    assert len(index) == n_words - 13 + 1
    assert count_overlap(QUESTION, index) == len(QUESTION.split()) - 12
    assert count_overlap(FILLER, index) == 0
    assert count_overlap("", index) == 0
    texts = [d.text for d in docs()]
    assert count_overlap_batch(texts, index).tolist() == [count_overlap(t, index) for t in texts]
    restored = pickle.loads(pickle.dumps(index))
    np.testing.assert_array_equal(restored.hashes, index.hashes)
    assert len(pickle.dumps(index)) < 8 * len(index) + 1000  # compact: 8 bytes per n-gram


def test_index_save_load_and_bad_input(eval_sets, tmp_path):
    index = NgramIndex.from_jsonl(eval_sets[1], n=8)
    index.save(tmp_path / "ix.npz")
    back = NgramIndex.load(tmp_path / "ix.npz")
    assert back.name == "math_test" and back.n == 8 and np.array_equal(back.hashes, index.hashes)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": QUESTION}) + "\n{oops\n")
    with pytest.raises(BadRecord, match="bad.jsonl:2"):
        NgramIndex.from_jsonl(bad)
    nofield = write_jsonl(tmp_path / "nofield.jsonl", [{"prompt_text": "x"}])
    with pytest.raises(BadRecord, match="nofield.jsonl:1: record has none of the fields"):
        NgramIndex.from_jsonl(nofield)
    assert parse_eval_set("mmlu=/a/b/test.jsonl.gz") == ("mmlu", Path("/a/b/test.jsonl.gz"))
    assert parse_eval_set("/a/b/test.jsonl.gz")[0] == "test"


def test_parquet_and_txt_eval_sets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"problem": [PROBLEM], "level": [3]}), tmp_path / "math.parquet")
    (tmp_path / "qs.txt").write_text(QUESTION + "\n\n" + PROBLEM + "\n")
    from_pq = NgramIndex.from_file(tmp_path / "math.parquet")
    from_txt = NgramIndex.from_file(tmp_path / "qs.txt")
    assert from_pq.name == "math" and from_txt.name == "qs" and from_txt.n_records == 2
    assert count_overlap(PROBLEM, from_pq) == len(words(PROBLEM)) - 12 == count_overlap(PROBLEM, from_txt)
    step = DecontamStep([f"m={tmp_path / 'math.parquet'}"])
    assert step(docs()[2]) == Drop("decontam:m")
    with pytest.raises(ValueError, match="none of the fields"):
        NgramIndex.from_file(tmp_path / "math.parquet", fields=["question"])


def test_drop_mode(eval_sets):
    step = DecontamStep([str(p) for p in eval_sets], n=13, mode="drop")
    step = pickle.loads(pickle.dumps(step))  # ships as config only, like Beam does
    out = {d.id: step(d) for d in docs()}
    assert out["gsm"] == Drop("decontam:gsm8k") and out["math"] == Drop("decontam:math_test")
    assert out["partial"] == Drop("decontam:gsm8k")
    assert isinstance(out["clean"], Document) and isinstance(out["short"], Document)
    strict = DecontamStep([str(p) for p in eval_sets], n=13, min_matches=3)
    assert isinstance(strict(docs()[3]), Document)  # 2 matching n-grams < 3


def test_flag_mode_and_n(eval_sets):
    step = DecontamStep([str(eval_sets[0])], n=13, mode="flag")
    out = {d.id: step(d) for d in docs()}
    assert all(isinstance(d, Document) for d in out.values())
    assert out["clean"].quality["contam_ngrams"] == 0.0 and "contam_sets" not in out["clean"].meta
    assert out["gsm"].quality["contam_ngrams"] == len(QUESTION.split()) - 12
    assert out["gsm"].meta["contam_sets"] == ["gsm8k"]
    assert out["short"].quality["contam_ngrams"] == 0.0
    small_n = DecontamStep([str(eval_sets[0])], n=8, mode="flag")
    assert small_n(docs()[4]).quality["contam_ngrams"] == 12 - 8 + 1  # 12 words now carry 5 8-grams
    with pytest.raises(ValueError):
        DecontamStep([str(eval_sets[0])], mode="erase")
    with pytest.raises(ValueError, match="unique"):
        DecontamStep([str(eval_sets[0]), str(eval_sets[0])])


def test_run_decontam_and_cli(eval_sets, tmp_path):
    step = DecontamStep([str(p) for p in eval_sets])
    m = run_decontam(docs(), tmp_path / "out", step, keep_rejected=True, progress=False)
    assert dict(m.accounting.drops) == {"decontam:gsm8k": 2, "decontam:math_test": 1}
    assert m.accounting.docs_in == 5 == m.accounting.docs_out + 3
    assert m.extra["eval_sets"]["gsm8k"]["too_short"] == 1
    assert {d.id for d in read_documents(tmp_path / "out")} == {"clean", "short"}
    assert sorted(pq.read_table(tmp_path / "out" / "rejected").column("drop_reason").to_pylist()) == [
        "decontam:gsm8k", "decontam:gsm8k", "decontam:math_test"]
    src = tmp_path / "docs.jsonl"
    write_jsonl(src, [d.to_record() | {"meta": d.meta, "quality": d.quality} for d in docs()])
    rc = cli_main(["decontam", str(src), "--eval-set", f"g={eval_sets[0]}", "--out", str(tmp_path / "cli"), "--mode", "flag", "--n", "10"])
    assert rc == 0
    flagged = {d.id: d for d in read_documents(tmp_path / "cli")}
    assert len(flagged) == 5 and flagged["gsm"].meta["contam_sets"] == ["g"]
    assert json.loads((tmp_path / "cli" / "_manifest.json").read_text())["extra"]["flagged"] == {"g": 3}


def test_run_decontam_reuses_output_until_eval_set_changes(eval_sets, tmp_path):
    from stepcrawl.io import write_documents
    from stepcrawl.manifest import Accounting, StageManifest

    src = tmp_path / "in"
    write_documents(src / "part-00000.parquet", docs())
    StageManifest("dedup", {}, "h", None, Accounting()).write(src)
    first = run_decontam(src, tmp_path / "out", DecontamStep([str(eval_sets[0])]), progress=False)
    again = run_decontam(src, tmp_path / "out", DecontamStep([str(eval_sets[0])]), progress=False)
    assert again.created_at == first.created_at and first.accounting.drops["decontam:gsm8k"] == 2
    write_jsonl(eval_sets[0], [{"question": PROBLEM}])  # same file name, new content → re-run
    third = run_decontam(src, tmp_path / "out", DecontamStep([str(eval_sets[0])]), progress=False)
    assert third.created_at != first.created_at and dict(third.accounting.drops) == {"decontam:gsm8k": 1}
