"""Our corpus read by tools we did not write: Hugging Face ``datasets`` and datatrove's
ParquetReader → filter → ParquetWriter, with the quality signals still queryable; the old
map-typed ``quality`` column still readable; ``stepcrawl export`` layouts."""

from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stepcrawl.cli import main
from stepcrawl.document import ARROW_SCHEMA, QUALITY_EXTRA_KEY, QUALITY_SIGNALS, Document, Span, datatrove_schema
from stepcrawl.io import read_documents, write_documents

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _web(i: int) -> Document:
    return Document(id=f"web{i}", text=f"A web page number {i}. It has sentences.", source="web", kind="web",
                    url=f"http://site.example/{i}", lang="en", lang_score=0.9, fetched_at="2024-01-01T00:00:00Z",
                    meta={"title": f"page {i}"}, tier=["High", "Low"][i % 2], cluster=i % 3,
                    quality={"fineweb_quality": float(i % 2 == 0), "gopher_quality": 1.0, "n_words": 7.0,
                             "heuristic_score": 0.5 + i / 100, "ensemble_score": 0.4},
                    warc_file="a.warc.gz", warc_offset=100 * i)


def _mixed() -> list[Document]:
    """Nullness varies across documents (code has no url/lang score/tier, chat has spans, one
    signal is not registered): what breaks schema inference in other tools."""
    chat = "<|user|>hi<|end|><|assistant|>hello<|end|>"
    return [
        Document(id="code0", text="def f():\n    return 1\n", source="code", kind="code",
                 meta={"repo": "o/r", "path": "f.py", "license": "MIT"},
                 quality={"code_rule_hits": 0.0, "code_rule:minified": 0.0, "future_signal": 3.5}),
        _web(1),
        Document(id="chat0", text=chat, source="tool_use", kind="tool_use", lang="en",
                 spans=[Span(0, 17, "user", False), Span(17, len(chat), "assistant", True)]),
        _web(2),
    ]


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    write_documents(root / "web" / "part-00000.parquet", [_web(i) for i in range(6)])
    write_documents(root / "mixed" / "part-00000.parquet", _mixed())
    return root


def test_quality_is_a_struct_with_every_registered_signal(tmp_path):
    qtype = ARROW_SCHEMA.field("quality").type
    assert pa.types.is_struct(qtype) and [f.name for f in qtype] == list(QUALITY_SIGNALS)
    # every signal our stages write is registered (else it would travel in meta.quality_extra)
    from stepcrawl.quality.signals import FILTER_NAMES, signal_values
    from stepcrawl.sources.code import RULE_NAMES

    produced = {*FILTER_NAMES, *signal_values("Some text here.\nAnother line."), "fasttext_hq", "heuristic_score",
                "ensemble_score", "contam_ngrams", "code_rule_hits", *(f"code_rule:{r}" for r in RULE_NAMES)}
    assert produced <= set(QUALITY_SIGNALS)


def test_round_trip_keeps_unregistered_signals_and_reads_the_old_map_column(tmp_path):
    docs = _mixed()
    write_documents(tmp_path / "new.parquet", docs)
    back = list(read_documents(tmp_path / "new.parquet"))
    assert back == docs  # dataclass equality: every field, quality_extra folded back in
    assert QUALITY_EXTRA_KEY not in back[0].meta and back[0].quality["future_signal"] == 3.5
    # a shard written before the struct: quality as map<string, double>
    old_schema = ARROW_SCHEMA.set(ARROW_SCHEMA.get_field_index("quality"),
                                  pa.field("quality", pa.map_(pa.string(), pa.float64())))
    recs = [d.to_record() | {"quality": sorted(d.quality.items()), "meta": json.dumps(d.meta)} for d in docs]
    pq.write_table(pa.Table.from_pylist(recs, schema=old_schema), tmp_path / "old.parquet")
    assert list(read_documents(tmp_path / "old.parquet")) == docs


def test_datasets_load_dataset_reads_every_source(corpus):
    datasets = pytest.importorskip("datasets")
    for source, n in (("web", 6), ("mixed", 4)):
        ds = datasets.load_dataset("parquet", data_files=str(corpus / source / "*.parquet"), split="train",
                                   cache_dir=str(corpus.parent / "hf_cache"))
        assert len(ds) == n
        assert set(ds.column_names) == set(ARROW_SCHEMA.names)
        # the quality signals are a dict column: filter on one like any other field
        if source == "web":
            kept = ds.filter(lambda r: r["quality"]["fineweb_quality"] == 1.0)
            assert sorted(kept["id"]) == ["web0", "web2", "web4"]
    both = datasets.load_dataset("parquet", data_files=[str(p) for p in sorted(corpus.glob("*/*.parquet"))],
                                 split="train", cache_dir=str(corpus.parent / "hf_cache"))
    assert len(both) == 10  # one schema across sources: they concatenate


def _run_datatrove(src, dst, logs, writer_kwargs):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import LambdaFilter
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    keep_hq = LambdaFilter(lambda d: (d.metadata.get("quality") or {}).get("fineweb_quality") != 0.0)
    LocalPipelineExecutor(pipeline=[ParquetReader(str(src)), keep_hq, ParquetWriter(str(dst), **writer_kwargs)],
                          tasks=1, logging_dir=str(logs)).run()
    return sorted(p for p in dst.rglob("*.parquet"))


def test_datatrove_reader_filter_writer_round_trip(corpus, tmp_path):
    pytest.importorskip("datatrove")
    # a source whose fields are uniformly filled: datatrove's defaults, unchanged
    files = _run_datatrove(corpus / "web", tmp_path / "dt_web", tmp_path / "logs1", {})
    out = pa.concat_tables([pq.read_table(f) for f in files])
    hq = pc.struct_field(pc.struct_field(out.column("metadata"), "quality"), "fineweb_quality")
    assert pc.all(pc.equal(hq, 1.0)).as_py() and out.num_rows == 3  # still queryable after the round trip
    back = sorted(read_documents(tmp_path / "dt_web"), key=lambda d: d.id)
    assert back == [_web(i) for i in (0, 2, 4)]
    # nullness varying between documents: datatrove's writer needs an explicit schema (its own
    # docs say so); ours is datatrove_schema()
    files = _run_datatrove(corpus / "mixed", tmp_path / "dt_mixed", tmp_path / "logs2", {"schema": datatrove_schema()})
    back = sorted(read_documents(tmp_path / "dt_mixed"), key=lambda d: d.id)
    assert back == sorted([d for d in _mixed() if d.id != "web1"], key=lambda d: d.id)


def test_export_formats(corpus, tmp_path, capsys):
    pytest.importorskip("datatrove")
    for fmt in ("datatrove", "hf", "jsonl"):
        assert main(["export", str(corpus), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        back = sorted(read_documents(tmp_path / fmt), key=lambda d: d.id)
        assert back == sorted([_web(i) for i in range(6)] + _mixed(), key=lambda d: d.id), fmt
    t = pq.read_table(tmp_path / "datatrove" / "web" / "part-00000.parquet")
    assert t.column_names == ["text", "id", "metadata"]
    md = t.column("metadata").to_pylist()[0]
    assert md["language"] == "en" and md["quality"]["gopher_quality"] == 1.0
    with gzip.open(tmp_path / "jsonl" / "mixed" / "part-00000.jsonl.gz", "rt") as fh:
        first = json.loads(fh.readline())
    assert first["metadata"]["meta"] == {"license": "MIT", "path": "f.py", "repo": "o/r", QUALITY_EXTRA_KEY: {"future_signal": 3.5}}
    # datatrove's own JSONL reader takes the jsonl export as is (it needs orjson)
    import importlib.util

    if importlib.util.find_spec("orjson"):
        from datatrove.pipeline.readers import JsonlReader

        docs = list(JsonlReader(str(tmp_path / "jsonl" / "web"))())
        assert len(docs) == 6 and docs[0].metadata["language"] == "en"
    with pytest.raises(SystemExit) as exc:  # argparse: a format we do not write
        main(["export", str(corpus), "--format", "nope", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
