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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, TypeVar

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
    """A malformed input record; carries where it came from (file and line, or Parquet row).

    Picklable (``__reduce__``): it crosses process boundaries (a worker pool sends it back to
    the parent), and the default exception pickling would call ``__init__`` with the one
    formatted message, which fails and leaves ``multiprocessing.Pool`` waiting forever."""

    def __init__(self, path: str, line: int | None, message: str, unit: str = "line"):
        self.path, self.line, self.message, self.unit = str(path), line, message, unit
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.message, self.unit))


T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` consecutive items (the last one shorter); ``itertools.batched`` is 3.12+."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


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


def _raise_or_report(err: BadRecord, on_error, cause: BaseException | None = None) -> None:
    if on_error is None:
        raise err from cause
    on_error(err)


def iter_jsonl(path: str | os.PathLike, on_error=None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each line of a JSONL(.gz) file. Malformed lines (not UTF-8, not
    JSON, not an object) are passed to ``on_error(BadRecord)`` (default: raise) and skipped, so
    one bad line never stops a job; a file that cannot be read on (a truncated gzip) is reported
    once, at the line where reading stopped, and the lines before it are kept."""
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    lineno = 0
    try:
        # bytes, decoded line by line: a non-UTF-8 line is reported by its number and costs
        # only itself (a text-mode reader fails on a whole buffered chunk).
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    _raise_or_report(BadRecord(path, lineno, f"not valid UTF-8 (byte {exc.start})"), on_error, exc)
                    continue
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                except (ValueError, RecursionError) as exc:
                    _raise_or_report(BadRecord(path, lineno, f"malformed JSON: {exc}"), on_error, exc)
                    continue
                yield lineno, obj
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a damaged/truncated gzip stream
        _raise_or_report(BadRecord(path, lineno + 1 if lineno else None, f"cannot read on: {exc}"), on_error, exc)


def _iter_parquet_rows(f: Path, on_error) -> Iterator[tuple[int, dict]]:
    """(row number, record) of a Parquet file, 1-based like lines; a file that is not Parquet,
    or a row group that cannot be decoded, is reported once and the readable rows are kept."""
    row = 0
    try:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec
    except (OSError, pa.ArrowException, ValueError) as exc:
        _raise_or_report(BadRecord(str(f), row + 1 if row else None, f"not readable as Parquet: {exc}", "row"), on_error, exc)


def read_documents(path: str | os.PathLike, on_error=None) -> Iterator[Document]:
    """Stream Documents from Parquet or JSONL (a file or a folder of shards).

    Records only need ``text`` (and ideally ``id``); see ``Document.from_record``. A record that
    is not a valid Document goes to ``on_error(BadRecord)`` as ``FILE:LINE`` / ``FILE:ROW`` with
    the reason (default: raise), so every record read is either yielded or reported once:
    records in = documents out + errors reported.
    """
    for f in document_files(path):
        if f.name.endswith(".parquet"):
            rows, unit = _iter_parquet_rows(f, on_error), "row"
        else:
            rows, unit = iter_jsonl(f, on_error=on_error), "line"
        for n, rec in rows:
            try:
                doc = Document.from_record(rec)
            except (ValueError, TypeError, KeyError) as exc:
                _raise_or_report(BadRecord(str(f), n, str(exc), unit), on_error, exc)
                continue
            yield doc


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
