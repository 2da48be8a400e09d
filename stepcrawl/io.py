"""Reading and writing Documents: Parquet shards and JSONL, always atomically.

Nothing here ever leaves a half-written file under its final name: every writer writes to a
``.tmp-*`` sibling and renames it into place when complete (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stepcrawl.document import Document, to_table


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open`` a temporary sibling of ``final`` and rename it into place on success."""
    with atomic_path(final) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_documents(path: str | os.PathLike, docs: list[Document]) -> None:
    """One Parquet shard of Documents, atomically."""
    write_parquet(path, to_table(docs))


def write_rejected(path: str | os.PathLike, docs: list[Document], reasons: list[str]) -> None:
    write_parquet(path, to_table(docs, reasons))


class BadRecord(ValueError):
    """A malformed input record; carries where it came from (file and line)."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line = path, line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


def document_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet/JSONL files of a dataset path: a file, or a folder (sorted, recursive,
    hidden and temporary files skipped)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"no such file or folder: {p}")
    suffixes = (".parquet", ".jsonl", ".jsonl.gz", ".json")
    files = [
        f
        for f in sorted(p.rglob("*"))
        if f.is_file()
        and f.name.endswith(suffixes)
        and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
        and "rejected" not in f.relative_to(p).parts
    ]
    return files


def iter_jsonl(path: str | os.PathLike, on_error=None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each line of a JSONL(.gz) file. Malformed lines are passed to
    ``on_error(BadRecord)`` (default: raise) and skipped, so one bad line never stops a job."""
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as exc:
                err = BadRecord(path, lineno, f"malformed JSON: {exc}")
                if on_error is None:
                    raise err from exc
                on_error(err)
                continue
            yield lineno, obj


def read_documents(path: str | os.PathLike, on_error=None) -> Iterator[Document]:
    """Stream Documents from Parquet or JSONL (a file or a folder of shards).

    Records only need ``text`` (and ideally ``id``); see ``Document.from_record``.
    """
    for f in document_files(path):
        if f.name.endswith(".parquet"):
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=1024):
                for rec in batch.to_pylist():
                    yield Document.from_record(rec)
        else:
            for lineno, obj in iter_jsonl(f, on_error=on_error):
                try:
                    yield Document.from_record(obj)
                except ValueError as exc:
                    err = BadRecord(str(f), lineno, str(exc))
                    if on_error is None:
                        raise err from exc
                    on_error(err)


@dataclass
class ShardWriter:
    """Writes Documents to ``folder/<prefix>-00000.parquet``, … in shards of ``shard_docs``.

    Each shard appears only when complete (atomic rename). ``close()`` flushes the last one.
    """

    folder: Path
    prefix: str = "part"
    shard_docs: int = 10_000
    rejected: bool = False

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._buf: list[Document] = []
        self._reasons: list[str] = []
        self._index = 0
        self.files: list[Path] = []
        self.count = 0

    def write(self, doc: Document, reason: str | None = None) -> None:
        self._buf.append(doc)
        if self.rejected:
            self._reasons.append(reason or "unknown")
        self.count += 1
        if len(self._buf) >= self.shard_docs:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        path = self.folder / f"{self.prefix}-{self._index:05d}.parquet"
        if self.rejected:
            write_rejected(path, self._buf, self._reasons)
        else:
            write_documents(path, self._buf)
        self.files.append(path)
        self._index += 1
        self._buf, self._reasons = [], []

    def close(self) -> list[Path]:
        self._flush()
        return self.files

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
