"""Tokenizer: real sentencepiece training, round trips, special tokens, span-aligned masks,
Megatron shards with manifests, resume and parallel/serial equality."""

import inspect
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.document import Document, Span
from stepcrawl.io import write_documents
from tokenizer import special
from tokenizer.encode import Tokenizer, encode_shard, tokenize_corpus, verify_shards
from tokenizer.indexed import IndexedDataset
from tokenizer.masks import LOSS, META
from tokenizer.meta import meta_body, parse_meta_body
from tokenizer.train import TokenizerConfig, chunk_text, train_tokenizer

MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Der schnelle braune Fuchs springt über den faulen Hund; Größe und Übermaß.",
    "Le renard brun rapide saute par-dessus le chien paresseux, n'est-ce pas ?",
    "敏捷的棕色狐狸跳过了懒狗。这是一个用于测试分词器的中文句子。",
    "素早い茶色の狐がのろまな犬を飛び越える。日本語の文章です。",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول",
]


def _stdlib_sources(n: int) -> list[str]:
    import collections, json as _json, textwrap  # real code that exists on every machine

    return [inspect.getsource(m)[:30000] for m in (collections, _json.decoder, textwrap, inspect)][:n]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    code = [
        Document(id=f"code{i}", text=t, source="code", kind="code", lang="en", meta={"repo": "cpython", "path": f"m{i}.py"})
        for i, t in enumerate(_stdlib_sources(4))
    ]
    web = [
        Document(id=f"web{i}", text=(MULTILINGUAL[i % len(MULTILINGUAL)] + "\n") * 20, source="web", kind="web",
                 lang="en", url=f"http://site{i % 3}.example/page{i}", tier=["High", "Medium"][i % 2])
        for i in range(40)
    ]
    chat_text = "<|user|>Fix the bug in parse().<|end|><|assistant|>Use int(x) instead.<|end|>"
    u_end = chat_text.index("<|assistant|>")
    chat = [
        Document(id="chat0", text=chat_text, source="tool_use", kind="tool_use", lang="en",
                 spans=[Span(0, u_end, "user", False), Span(u_end, len(chat_text), "assistant", True)])
    ]
    write_documents(root / "code" / "part-00000.parquet", code)
    write_documents(root / "web" / "part-00000.parquet", web[:25])
    write_documents(root / "web" / "part-00001.parquet", web[25:])
    write_documents(root / "tool_use" / "part-00000.parquet", chat)
    return root


@pytest.fixture(scope="module")
def tok_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    info = train_tokenizer([corpus], out, TokenizerConfig(vocab_size=1200, threads=2))
    assert info["vocab_size"] == 1200 and info["padded_vocab_size"] == 1280
    return out


def test_special_ids_fixed_and_markers_are_single_tokens(tok_dir):
    tok = Tokenizer(tok_dir)
    assert (tok.pad_id, tok.sp.bos_id(), tok.eos_id, tok.sp.unk_id()) == (0, 1, 2, 3)
    for marker in special.SPLIT_MARKERS:
        ids = tok.encode_with_markers(f"before {marker} after")
        assert tok.special_ids[marker] in ids
        assert tok.decode(ids) == f"before {marker} after"
    # In plain text a marker is literal: it can never forge a role boundary.
    assert not set(tok.encode_text("x <|user|> y")) & set(tok.special_ids.values())


@pytest.mark.parametrize("text", MULTILINGUAL + ["def f(x):\n\treturn  x ** 2  # naïve\n\n\n", "1234567890 3.14159", "🙂 emoji + \x00 nul"])
def test_round_trip_multilingual_and_code(tok_dir, text):
    tok = Tokenizer(tok_dir)
    assert tok.decode(tok.encode_text(text)) == text


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(tok_dir, text):
    tok = Tokenizer(tok_dir)
    assert tok.decode(tok.encode_text(text)) == text


def test_document_encoding_flags_meta_and_spans(tok_dir):
    tok = Tokenizer(tok_dir)
    text = "<|user|>Question?<|end|><|assistant|>Answer.<|end|>"
    cut = text.index("<|assistant|>")
    doc = Document(id="c", text=text, kind="tool_use", source="tool_use", lang="en",
                   spans=[Span(0, cut, "user", False), Span(cut, len(text), "assistant", True)])
    ids, flags = tok.encode_document(doc)
    assert ids[0] == tok.special_ids[special.META_OPEN]
    close = list(ids).index(tok.special_ids[special.META_CLOSE])
    assert (flags[: close + 1] == LOSS | META).all()
    body_ids, body_flags = ids[close + 1 : -1], flags[close + 1 : -1]
    assert ids[-1] == tok.eos_id and flags[-1] == LOSS
    a = list(body_ids).index(tok.special_ids["<|assistant|>"])
    assert (body_flags[:a] == 0).all() and (body_flags[a:] == LOSS).all()
    assert tok.decode(body_ids) == text
    assert parse_meta_body(tok.decode(ids[1:close])) == {"type": "ToolUse", "lang": "EN", "domain": "unknown", "source": "tool_use"}


def test_batch_encoding_equals_single(tok_dir, corpus):
    from stepcrawl.io import read_documents

    tok = Tokenizer(tok_dir)
    docs = list(read_documents(corpus))
    batch = tok.encode_documents(docs)
    for d, (ids, flags) in zip(docs, batch):
        ids1, flags1 = tok.encode_document(d)
        assert np.array_equal(ids, ids1) and np.array_equal(flags, flags1)


def test_tokenize_corpus_shards_manifest_and_parallel_equality(tok_dir, corpus, tmp_path):
    serial = tokenize_corpus(corpus, tok_dir, tmp_path / "a", workers=1, progress=False)
    parallel = tokenize_corpus(corpus, tok_dir, tmp_path / "b", workers=2, progress=False)
    assert set(serial) == {"code", "web", "tool_use"}
    tok = Tokenizer(tok_dir)
    for name in serial:
        assert serial[name]["shards"] == parallel[name]["shards"]  # same bytes (sha256)
        assert verify_shards(tmp_path / "a" / name) == []
        m = json.loads((tmp_path / "a" / name / "manifest.json").read_text())
        total = 0
        for shard in m["shards"]:
            ds = IndexedDataset(tmp_path / "a" / name / shard["name"])
            mask = IndexedDataset(tmp_path / "a" / name / (shard["name"] + ".mask"))
            assert np.array_equal(ds.sizes, mask.sizes)
            assert all(int(ds[i][-1]) == tok.eos_id for i in range(len(ds)))
            total += ds.n_elements
        assert total == m["n_tokens"] == sum(m["by_tier"].values())
    assert serial["web"]["n_docs"] == 40 and set(serial["web"]["by_tier"]) == {"High", "Medium"}


def test_tokenize_resumes_and_detects_corruption(tok_dir, corpus, tmp_path):
    out = tmp_path / "t"
    first = tokenize_corpus(corpus, tok_dir, out, progress=False)
    # Simulate a crash after one shard: remove the other shard's marker and files.
    victim = out / "web" / "part-00001"
    for p in out.joinpath("web").glob("part-00001*"):
        p.unlink()
    done_before = (out / "web" / "part-00000.done.json").stat().st_mtime_ns
    second = tokenize_corpus(corpus, tok_dir, out, progress=False)
    assert second["web"]["shards"] == first["web"]["shards"]
    assert (out / "web" / "part-00000.done.json").stat().st_mtime_ns == done_before  # skipped
    assert victim.with_suffix(".bin").exists()
    with open(out / "web" / "part-00000.bin", "r+b") as fh:
        fh.write(b"\xff\xff")
    assert verify_shards(out / "web") == ["part-00000.bin"]


def test_clear_errors(tok_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-tokenizer"):
        Tokenizer(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no source folders"):
        tokenize_corpus(tmp_path / "empty", tok_dir, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="no Parquet/JSONL"):
        train_tokenizer([tmp_path / "empty"], tmp_path / "t2", TokenizerConfig(vocab_size=300))


def test_chunking_keeps_lines_and_limits():
    text = "a" * 25 + "\nshort\n" + "b" * 5
    chunks = list(chunk_text(text, 10))
    assert "".join(chunks) == text and all(len(c) <= 10 for c in chunks)


def test_meta_body_is_clean():
    d = Document(id="x", text="t", kind="code", source="code", lang="zh", meta={"repo": "a b=c/d"})
    body = meta_body(d)
    assert body == "type=Code lang=ZH domain=a_b_c/d source=code"
    assert parse_meta_body(body)["domain"] == "a_b_c/d"


def test_cli_train_and_tokenize(corpus, tmp_path):
    from stepcrawl.cli import main

    assert main(["train-tokenizer", str(corpus), "--vocab-size", "600", "--out", str(tmp_path / "tk"), "--threads", "1"]) == 0
    assert main(["tokenize", str(corpus), "--tokenizer", str(tmp_path / "tk"), "--out", str(tmp_path / "tokens"), "--workers", "1"]) == 0
    assert (tmp_path / "tokens" / "web" / "manifest.json").exists()
    assert main(["tokenize", str(corpus), "--tokenizer", str(tmp_path / "tk"), "--out", str(tmp_path / "x"), "--sources", "nope"]) == 2


def test_tokenize_split_tiers_one_dataset_per_source_and_tier(tok_dir, corpus, tmp_path):
    """`stepcrawl tokenize --split-tiers`: web → web.High + web.Medium (own manifests, same
    per-document tokens as the default layout); untiered sources keep their folder; resumable;
    the curricula read a tier dataset like any source."""
    import pyarrow.parquet as pq

    from curricula.planner import read_source_manifest
    from stepcrawl.cli import main

    whole = tokenize_corpus(corpus, tok_dir, tmp_path / "whole", progress=False)
    out = tmp_path / "split"
    assert main(["tokenize", str(corpus), "--tokenizer", str(tok_dir), "--out", str(out),
                 "--workers", "2", "--split-tiers"]) == 0
    names = sorted(p.name for p in out.iterdir() if (p / "manifest.json").exists())
    assert names == ["code", "tool_use", "web.High", "web.Medium"]
    assert not (out / "web").exists()  # every web document has a tier

    def doc_tokens(folder):
        m = json.loads((folder / "manifest.json").read_text())
        got = {}
        for shard in m["shards"]:
            ds = IndexedDataset(folder / shard["name"])
            mask = IndexedDataset(folder / (shard["name"] + ".mask"))
            rows = pq.read_table(folder / f"{shard['name']}.docs.parquet").to_pylist()
            assert len(rows) == len(ds) == shard["n_docs"]
            for i, row in enumerate(rows):
                got[row["doc_id"]] = (row["tier"], ds[i].tolist(), mask[i].tolist())
        return m, got

    _, web_whole = doc_tokens(tmp_path / "whole" / "web")
    seen = {}
    for tier in ("High", "Medium"):
        m, got = doc_tokens(out / f"web.{tier}")
        assert m["source"] == f"web.{tier}" and m["split_of"] == "web" and m["tier"] == tier
        assert m["by_tier"] == {tier: m["n_tokens"]} and m["n_docs"] == 20
        assert {t for t, _, _ in got.values()} == {tier}
        assert verify_shards(out / f"web.{tier}") == []
        seen.update(got)
    assert seen == web_whole  # nothing lost, duplicated or re-encoded differently
    assert json.loads((out / "code" / "manifest.json").read_text())["shards"] == whole["code"]["shards"]

    # Resume: finished units are skipped (markers live in OUT/_split/, not in a dataset folder).
    marker = out / "_split" / "web" / "part-00000.done.json"
    before = marker.stat().st_mtime_ns
    again = tokenize_corpus(corpus, tok_dir, out, progress=False, split_tiers=True)
    assert marker.stat().st_mtime_ns == before
    assert again["web.High"]["n_tokens"] == read_source_manifest(out, "web.High").n_tokens
    assert read_source_manifest(out, "web.High").by_tier == {"High": again["web.High"]["n_tokens"]}
