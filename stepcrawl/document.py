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
            "meta": json.dumps(self._meta_with_extra_quality(), ensure_ascii=False, sort_keys=True),
            "quality": {k: float(v) for k, v in self.quality.items() if k in _QUALITY_SET},
            "tier": self.tier,
            "dup_cluster": self.dup_cluster,
            "cluster": self.cluster,
            "spans": None if self.spans is None else [s.to_dict() for s in self.spans],
            "n_chars": self.n_chars,
            "warc_file": self.warc_file,
            "warc_offset": self.warc_offset,
        }

    def _meta_with_extra_quality(self) -> dict[str, Any]:
        """``meta``, plus the quality signals the ``quality`` struct has no field for (a signal
        added by a new stage before it is registered in QUALITY_SIGNALS): kept, never lost."""
        extra = {k: float(v) for k, v in self.quality.items() if k not in _QUALITY_SET}
        return {**self.meta, QUALITY_EXTRA_KEY: dict(sorted(extra.items()))} if extra else self.meta

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Document":
        """Build from a Parquet/JSONL row. Only ``text`` is required; a missing id is derived
        from the text so that foreign JSONL (e.g. ``{"text": ...}``) can enter any stage.

        Accepts every layout we have written or export: ``quality`` as the struct (a dict with
        nulls for absent signals), the pre-struct Arrow map (a list of (key, value) pairs) or a
        JSON object string; datatrove's layout (``text``, ``id``, ``metadata`` holding the other
        fields, ``language`` for ``lang``). Anything malformed raises ``ValueError`` naming the
        field, so a reader can count the record and go on."""
        if not isinstance(rec, dict):
            raise ValueError(f"document record must be an object, got {type(rec).__name__}")
        md = rec.get("metadata")
        if isinstance(md, str):  # as datatrove's reader: a JSON object string, else ignored
            try:
                md = json.loads(md)
            except ValueError:
                md = None
        if isinstance(md, dict):  # datatrove layout: our fields live in metadata
            rec = {**md, **{k: v for k, v in rec.items() if k != "metadata"}}
        if "text" not in rec or rec["text"] is None:
            raise ValueError("field 'text': missing or null")
        text = rec["text"]
        if not isinstance(text, str):
            raise ValueError(f"field 'text': must be a string, got {type(text).__name__}")
        if not text.isascii():
            try:  # a JSON "\\ud800" escape decodes to a lone surrogate, which no writer can encode
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"field 'text': not valid Unicode (lone surrogate at {exc.start})") from None
        meta = rec.get("meta") or {}
        if isinstance(meta, str):
            meta = _json_field("meta", meta) if meta else {}
        if not isinstance(meta, dict):
            raise ValueError(f"field 'meta': must be an object, got {type(meta).__name__}")
        meta = dict(meta)
        quality = _quality_field(rec.get("quality"))
        extra = meta.pop(QUALITY_EXTRA_KEY, None)
        if extra is not None:
            quality.update(_quality_field(extra, "meta." + QUALITY_EXTRA_KEY))
        spans = rec.get("spans")
        if spans is not None:
            spans = _spans_field(spans)
        doc_id = rec.get("id")
        if doc_id is None or doc_id == "":
            doc_id = text_id(text)
        elif not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
            raise ValueError(f"field 'id': must be a string, got {type(doc_id).__name__}")
        return cls(
            id=str(doc_id),
            text=text,
            source=_opt_str(rec, "source") or "unknown",
            kind=_opt_str(rec, "kind") or "other",
            url=_opt_str(rec, "url"),
            lang=_opt_str(rec, "lang") or _opt_str(rec, "language"),
            lang_score=_opt_num(rec, "lang_score", float) if rec.get("lang_score") is not None else _opt_num(rec, "language_score", float),
            fetched_at=_opt_str(rec, "fetched_at"),
            meta=meta,
            quality=quality,
            tier=_opt_str(rec, "tier"),
            dup_cluster=_opt_str(rec, "dup_cluster"),
            cluster=_opt_num(rec, "cluster", int),
            spans=spans,
            n_chars=len(text),
            warc_file=_opt_str(rec, "warc_file"),
            warc_offset=_opt_num(rec, "warc_offset", int),
        )


# Field checks for ``Document.from_record``: each raises ValueError naming the field.


def _json_field(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValueError(f"field {name!r}: not valid JSON ({exc})") from None


def _opt_str(rec: dict[str, Any], name: str) -> str | None:
    v = rec.get(name)
    if v is None or isinstance(v, str):
        return v
    raise ValueError(f"field {name!r}: must be a string or null, got {type(v).__name__}")


def _opt_num(rec: dict[str, Any], name: str, kind: type) -> Any:
    v = rec.get(name)
    if v is None:
        return None
    what = "a 64-bit integer" if kind is int else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"field {name!r}: must be {what} or null, got {type(v).__name__}")
    if kind is int:  # a float column holding whole numbers is fine; NaN, inf, 2**63 are not
        if isinstance(v, float) and not (v.is_integer() and abs(v) < 2**63):
            raise ValueError(f"field {name!r}: must be {what} or null, got {v!r}")
        if not -(2**63) <= int(v) < 2**63:
            raise ValueError(f"field {name!r}: must be {what} or null, got {v!r:.40}")
    return kind(v)


def _quality_field(q: Any, name: str = "quality") -> dict[str, float]:
    if q is None:
        return {}
    if isinstance(q, str):
        q = _json_field(name, q) if q else {}
    if isinstance(q, list):  # the pre-struct Arrow map: a list of (key, value) pairs
        try:
            q = dict(q)
        except (TypeError, ValueError):
            raise ValueError(f"field {name!r}: expected (name, value) pairs") from None
    if not isinstance(q, dict):
        raise ValueError(f"field {name!r}: must be an object of numbers, got {type(q).__name__}")
    out: dict[str, float] = {}
    for k, v in q.items():
        if v is None:  # a struct field this document has no value for
            continue
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)):
            raise ValueError(f"field {name}.{k}: must be a number, got {type(v).__name__}")
        out[str(k)] = float(v)
    return out


def _spans_field(spans: Any) -> list[Span]:
    if not isinstance(spans, list):
        raise ValueError(f"field 'spans': must be a list, got {type(spans).__name__}")
    out = []
    for i, s in enumerate(spans):
        if isinstance(s, Span):
            out.append(s)
            continue
        try:
            start, end, role, loss = s["start"], s["end"], s["role"], s["loss"]
        except (TypeError, KeyError, IndexError):
            raise ValueError(f"field spans[{i}]: needs start, end, role, loss") from None
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63 for x in (start, end)) or not isinstance(role, str):
            raise ValueError(f"field spans[{i}]: start/end must be non-negative integers and role a string")
        out.append(Span(start, end, role, bool(loss)))
    return out


def text_id(text: str, prefix: str = "sha1") -> str:
    """A stable id for a document that has none: the SHA-1 of its UTF-8 text."""
    return f"{prefix}:{hashlib.sha1(text.encode('utf-8', 'surrogatepass')).hexdigest()}"


# Every quality signal a stage of ours writes, one struct field each (null = not computed for
# this document). A signal missing here is not lost: it travels in meta["quality_extra"]
# (see Document.to_record) until it is registered. tests/test_foundation.py checks that the
# stages' outputs are all registered.
_DATATROVE_FILTERS = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
_SIGNAL_VALUES = (
    "n_words", "mean_word_len", "hash_word_ratio", "ellipsis_word_ratio", "bullet_lines_ratio",
    "ellipsis_lines_ratio", "alpha_words_ratio", "stop_words", "dup_line_frac", "dup_line_char_frac",
    "dup_para_frac", "line_punct_ratio", "short_line_ratio", "list_ratio", "top_2gram_char_frac",
    "top_3gram_char_frac", "top_4gram_char_frac", "dup_5gram_char_frac", "dup_10gram_char_frac",
)
_CODE_RULES = (
    "max_line_length", "mean_line_length", "long_line_share", "minified", "low_alpha_share",
    "low_alnum_share", "high_digit_share", "auto_generated", "hex_blob", "base64_blob", "escaped_data",
    "data_like", "data_language_large", "duplicate_lines", "too_few_lines", "too_many_lines",
    "comment_heavy", "non_ascii_share", "whitespace_share",
)
QUALITY_SIGNALS: tuple[str, ...] = (
    *_DATATROVE_FILTERS, *_SIGNAL_VALUES,
    "fasttext_hq", "heuristic_score", "ensemble_score", "contam_ngrams",
    "code_rule_hits", *(f"code_rule:{r}" for r in _CODE_RULES),
)
_QUALITY_SET = frozenset(QUALITY_SIGNALS)
QUALITY_EXTRA_KEY = "quality_extra"
QUALITY_TYPE = pa.struct([(name, pa.float64()) for name in QUALITY_SIGNALS])

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
        # A struct, not a map: Hugging Face ``datasets`` has no dtype for Arrow maps and datatrove's
        # writer cannot re-infer one, while a struct reads as a dict everywhere and every shard
        # of every source has the same columns (so one load_dataset call can span sources).
        ("quality", QUALITY_TYPE),
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


def datatrove_schema() -> pa.Schema:
    """The explicit schema to give datatrove's ``ParquetWriter(schema=...)`` for our documents.

    datatrove's reader puts every column but ``text``/``id`` into ``metadata``; its writer infers
    the output schema from the first document unless given one, so a field that is null in the
    first document (a ``url`` of a code file, a signal not computed) becomes type ``null`` and the
    next non-null value aborts the write (datatrove documents this: pass a schema when fields
    can be missing). This schema holds our fields under both spellings of the language fields
    (ours ``lang``/``lang_score``, datatrove's ``language``/``language_score``, which ``stepcrawl
    export --format datatrove`` writes) and the reader's ``file_path``; ``Document.from_record``
    reads the result back."""
    native = [f for f in ARROW_SCHEMA if f.name not in ("text", "id")]
    extra = [pa.field("language", pa.string()), pa.field("language_score", pa.float64()), pa.field("file_path", pa.string())]
    return pa.schema([("text", pa.large_string()), ("id", pa.string()), ("metadata", pa.struct(native + extra))])
