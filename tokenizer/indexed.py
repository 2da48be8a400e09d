"""Megatron-compatible indexed datasets (``.bin`` + ``.idx``), written atomically, read by mmap.

The layout is Megatron-LM's ``MMapIndexedDataset`` (megatron/core/datasets/indexed_dataset.py),
so Megatron-LM and torchtitan users can read our shards directly:

``.idx``::

    b"MMIDIDX\\x00\\x00"          9-byte magic
    <Q version = 1
    <B dtype code  (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16)
    <Q sequence_count
    <Q document_count             (= len(document_indices); starts with 0)
    int32[sequence_count]         sequence lengths (elements)
    int64[sequence_count]         sequence byte offsets into .bin
    int64[document_count]         document_indices: sequence index where each document starts

``.bin`` is the elements of all sequences back to back.

Written by hand rather than importing megatron-core: that package pulls a large dependency
tree for ~100 lines of format, and we need an atomic, streaming writer it does not have.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from stepcrawl.io import atomic_path

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1

DTYPE_CODES: dict[type, int] = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}


def token_dtype(vocab_size: int) -> type:
    """Smallest dtype Megatron reads for a vocabulary: uint16 below 65,500 ids, else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


def paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    prefix = str(prefix)
    return Path(prefix + ".bin"), Path(prefix + ".idx")


class IndexedDatasetWriter:
    """Streams sequences to ``prefix.bin`` and writes ``prefix.idx`` on ``close()``.

    Both files are written under temporary names and renamed only when complete, ``.bin`` first
    so a present ``.idx`` always describes a complete ``.bin``.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: type = np.int32) -> None:
        if dtype not in DTYPE_CODES:
            raise ValueError(f"unsupported dtype {dtype}")
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype)
        self.bin_path, self.idx_path = paths(prefix)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        self._bin_ctx = atomic_path(self.bin_path)
        self._tmp_bin = self._bin_ctx.__enter__()
        self._fh = open(self._tmp_bin, "wb")
        self._sizes: list[int] = []
        self._doc_idx: list[int] = [0]
        self._closed = False

    def add(self, sequence: Sequence[int] | np.ndarray, end_document: bool = True) -> None:
        arr = np.asarray(sequence, dtype=self.dtype)
        self._fh.write(arr.tobytes(order="C"))
        self._sizes.append(int(arr.size))
        if end_document:
            self._doc_idx.append(len(self._sizes))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._bin_ctx.__exit__(None, None, None)
        sizes = np.asarray(self._sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        if len(sizes) > 1:
            np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.asarray(self._doc_idx, dtype=np.int64)
        with atomic_path(self.idx_path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(MAGIC)
                fh.write(struct.pack("<Q", VERSION))
                fh.write(struct.pack("<B", DTYPE_CODES[self.dtype.type]))
                fh.write(struct.pack("<Q", len(sizes)))
                fh.write(struct.pack("<Q", len(doc_idx)))
                fh.write(sizes.tobytes(order="C"))
                fh.write(pointers.tobytes(order="C"))
                fh.write(doc_idx.tobytes(order="C"))

    def abort(self) -> None:
        """Discard everything written (no file appears under the final names)."""
        if self._closed:
            return
        self._closed = True
        self._fh.close()
        try:
            self._bin_ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class IndexedDatasetFormatError(ValueError):
    pass


class IndexedDataset:
    """Memory-mapped reader: ``len(ds)`` sequences, ``ds[i]`` a numpy view (no copy)."""

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = str(prefix)
        self.bin_path, self.idx_path = paths(prefix)
        for p in (self.bin_path, self.idx_path):
            if not p.exists():
                raise FileNotFoundError(f"indexed dataset file missing: {p}")
        with open(self.idx_path, "rb") as fh:
            magic = fh.read(9)
            if magic != MAGIC:
                raise IndexedDatasetFormatError(f"{self.idx_path}: not a Megatron .idx file (bad magic)")
            (version,) = struct.unpack("<Q", fh.read(8))
            if version != VERSION:
                raise IndexedDatasetFormatError(f"{self.idx_path}: unsupported version {version}")
            (code,) = struct.unpack("<B", fh.read(1))
            if code not in CODE_DTYPES:
                raise IndexedDatasetFormatError(f"{self.idx_path}: unknown dtype code {code}")
            self.dtype = np.dtype(CODE_DTYPES[code])
            (n_seq,) = struct.unpack("<Q", fh.read(8))
            (n_doc,) = struct.unpack("<Q", fh.read(8))
            offset = fh.tell()
        idx = np.memmap(self.idx_path, mode="r", dtype=np.uint8)
        expected = offset + n_seq * 4 + n_seq * 8 + n_doc * 8
        if idx.size != expected:
            raise IndexedDatasetFormatError(
                f"{self.idx_path}: truncated or corrupt ({idx.size} bytes, expected {expected})"
            )
        self.sizes = np.frombuffer(idx, dtype=np.int32, count=n_seq, offset=offset)
        self.pointers = np.frombuffer(idx, dtype=np.int64, count=n_seq, offset=offset + n_seq * 4)
        self.document_indices = np.frombuffer(idx, dtype=np.int64, count=n_doc, offset=offset + n_seq * 12)
        n_bytes = int(self.sizes.astype(np.int64).sum()) * self.dtype.itemsize
        actual = self.bin_path.stat().st_size
        if actual != n_bytes:
            raise IndexedDatasetFormatError(
                f"{self.bin_path}: {actual} bytes but the index describes {n_bytes}"
            )
        self._bin = np.memmap(self.bin_path, mode="r", dtype=self.dtype) if n_bytes else np.empty(0, self.dtype)

    def __len__(self) -> int:
        return int(self.sizes.size)

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self._bin[start : start + int(self.sizes[i])]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def n_elements(self) -> int:
        return int(self.sizes.astype(np.int64).sum())

    @property
    def data(self) -> np.ndarray:
        """Every element of every sequence, back to back (the mmap'ed ``.bin``, no copy): for
        vectorised gathers over many sequences at once, e.g. fixed-length packed rows."""
        return self._bin
