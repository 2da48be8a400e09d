"""The Document record: one schema for every source (web, code, commits, PRs, traces).

Every stage reads and writes Documents. The Arrow schema below is the on-disk contract
(Parquet shards); ``Document`` is the in-memory form that stage functions take and return.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa

KINDS = ("web", "code", "commit", "pull_request", "issue", "tool_use", "reasoning", "math", "book", "other")

# Quality tiers, best first (Nemotron-CC style, as the report uses).
TIERS = ("High", "Medium-High", "Medium", "Medium-Low", "Low")


def tier_rank(tier: str | None) -> int:
    """0 for High … 4 for Low; unknown/None ranks below Low."""
    if tier is None or tier not in TIERS:
        return len(TIERS)
    return TIERS.index(tier)


@dataclass(frozen=True)
class Span:
    """A character range of ``Document.text`` with a role and whether it carries loss.

    Offsets are Python string indices (code points), end exclusive.
    """

    start: int
    end: int
    role: str
    loss: bool

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "role": self.role, "loss": self.loss}


@dataclass
class Document:
    id: str
    text: str
    source: str = "unknown"
    kind: str = "other"
    url: str | None = None
    lang: str | None = None
    lang_score: float | None = None
    fetched_at: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    tier: str | None = None
    dup_cluster: str | None = None
    cluster: int | None = None
    spans: list[Span] | None = None
    n_chars: int = -1
    # provenance: WARC file + record offset for crawled pages; meta carries repo/commit/path otherwise
    warc_file: str | None = None
    warc_offset: int | None = None

    def __post_init__(self) -> None:
        if self.n_chars < 0:
            self.n_chars = len(self.text)

    def replace(self, **changes: Any) -> "Document":
        """A copy with ``changes``; n_chars follows a changed text."""
        if "text" in changes and "n_chars" not in changes:
            changes["n_chars"] = len(changes["text"])
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "source": self.source,
            "kind": self.kind,
            "url": self.url,
            "lang": self.lang,
            "lang_score": self.lang_score,
            "fetched_at": self.fetched_at,
            "meta": json.dumps(self.meta, ensure_ascii=False, sort_keys=True),
            "quality": [(k, float(v)) for k, v in sorted(self.quality.items())],
            "tier": self.tier,
            "dup_cluster": self.dup_cluster,
            "cluster": self.cluster,
            "spans": None if self.spans is None else [s.to_dict() for s in self.spans],
            "n_chars": self.n_chars,
            "warc_file": self.warc_file,
            "warc_offset": self.warc_offset,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Document":
        """Build from a Parquet/JSONL row. Only ``text`` is required; a missing id is derived
        from the text so that foreign JSONL (e.g. ``{"text": ...}``) can enter any stage."""
        if "text" not in rec or rec["text"] is None:
            raise ValueError("document record has no 'text'")
        text = rec["text"]
        if not isinstance(text, str):
            raise ValueError(f"document 'text' must be a string, got {type(text).__name__}")
        meta = rec.get("meta") or {}
        if isinstance(meta, str):
            meta = json.loads(meta) if meta else {}
        quality = rec.get("quality") or {}
        if isinstance(quality, list):  # Arrow map → list of (key, value) pairs
            quality = dict(quality)
        spans = rec.get("spans")
        if spans is not None:
            spans = [s if isinstance(s, Span) else Span(int(s["start"]), int(s["end"]), str(s["role"]), bool(s["loss"])) for s in spans]
        doc_id = rec.get("id")
        if doc_id is None or doc_id == "":
            doc_id = text_id(text)
        return cls(
            id=str(doc_id),
            text=text,
            source=rec.get("source") or "unknown",
            kind=rec.get("kind") or "other",
            url=rec.get("url"),
            lang=rec.get("lang"),
            lang_score=rec.get("lang_score"),
            fetched_at=rec.get("fetched_at"),
            meta=dict(meta),
            quality={str(k): float(v) for k, v in dict(quality).items()},
            tier=rec.get("tier"),
            dup_cluster=rec.get("dup_cluster"),
            cluster=rec.get("cluster"),
            spans=spans,
            n_chars=len(text),
            warc_file=rec.get("warc_file"),
            warc_offset=rec.get("warc_offset"),
        )


def text_id(text: str, prefix: str = "sha1") -> str:
    """A stable id for a document that has none: the SHA-1 of its UTF-8 text."""
    return f"{prefix}:{hashlib.sha1(text.encode('utf-8', 'surrogatepass')).hexdigest()}"


SPAN_TYPE = pa.struct(
    [("start", pa.int64()), ("end", pa.int64()), ("role", pa.string()), ("loss", pa.bool_())]
)

ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.large_string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("url", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float64()),
        ("fetched_at", pa.string()),
        ("meta", pa.string()),  # JSON object: title, license, repo, commit, path, …
        ("quality", pa.map_(pa.string(), pa.float64())),
        ("tier", pa.string()),
        ("dup_cluster", pa.string()),
        ("cluster", pa.int64()),
        ("spans", pa.list_(SPAN_TYPE)),
        ("n_chars", pa.int64()),
        ("warc_file", pa.string()),
        ("warc_offset", pa.int64()),
    ]
)

# Written next to a kept document when a stage is asked to keep rejected documents.
REJECTED_SCHEMA = ARROW_SCHEMA.append(pa.field("drop_reason", pa.string()))


def to_table(docs: Iterable[Document], drop_reasons: Iterable[str] | None = None) -> pa.Table:
    records = [d.to_record() for d in docs]
    if drop_reasons is None:
        return pa.Table.from_pylist(records, schema=ARROW_SCHEMA)
    for rec, reason in zip(records, drop_reasons, strict=True):
        rec["drop_reason"] = reason
    return pa.Table.from_pylist(records, schema=REJECTED_SCHEMA)
