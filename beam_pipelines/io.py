"""Beam I/O for stepcrawl: a per-file WARC source, a Document Parquet sink, stage manifests.

All file access goes through ``apache_beam.io.filesystems.FileSystems`` so the same pipeline
reads ``gs://``, ``s3://``, ``hdfs://`` or local paths (tests/test_beam_pipelines.py checks
that nothing in ``beam_pipelines/`` opens files any other way).

Why a per-file source (``MatchFiles`` → ``Reshuffle`` → ``ParDo(ReadWarcFile)``) rather than a
splittable byte-range source: a gzipped WARC is a sequence of gzip members whose boundaries
are only known by reading, and Common Crawl files are ~1 GB each, so one file per work item
is the natural unit (the same choice as datatrove's WarcReader and cc_net). The Reshuffle
spreads files over workers after the (cheap) match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import time
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from stepcrawl.document import ARROW_SCHEMA, REJECTED_SCHEMA
from stepcrawl.manifest import MANIFEST_NAME, StageManifest

from beam_pipelines.transforms import drops_finish_bundle_outputs, tagged_outputs

log = logging.getLogger(__name__)

NAMESPACE = "stepcrawl"
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
_GLOB_CHARS = "*?["


def input_pattern(path: str) -> str:
    """A file, a glob, or a folder (→ every file below it, recursively) as one match pattern.

    Pure string logic (no filesystem call) so it works at graph-construction time for any
    scheme. ``**`` is Beam's recursive wildcard on every FileSystem.
    """
    if any(c in path for c in _GLOB_CHARS) or path.endswith(WARC_SUFFIXES):
        return path
    return path.rstrip("/") + "/**"  # "/" is the separator of every Beam FileSystem, local included


def is_warc_name(path: str) -> bool:
    name = posixpath.basename(path)
    return name.endswith(WARC_SUFFIXES) and not name.startswith(".")


def warc_name(path: str) -> str:
    """The ``warc_file`` provenance value: the file's base name, as the local reader records."""
    return posixpath.basename(path.rstrip("/"))


def iter_warc_records_any(path: str, max_payload: int | None = None) -> Iterator[Any]:
    """RawRecords of one WARC/ARC file on any FileSystem, read by the curation code itself.

    The file is streamed: ``FileSystems.open`` (uncompressed — the reader handles the gzip
    members and the record offsets itself) hands ``stepcrawl.readers.warc.iter_warc_records``
    a binary stream, so a 1 GB Common Crawl file on gs:// is neither copied to the worker's
    disk nor held in memory (a stream that cannot seek is spooled to a temporary file), and
    the local executor's reader (record selection, offsets, resynchronisation after damage,
    the per-record payload cap) is the only WARC reader. Damaged spans come out as records
    with ``drop_reason="warc:damaged"``, as locally.
    """
    from stepcrawl.readers.warc import DEFAULT_MAX_PAYLOAD, iter_warc_records

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        yield from iter_warc_records(fh, warc_name=warc_name(path), source_name=path,
                                     max_payload=max_payload or DEFAULT_MAX_PAYLOAD)


class ReadWarcFile(beam.DoFn):
    """One WARC/ARC file (path or ``FileMetadata``) → its RawRecords.

    A damaged byte span is a RawRecord with ``drop_reason="warc:damaged"`` (the extract step
    counts it, as locally) and reading goes on at the next record; each span is also logged,
    counted as ``stepcrawl:warc:damaged-spans`` and emitted as ``{file, offset, end, bytes,
    reason, error}`` on the tagged output ``damaged`` (the manifest's ``errors``) — the local
    executor's behaviour — or, with ``strict=True``, fails the bundle.
    """

    DAMAGED = "damaged"

    def __init__(self, strict: bool = False, max_payload: int | None = None) -> None:
        self.strict = strict
        self.max_payload = max_payload

    def setup(self) -> None:
        self.files = Metrics.counter(NAMESPACE, "warc:files")
        self.records = Metrics.counter(NAMESPACE, "warc:records")
        self.damaged = Metrics.counter(NAMESPACE, "warc:damaged-spans")

    def process(self, element) -> Iterator[Any]:
        from stepcrawl.readers.warc import DAMAGED, WarcReadError, damage_error

        path = element.path if hasattr(element, "path") else str(element)
        self.files.inc()
        for raw in iter_warc_records_any(path, getattr(self, "max_payload", None)):
            if raw.drop_reason == DAMAGED:
                err = damage_error(raw, path)
                if self.strict:
                    raise WarcReadError(path, raw.offset, err["error"], raw.end)
                self.damaged.inc()
                log.error("%s", err["error"])
                yield beam.pvalue.TaggedOutput(self.DAMAGED, err)
            self.records.inc()
            yield raw


class MatchWarc(beam.PTransform):
    """A file/folder/glob → ``FileMetadata`` of its WARC files (an empty match fails)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(input_pattern(self.path), empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "OnlyWarc" >> beam.Filter(lambda m: is_warc_name(m.path))
        )


class ReadWarcFiles(beam.PTransform):
    """WARC files (``FileMetadata`` or paths) → PCollection of ``RawRecord`` (tagged output
    ``damaged`` carries {file, offset, end, bytes, reason, error} per damaged span)."""

    def __init__(self, strict: bool = False, max_payload: int | None = None) -> None:
        super().__init__()
        self.strict, self.max_payload = strict, max_payload

    def expand(self, files):
        spread = files | "SpreadFiles" >> beam.Reshuffle()
        return tagged_outputs(spread, "ReadRecords", ReadWarcFile(self.strict, self.max_payload), ReadWarcFile.DAMAGED, main="records")


class ReadWarc(beam.PTransform):
    """A file/folder/glob of WARC files → :class:`MatchWarc` → :class:`ReadWarcFiles`."""

    def __init__(self, path: str, strict: bool = False) -> None:
        super().__init__()
        self.path, self.strict = path, strict

    def expand(self, pbegin):
        return pbegin | "Match" >> MatchWarc(self.path) | "Read" >> ReadWarcFiles(self.strict)


class WriteDocuments(beam.PTransform):
    """Documents → ``<folder>/part-SSSSS-of-NNNNN.parquet`` with the Document ARROW_SCHEMA
    (or REJECTED_SCHEMA when elements are ``(reason, Document)`` pairs). Returns the final file
    names. Beam's FileBasedSink writes to a temp folder and renames on finalize, so a shard is
    never visible half-written (the same guarantee as ``stepcrawl.io.atomic_path``)."""

    def __init__(self, folder: str, num_shards: int = 0, rejected: bool = False) -> None:
        super().__init__()
        self.folder, self.num_shards, self.rejected = folder, num_shards, rejected

    def expand(self, pcoll):
        if self.rejected:
            to_rec = lambda rd: {**rd[1].to_record(), "drop_reason": rd[0]}  # noqa: E731
            schema = REJECTED_SCHEMA
        else:
            to_rec = lambda d: d.to_record()  # noqa: E731
            schema = ARROW_SCHEMA
        if drops_finish_bundle_outputs(pcoll.pipeline):
            # WriteToParquet reports its files from finish_bundle, which this runner loses
            # (the shards would be written but finalised as empty): group by shard instead.
            n = self.num_shards or 1
            return (
                pcoll
                | "ToRecord" >> beam.Map(to_rec)
                | "ShardKey" >> beam.Map(lambda rec: (shard_of(rec["id"], n), rec))
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(WriteParquetShard(self.folder, n, schema))
            )
        return (
            pcoll
            | "ToRecord" >> beam.Map(to_rec)
            | "WriteParquet"
            >> beam.io.WriteToParquet(
                FileSystems.join(self.folder, "part"),
                schema=schema,
                codec="zstd",
                file_name_suffix=".parquet",
                num_shards=self.num_shards,
            )
        )


def shard_of(doc_id: str, n_shards: int) -> int:
    """A stable shard for a document id (the same in every process; ``hash()`` is not)."""
    return int(hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:8], 16) % n_shards


class WriteParquetShard(beam.DoFn):
    """``(shard, records)`` → ``<folder>/part-SSSSS-of-NNNNN.parquet``, written under a temp
    name and renamed, so a retried bundle rewrites the same final file and no reader ever sees
    half of one. Records are written in row groups as they stream in."""

    ROW_GROUP = 1024

    def __init__(self, folder: str, n_shards: int, schema) -> None:
        self.folder, self.n_shards, self.schema = folder, n_shards, schema

    def process(self, element) -> Iterator[str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        shard, records = element
        name = f"part-{shard:05d}-of-{self.n_shards:05d}.parquet"
        final = FileSystems.join(self.folder, name)
        tmp = FileSystems.join(self.folder, f".tmp-{name}.{time.time_ns()}")
        with FileSystems.create(tmp, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            with pq.ParquetWriter(fh, self.schema, compression="zstd") as writer:
                batch: list[dict] = []
                for rec in records:
                    batch.append(rec)
                    if len(batch) >= self.ROW_GROUP:
                        writer.write_table(pa.Table.from_pylist(batch, schema=self.schema))
                        batch = []
                if batch:
                    writer.write_table(pa.Table.from_pylist(batch, schema=self.schema))
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([tmp], [final])
        yield final


def write_bytes(path: str, data: bytes) -> None:
    """Write a small file through FileSystems, atomically: temp name, then rename."""
    parent, name = FileSystems.split(path)
    tmp = FileSystems.join(parent, f".tmp-{name}.{time.time_ns()}")
    with FileSystems.create(tmp, mime_type="application/json", compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_json(path: str, obj: Any) -> None:
    """``stepcrawl.io.write_json``'s format (indented, sorted keys, UTF-8, final newline),
    atomically, on any filesystem."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))


def write_manifest(folder: str, manifest: StageManifest) -> str:
    """``<folder>/_manifest.json`` (same content as ``StageManifest.write``, any filesystem)."""
    manifest.accounting.check(manifest.stage)
    path = FileSystems.join(folder, MANIFEST_NAME)
    write_json(path, manifest.to_dict())
    return path


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path).decode("utf-8"))


def is_hidden_part(name: str) -> bool:
    """A path component that ``stepcrawl.io.document_files`` skips: hidden, ``_work``-style
    or ``rejected``."""
    return name.startswith((".", "_")) or name == "rejected"


def list_document_files(path: str) -> list[str]:
    """The Parquet/JSONL files of a dataset path, sorted, with ``stepcrawl.io.document_files``'
    rules (hidden/underscore folders and ``rejected/`` skipped) but through FileSystems."""
    suffixes = (".parquet", ".jsonl", ".jsonl.gz", ".json")
    if any(c in path for c in _GLOB_CHARS) or path.endswith(suffixes):
        pattern, root = path, None
    else:
        root = path.rstrip("/")
        pattern = root + "/**"
    files = []
    for m in FileSystems.match([pattern])[0].metadata_list:
        p = m.path
        if not p.endswith(suffixes):
            continue
        if root is not None:
            rel = p[len(root) :].lstrip("/")
            if any(is_hidden_part(x) for x in rel.split("/")):
                continue
        files.append(p)
    return sorted(files)


def is_remote(path: str) -> bool:
    """True for paths of a non-local Beam FileSystem (gs://, s3://, hdfs://, …)."""
    return FileSystems.get_scheme(path) not in (None, "file")


def download(path: str, local: str) -> None:
    """Copy ``path`` (any FileSystems path) to the local file ``local``, streamed."""
    import shutil

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def upload_folder(local_folder: str, dest_folder: str, names: list[str]) -> None:
    """Copy ``names`` from a local folder to ``dest_folder`` (any FileSystems path), streamed."""
    import os
    import shutil

    for n in names:
        dest = FileSystems.join(dest_folder, n)
        with open(os.path.join(local_folder, n), "rb") as src, FileSystems.create(dest, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


_LOCALIZED: dict[str, str] = {}


def localize(path: str) -> str:
    """A local path for ``path``: itself when local, else a copy in a per-process temp folder
    (once per worker process). For libraries that can only read local files (fastText,
    sentencepiece, the decontam index builder)."""
    if not is_remote(path):
        return path
    if path not in _LOCALIZED:
        import os
        import tempfile

        local = os.path.join(tempfile.mkdtemp(prefix="stepcrawl-beam-"), FileSystems.split(path)[1])
        download(path, local)
        _LOCALIZED[path] = local
    return _LOCALIZED[path]
