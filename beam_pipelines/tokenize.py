"""``python -m beam_pipelines.tokenize``: a corpus → Megatron token shards, with Apache Beam.

What is distributed: the work units of ``stepcrawl tokenize`` (``tokenizer.encode``) — one
input document file → one output shard ``TOKENS/<source>/part-NNNNN`` — become Beam elements
(``Create`` → ``Reshuffle`` → ``ParDo(EncodeFile)``), so shards are encoded on as many workers
as there are files. Each worker runs the tokenizer's own ``encode_shard`` (same batching,
same masks, same ``.docs.parquet`` rows), so every shard is byte-identical to the local
command's; only the per-source ``manifest.json`` is assembled here (same fields) from the
shard records once all shards are done.

File access goes through ``FileSystems``: remote inputs and the tokenizer folder are copied
to the worker's temp disk (sentencepiece and the shard writer need local files), finished
shards are copied to the output and a ``part-NNNNN.done.json`` marker is written last, so a
re-run skips finished shards exactly like the local command.

Example::

    python -m beam_pipelines.tokenize --input data/corpus --tokenizer data/tokenizer \\
        --output data/tokens --runner DirectRunner --direct_num_workers 2
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines import io as bio
from beam_pipelines.options import make_options, run_pipeline
from beam_pipelines.transforms import NAMESPACE

log = logging.getLogger(__name__)

DOC_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class FileTask:
    source: str
    input_file: str  # any FileSystems path
    out_prefix: str  # TOKENS/<source>/part-NNNNN (any FileSystems path)
    tokenizer_dir: str
    with_meta: bool = True


def corpus_sources(corpus: str) -> dict[str, str]:
    """Source name → folder, by ``tokenizer.encode.corpus_sources``' rules, through FileSystems:
    a folder that directly holds document files is one source named after itself; otherwise
    each visible sub-folder with document files is a source."""
    corpus = corpus.rstrip("/")
    files = bio.list_document_files(corpus)
    if not files:
        raise FileNotFoundError(f"{corpus}: no Parquet/JSONL document files")
    rels = [f[len(corpus) :].lstrip("/") for f in files]
    if any("/" not in r and r.endswith(DOC_SUFFIXES) for r in rels):
        return {FileSystems.split(corpus)[1]: corpus}
    names = sorted({top for r in rels if "/" in r and not bio.is_hidden_part(top := r.split("/", 1)[0])})
    return {n: FileSystems.join(corpus, n) for n in names}


def _path_key(path: str) -> list[str]:
    # pathlib sorts by path components; sort the same way so part numbers match the local run
    return path.split("/")


def plan_tasks(folders: dict[str, str], tokenizer_dir: str, out_dir: str, with_meta: bool = True) -> list[FileTask]:
    """One task per document file of each source folder (``{name: folder}``), numbered
    ``part-NNNNN`` in the local command's file order."""
    tasks = []
    for name, folder in folders.items():
        files = sorted(bio.list_document_files(folder), key=_path_key)
        for i, f in enumerate(files):
            prefix = FileSystems.join(out_dir.rstrip("/"), name, f"part-{i:05d}")
            tasks.append(FileTask(name, f, prefix, tokenizer_dir, with_meta))
    return tasks


def encode_file(task: FileTask) -> dict:
    """Encode one file with ``tokenizer.encode.encode_shard`` in a local temp folder and copy
    the shard out (skipped when the output's ``.done.json`` marker exists)."""
    import os
    import tempfile

    from tokenizer.encode import SHARD_FILES, EncodeTask, encode_shard

    done = task.out_prefix + ".done.json"
    if FileSystems.exists(done):
        return bio.read_json(done)
    tok_dir = localize_folder(task.tokenizer_dir, ("tokenizer.model", "tokenizer.json"))
    with tempfile.TemporaryDirectory(prefix="stepcrawl-tok-") as tmp:
        local_in = bio.localize(task.input_file)
        name = FileSystems.split(task.out_prefix)[1]
        local_prefix = os.path.join(tmp, name)
        record = encode_shard(EncodeTask(task.source, local_in, local_prefix, tok_dir, task.with_meta))
        record["input"] = task.input_file
        out_folder = FileSystems.split(task.out_prefix)[0]
        bio.upload_folder(tmp, out_folder, [name + ext for ext in SHARD_FILES])
    bio.write_json(done, record)
    return record


def localize_folder(folder: str, names: Sequence[str]) -> str:
    """A local folder holding ``names`` of ``folder`` (itself when local)."""
    if not bio.is_remote(folder):
        return folder
    copies = [bio.localize(FileSystems.join(folder, n)) for n in names if FileSystems.exists(FileSystems.join(folder, n))]
    return FileSystems.split(copies[0])[0]


class EncodeFile(beam.DoFn):
    def setup(self) -> None:
        self.shards = Metrics.counter(NAMESPACE + ".tokenize", "shards")
        self.docs = Metrics.counter(NAMESPACE + ".tokenize", "docs")
        self.tokens = Metrics.counter(NAMESPACE + ".tokenize", "tokens")

    def process(self, task: FileTask) -> Iterator[tuple[str, tuple[str, dict]]]:
        rec = encode_file(task)
        self.shards.inc()
        self.docs.inc(rec["n_docs"])
        self.tokens.inc(rec["n_tokens"])
        yield task.source, (task.out_prefix, rec)


def source_manifest(name: str, corpus_folder: str, tok: dict, dtype: str, with_meta: bool, recs: list[dict], wall_s: float) -> dict:
    """``manifest.json`` of one source, field for field as ``tokenizer.encode.tokenize_corpus``."""
    from tokenizer.encode import input_drops

    by_tier: dict[str, int] = {}
    for r in recs:
        for tier, n in r["by_tier"].items():
            by_tier[tier] = by_tier.get(tier, 0) + n
    return {
        "source": name,
        "corpus": corpus_folder,
        "tokenizer": tok,
        "dtype": dtype,
        "with_meta": with_meta,
        "n_docs": sum(r["n_docs"] for r in recs),
        "n_tokens": sum(r["n_tokens"] for r in recs),
        "by_tier": dict(sorted(by_tier.items())),
        "shards": [{k: r[k] for k in ("name", "n_docs", "n_tokens", "sha256")} for r in recs],
        **input_drops(recs),  # malformed input records skipped (FILE:LINE: why), as locally
        "wall_time_s": round(wall_s, 3),
    }


class WriteSourceManifest(beam.DoFn):
    def __init__(self, out_dir: str, folders: dict[str, str], tok: dict, dtype: str, with_meta: bool, t0: float) -> None:
        self.out_dir, self.folders, self.tok, self.dtype, self.with_meta, self.t0 = out_dir, folders, tok, dtype, with_meta, t0

    def process(self, element) -> Iterator[str]:
        name, items = element
        recs = [r for _, r in sorted(items, key=lambda x: x[0])]  # shard order
        m = source_manifest(name, self.folders[name], dict(self.tok), self.dtype, self.with_meta, recs, time.time() - self.t0)
        path = FileSystems.join(self.out_dir.rstrip("/"), name, "manifest.json")
        bio.write_json(path, m)
        yield path


def tokenizer_info(tokenizer_dir: str) -> tuple[dict, str]:
    """(``{"path", "sha256", "vocab_size"}``, token dtype name) as the local command records them."""
    import numpy as np

    from tokenizer.encode import Tokenizer

    tok = Tokenizer(localize_folder(tokenizer_dir, ("tokenizer.model", "tokenizer.json")))
    return {"path": tokenizer_dir, "sha256": tok.sha256, "vocab_size": tok.vocab_size}, np.dtype(tok.dtype).name


def build_pipeline(p: beam.Pipeline, corpus: str, tokenizer_dir: str, out_dir: str, sources: list[str] | None = None, with_meta: bool = True):
    from tokenizer.encode import select_sources

    t0 = time.time()
    folders = select_sources(corpus_sources(corpus), sources)  # the corpus is listed once
    tasks = plan_tasks(folders, tokenizer_dir, out_dir, with_meta)
    tok, dtype = tokenizer_info(tokenizer_dir)
    return (
        p
        | "Files" >> beam.Create(tasks)
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> beam.ParDo(EncodeFile())
        | "BySource" >> beam.GroupByKey()
        | "Manifests" >> beam.ParDo(WriteSourceManifest(out_dir, folders, tok, dtype, with_meta, t0))
    )


def run(argv: Sequence[str] | None = None) -> Any:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m beam_pipelines.tokenize",
        description="Encode a corpus into Megatron token shards (same output as `stepcrawl tokenize`) with Apache Beam.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="pipeline options (required): --input CORPUS --tokenizer TOKENIZER_DIR --output TOKENS\n"
        "Beam options (--runner, --num_workers, --setup_file, …) are passed through. Example:\n"
        "  python -m beam_pipelines.tokenize --input data/corpus --tokenizer data/tokenizer \\\n"
        "      --output data/tokens --runner DirectRunner --direct_num_workers 2\n",
    )
    ap.add_argument("--sources", help="comma-separated sources to encode (default: all)")
    ap.add_argument("--no_meta", "--no-meta", action="store_true", help="do not prepend the meta string")
    args, rest = ap.parse_known_args(list(argv) if argv is not None else sys.argv[1:])
    opts, ours = make_options(rest, "input", "output", "tokenizer")
    sources = args.sources.split(",") if args.sources else None
    return run_pipeline(opts, lambda p: build_pipeline(p, ours.input, ours.tokenizer, ours.output, sources, not args.no_meta))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
