"""``stepcrawl export``: a curated corpus in the layout another tool expects.

Our own Parquet (``ARROW_SCHEMA``) already loads unchanged in Hugging Face ``datasets`` and
datatrove's ``ParquetReader``; ``export`` is for tools that want other *names*:

- ``datatrove``: Parquet with ``text``, ``id`` and one ``metadata`` struct holding every other
  field, the language as datatrove's filters name it (``language``, ``language_score``), written
  with ``datatrove_schema()`` so nullable fields keep their types;
- ``jsonl``: the same records as gzipped JSON lines, with ``meta`` as a real object (datatrove's
  ``JsonlReader`` and most other tools read it as is);
- ``hf``: our own schema, one folder per source (``load_dataset("parquet", data_dir=OUT/src)``).

Every output shard appears atomically; a malformed input record is reported (FILE:ROW) and
counted, the rest is exported.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from stepcrawl.document import Document, datatrove_schema, to_table
from stepcrawl.io import BadRecord, atomic_path, batched, document_files, read_documents, write_parquet

FORMATS = ("datatrove", "hf", "jsonl")


def datatrove_record(doc: Document) -> dict[str, Any]:
    """One document as datatrove's reader would hand it to its writer: text, id, metadata."""
    rec = doc.to_record()
    text, doc_id = rec.pop("text"), rec.pop("id")
    rec["language"], rec["language_score"] = rec.pop("lang"), rec.pop("lang_score")
    return {"text": text, "id": doc_id, "metadata": rec}


def jsonl_record(doc: Document) -> dict[str, Any]:
    rec = datatrove_record(doc)
    md = rec["metadata"]
    md["meta"] = json.loads(md["meta"])  # an object, not a JSON string, in JSON output
    md["quality"] = {k: v for k, v in md["quality"].items() if v is not None}
    return rec


@dataclass
class ExportReport:
    docs: Counter = field(default_factory=Counter)  # by source
    errors: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _sources(corpus: Path) -> dict[str, Path]:
    """Source name → folder: the per-source folders of a corpus, or the folder itself."""
    subs = {d.name: d for d in sorted(corpus.iterdir()) if d.is_dir() and not d.name.startswith((".", "_"))
            and d.name != "rejected" and document_files(d)} if corpus.is_dir() else {}
    return subs or {corpus.stem if corpus.is_file() else corpus.name: corpus}


def export_corpus(corpus: str | Path, out: str | Path, fmt: str, shard_docs: int = 10_000) -> ExportReport:
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    corpus, out = Path(corpus), Path(out)
    if not corpus.exists():
        raise FileNotFoundError(f"no such file or folder: {corpus}")
    report = ExportReport()
    schema = datatrove_schema()
    for name, folder in _sources(corpus).items():
        docs = read_documents(folder, on_error=lambda e: report.errors.append(str(e)))
        for i, chunk in enumerate(batched(docs, shard_docs)):
            report.docs[name] += len(chunk)
            if fmt == "jsonl":
                path = out / name / f"part-{i:05d}.jsonl.gz"
                with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as fh:
                    for d in chunk:
                        fh.write(json.dumps(jsonl_record(d), ensure_ascii=False) + "\n")
            else:
                path = out / name / f"part-{i:05d}.parquet"
                table = to_table(chunk) if fmt == "hf" else pa.Table.from_pylist([datatrove_record(d) for d in chunk], schema=schema)
                write_parquet(path, table)
            report.files.append(path)
    return report


__all__ = ["FORMATS", "BadRecord", "ExportReport", "datatrove_record", "export_corpus", "jsonl_record"]
