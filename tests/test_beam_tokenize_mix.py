"""Beam tokenize and build-mix give byte-identical outputs to the local commands."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import pytest

from beam_pipelines import build_mix as beam_mix
from beam_pipelines import tokenize as beam_tokenize
from stepcrawl.document import Document, Span
from stepcrawl.io import write_documents

ROOT = Path(__file__).resolve().parent.parent


def _tree(folder: Path, skip=("wall_time_s",)) -> dict[str, object]:
    """{relative path: sha256, or the parsed JSON without wall times} for every file."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        rel = str(f.relative_to(folder))
        if f.suffix == ".json":
            d = json.loads(f.read_text())

            def strip(x):
                if isinstance(x, dict):
                    return {k: strip(v) for k, v in x.items() if k not in skip}
                if isinstance(x, list):
                    return [strip(v) for v in x]
                return x

            out[rel] = strip(d)
        else:
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import collections
    import textwrap

    root = tmp_path_factory.mktemp("beam_tok_corpus")
    texts = [json.loads(x)["text"] for x in (ROOT / "samples/quality/positive.jsonl").read_text().splitlines()[:60]]
    web = [Document(id=f"w{i}", text=t, source="web", kind="web", lang="en", url=f"https://x.test/{i}", tier=["High", "Medium"][i % 2])
           for i, t in enumerate(texts)]
    code = [Document(id=f"c{i}", text=inspect.getsource(m)[:6000], source="code", kind="code", meta={"path": m.__name__})
            for i, m in enumerate((collections, textwrap, json))]
    chat = "<|user|>Fix the bug in parse().<|end|><|assistant|>Use int(x) instead.<|end|>"
    cut = chat.index("<|assistant|>")
    tool = [Document(id="t0", text=chat, source="tool_use", kind="tool_use", spans=[Span(0, cut, "user", False), Span(cut, len(chat), "assistant", True)])]
    write_documents(root / "web" / "part-00000.parquet", web[:25])
    write_documents(root / "web" / "part-00001.parquet", web[25:])
    write_documents(root / "code" / "part-00000.parquet", code)
    write_documents(root / "tool_use" / "part-00000.parquet", tool)
    (root / "_work").mkdir()
    write_documents(root / "_work" / "part-00000.parquet", web[:3])  # ignored, as locally
    return root


def test_beam_tokenize_equals_local(corpus, tmp_path):
    from tokenizer.encode import tokenize_corpus
    from tokenizer.train import TokenizerConfig, train_tokenizer

    tok = tmp_path / "tok"
    train_tokenizer([corpus], tok, TokenizerConfig(vocab_size=600, threads=1))
    tokenize_corpus(corpus, tok, tmp_path / "local", workers=1, progress=False)
    beam_tokenize.run(["--input", str(corpus), "--tokenizer", str(tok), "--output", str(tmp_path / "beam"), "--runner", "DirectRunner"])
    local, beam = _tree(tmp_path / "local"), _tree(tmp_path / "beam")
    assert set(beam) == set(local) and {"web/part-00001.bin", "tool_use/manifest.json"} <= set(beam)
    assert {k: v for k, v in beam.items() if not k.endswith(".done.json")} == {k: v for k, v in local.items() if not k.endswith(".done.json")}
    # a re-run skips finished shards (their .done.json markers) and rewrites the same manifests
    before = (tmp_path / "beam" / "web" / "part-00000.bin").stat().st_mtime_ns
    beam_tokenize.run(["--input", str(corpus), "--tokenizer", str(tok), "--output", str(tmp_path / "beam"), "--runner", "DirectRunner"])
    assert (tmp_path / "beam" / "web" / "part-00000.bin").stat().st_mtime_ns == before
    assert _tree(tmp_path / "beam") == beam


def test_beam_build_mix_equals_local(tmp_path):
    from curricula.mixer import build_mix
    from curricula.synthetic import write_corpus

    tokens = tmp_path / "tokens"
    write_corpus(tokens, {s: 120 for s in ("web", "code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning")},
                 min_len=32, max_len=1200, docs_per_shard=50)
    curriculum = str(ROOT / "curricula" / "tiny.yaml")
    build_mix(curriculum, "mid", tokens, tmp_path / "local", seed=3, progress=False)
    beam_mix.run(["--curriculum", curriculum, "--stage", "mid", "--tokens", str(tokens), "--output", str(tmp_path / "beam"),
                  "--seed", "3", "--runner", "DirectRunner"])
    local, beam = _tree(tmp_path / "local"), _tree(tmp_path / "beam")
    assert len([k for k in beam if k.endswith("tokens.bin")]) == 2  # mid1 and mid2, built as two Beam elements
    assert beam == local
