"""Contracts shared by every stage: Document schema round trip, atomic writes, manifests,
and the Megatron indexed-dataset format."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.document import Document, Span, text_id
from stepcrawl.io import ShardWriter, atomic_open, read_documents, write_documents
from stepcrawl.manifest import Accounting, AccountingError, StageManifest, config_hash
from stepcrawl.steps import DocumentStep, Drop, run_steps
from tokenizer.indexed import IndexedDataset, IndexedDatasetFormatError, IndexedDatasetWriter


def test_document_parquet_round_trip(tmp_path):
    doc = Document(
        id="a", text="héllo wörld 你好", source="web-en", kind="web", url="http://x/",
        lang="en", lang_score=0.9, meta={"title": "T", "n": 3}, quality={"q": 0.5},
        tier="High", spans=[Span(0, 5, "user", False), Span(5, 9, "assistant", True)],
        warc_file="a.warc.gz", warc_offset=123,
    )
    write_documents(tmp_path / "x.parquet", [doc, Document(id="b", text="second")])
    back = list(read_documents(tmp_path))
    assert back[0] == doc
    assert back[1].id == "b" and back[1].n_chars == 6 and back[1].spans is None


def test_foreign_jsonl_needs_only_text_and_reports_bad_lines(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "abc"}\n{broken\n[1,2]\n{"id": "z", "text": "def"}\n')
    errors = []
    docs = list(read_documents(f, on_error=errors.append))
    assert [d.text for d in docs] == ["abc", "def"]
    assert docs[0].id == text_id("abc")
    assert [(e.line) for e in errors] == [2, 3]
    assert all(str(f) in str(e) for e in errors)


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_shard_writer_rotates(tmp_path):
    with ShardWriter(tmp_path, shard_docs=2) as w:
        for i in range(5):
            w.write(Document(id=str(i), text="t" * i))
    assert len(w.files) == 3
    assert [d.id for d in read_documents(tmp_path)] == ["0", "1", "2", "3", "4"]


class _DropOdd(DocumentStep):
    name = "drop-odd"

    def process(self, doc):
        return Drop("odd") if int(doc.id) % 2 else doc.replace(text=doc.text.upper())


def test_run_steps_accounting_and_manifest(tmp_path):
    acc = Accounting()
    kept = list(run_steps([Document(id=str(i), text="ab") for i in range(7)], [_DropOdd()], acc))
    assert [d.text for d in kept] == ["AB"] * 4
    acc.check()
    m = StageManifest("toy", {"a": 1}, config_hash({"a": 1}), None, acc)
    m.write(tmp_path)
    back = StageManifest.read(tmp_path)
    assert back.accounting.drops == {"odd": 3} and back.accounting.docs_out == 4
    acc.docs_out += 1
    with pytest.raises(AccountingError):
        acc.check("toy")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2**31 - 1), max_size=50), max_size=30))
def test_indexed_dataset_round_trip(tmp_path_factory, seqs):
    prefix = tmp_path_factory.mktemp("idx") / "shard"
    with IndexedDatasetWriter(prefix, dtype=np.int32) as w:
        for s in seqs:
            w.add(s)
    ds = IndexedDataset(prefix)
    assert len(ds) == len(seqs)
    assert [list(map(int, x)) for x in ds] == seqs
    assert list(ds.document_indices) == list(range(len(seqs) + 1))


def test_indexed_dataset_matches_megatron_header_and_detects_truncation(tmp_path):
    prefix = tmp_path / "s"
    with IndexedDatasetWriter(prefix, dtype=np.uint16) as w:
        w.add([1, 2, 3])
        w.add([4])
    raw = (tmp_path / "s.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack("<QBQQ", raw[9:34]) == (1, 8, 2, 3)
    (tmp_path / "s.bin").write_bytes((tmp_path / "s.bin").read_bytes()[:-2])
    with pytest.raises(IndexedDatasetFormatError, match="bytes but the index"):
        IndexedDataset(prefix)


def test_indexed_writer_abort_writes_nothing(tmp_path):
    with pytest.raises(ValueError):
        with IndexedDatasetWriter(tmp_path / "s") as w:
            w.add([1, 2])
            raise ValueError("stop")
    assert list(tmp_path.iterdir()) == []


def test_cli_help_lists_commands():
    from stepcrawl.cli import build_parser

    assert "stepcrawl" in build_parser().format_help()


def test_stage_manifest_reusable_only_for_same_stage_config_and_known_input(tmp_path):
    acc = Accounting(docs_in=1, docs_out=1)
    StageManifest("dedup", {"a": 1}, "cfg", "in1", acc).write(tmp_path)
    assert StageManifest.reusable(tmp_path, "cfg", "in1", "dedup").accounting.docs_out == 1
    assert StageManifest.reusable(tmp_path, "cfg", "in1") is not None  # stage not asked
    assert StageManifest.reusable(tmp_path, "cfg", "in1", "cluster") is None
    assert StageManifest.reusable(tmp_path, "other", "in1", "dedup") is None
    assert StageManifest.reusable(tmp_path, "cfg", "in2", "dedup") is None
    assert StageManifest.reusable(tmp_path / "missing", "cfg", "in1") is None
    StageManifest("ingest", {}, "cfg", None, acc).write(tmp_path)
    assert StageManifest.reusable(tmp_path, "cfg", None) is None  # unknown input: never reused
