"""Stage manifests: what a stage did, so a run can be audited, resumed and chained.

Every stage output folder holds ``_manifest.json``. The accounting invariant is checked when
the manifest is built: documents in = documents out + Σ drops.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from stepcrawl.io import read_json, write_json

MANIFEST_NAME = "_manifest.json"


def config_hash(config: Any) -> str:
    """A short stable hash of a JSON-able config (dataclasses allowed)."""
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class AccountingError(AssertionError):
    """in != out + Σ drops: a document was lost or counted twice."""


@dataclass
class Accounting:
    """Counts documents (and characters) through a stage, per drop reason."""

    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    drops: Counter = field(default_factory=Counter)
    drop_chars: Counter = field(default_factory=Counter)

    def seen(self, n_chars: int = 0) -> None:
        self.docs_in += 1
        self.chars_in += n_chars

    def kept(self, n_chars: int = 0) -> None:
        self.docs_out += 1
        self.chars_out += n_chars

    def dropped(self, reason: str, n_chars: int = 0) -> None:
        self.drops[reason] += 1
        self.drop_chars[reason] += n_chars

    def merge(self, other: "Accounting") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        self.drops.update(other.drops)
        self.drop_chars.update(other.drop_chars)

    def check(self, stage: str = "") -> None:
        total = self.docs_out + sum(self.drops.values())
        if self.docs_in != total:
            raise AccountingError(
                f"stage {stage!r}: {self.docs_in} documents in but {self.docs_out} out + "
                f"{sum(self.drops.values())} dropped = {total}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "drops": dict(sorted(self.drops.items())),
            "drop_chars": dict(sorted(self.drop_chars.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Accounting":
        return cls(
            docs_in=d.get("docs_in", 0),
            docs_out=d.get("docs_out", 0),
            chars_in=d.get("chars_in", 0),
            chars_out=d.get("chars_out", 0),
            drops=Counter(d.get("drops", {})),
            drop_chars=Counter(d.get("drop_chars", {})),
        )


@dataclass
class StageManifest:
    stage: str
    config: dict[str, Any]
    config_hash: str
    input_manifest_hash: str | None
    accounting: Accounting
    bytes_out: int = 0
    wall_time_s: float = 0.0
    shards: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific: cluster sizes, funnel, …
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "config": self.config,
            "config_hash": self.config_hash,
            "input_manifest_hash": self.input_manifest_hash,
            **self.accounting.to_dict(),
            "bytes_out": self.bytes_out,
            "wall_time_s": round(self.wall_time_s, 3),
            "shards": self.shards,
            "extra": self.extra,
            "created_at": self.created_at,
        }

    def write(self, folder: str | os.PathLike) -> Path:
        self.accounting.check(self.stage)
        path = Path(folder) / MANIFEST_NAME
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_shards(
        cls,
        stage: str,
        config: dict[str, Any],
        config_hash: str,
        input_manifest_hash: str | None,
        accounting: Accounting,
        *,
        folder: str | os.PathLike,
        files: Iterable[str | os.PathLike],
        started: float,
        extra: dict[str, Any] | None = None,
    ) -> "StageManifest":
        """The manifest of a stage that has written ``files`` (its shards, rejected ones
        included) under ``folder``: ``bytes_out`` and ``shards`` (paths relative to ``folder``)
        are taken from the files themselves, ``wall_time_s`` is the time since ``started`` (a
        ``time.time()`` value). Nothing is written yet: call :meth:`write` (which checks the
        accounting)."""
        paths = [Path(f) for f in files]
        return cls(
            stage=stage,
            config=config,
            config_hash=config_hash,
            input_manifest_hash=input_manifest_hash,
            accounting=accounting,
            bytes_out=sum(f.stat().st_size for f in paths),
            wall_time_s=time.time() - started,
            shards=[str(f.relative_to(folder)) for f in paths],
            extra=extra if extra is not None else {},
        )

    @classmethod
    def reusable(
        cls, folder: str | os.PathLike, config_hash: str, input_hash: str | None, stage: str | None = None
    ) -> "StageManifest | None":
        """The finished manifest in ``folder`` if it was made (by ``stage``, when given) with this
        config from this input, else None. An input without an identity (``input_hash`` None) is
        never reused: nothing shows it is unchanged."""
        path = Path(folder) / MANIFEST_NAME
        if input_hash is None or not path.exists():
            return None
        old = cls.read(folder)
        if (stage is None or old.stage == stage) and old.config_hash == config_hash and old.input_manifest_hash == input_hash:
            return old
        return None

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "StageManifest":
        d = read_json(Path(folder) / MANIFEST_NAME)
        return cls(
            stage=d["stage"],
            config=d.get("config", {}),
            config_hash=d.get("config_hash", ""),
            input_manifest_hash=d.get("input_manifest_hash"),
            accounting=Accounting.from_dict(d),
            bytes_out=d.get("bytes_out", 0),
            wall_time_s=d.get("wall_time_s", 0.0),
            shards=d.get("shards", []),
            extra=d.get("extra", {}),
            created_at=d.get("created_at", 0.0),
        )


def clear_stage(folder: str | os.PathLike, extra: Iterable[str] = ()) -> None:
    """Remove a stage's outputs before it rewrites them: the manifest first (a run that dies
    from here on must not look finished), then ``part-*.parquet``, ``rejected/part-*.parquet``
    and the stage's own ``extra`` files (glob patterns relative to ``folder``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    for pattern in ("part-*.parquet", "rejected/part-*.parquet", *extra):
        for f in folder.glob(pattern):
            f.unlink()


# Manifest fields that say how long a run took or when it ran, not what it produced: left out of
# manifest_hash, so an interrupted-and-resumed run (or any re-run) that produces the same output
# gives the next stages the same input hash as an uninterrupted one (the kill matrix checks it).
TIMING_FIELDS = ("wall_time_s", "created_at")
TIMING_EXTRA_FIELDS = ("stage_times_s", "wall_time_total_s")


def reproducible_part(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest (as read from ``_manifest.json``) without its wall-clock fields."""
    d = {k: v for k, v in manifest.items() if k not in TIMING_FIELDS}
    if isinstance(d.get("extra"), dict):
        d["extra"] = {k: v for k, v in d["extra"].items() if k not in TIMING_EXTRA_FIELDS}
    return d


def manifest_hash(folder: str | os.PathLike) -> str | None:
    """Hash of a folder's manifest (the next stage records it as its input), or None. It covers
    everything the manifest says about the output (config, input hash, counts, shards, bytes,
    extras) but not its timings (``reproducible_part``): the same output, the same hash."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    blob = json.dumps(reproducible_part(read_json(path)), sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
