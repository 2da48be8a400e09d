"""The human-readable meta string the report prepends to every training document (App. A.3).

The report gives its content (content type, language, domain, source) but not its format;
ours is ``<|meta|>type=Web lang=EN domain=docs.python.org source=web<|/meta|>``: short,
stable, one ``key=value`` per field so that a model can learn to read and ignore it, and
delimited by two control tokens so the trainer can mask exactly its positions.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from stepcrawl.document import Document

CONTENT_TYPES = {
    "web": "Web",
    "code": "Code",
    "commit": "Commit",
    "pull_request": "PR",
    "issue": "Issue",
    "tool_use": "ToolUse",
    "reasoning": "Reasoning",
    "math": "Math",
    "book": "Book",
    "other": "Other",
}


def _clean(value: str) -> str:
    # The meta body is split on spaces and '='; keep values free of both (and of newlines).
    return "".join(ch if ch.isalnum() or ch in "._-/:+" else "_" for ch in value.strip())[:64] or "unknown"


def document_domain(doc: Document) -> str:
    meta = doc.meta or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    if meta.get("domain"):
        return str(meta["domain"])
    if doc.url:
        host = urlsplit(doc.url).hostname
        if host:
            return host
    if meta.get("repo"):
        return str(meta["repo"])
    return "unknown"


def meta_fields(doc: Document) -> dict[str, str]:
    return {
        "type": CONTENT_TYPES.get(doc.kind, "Other"),
        "lang": (doc.lang or "unknown").upper(),
        "domain": document_domain(doc),
        "source": doc.source or "unknown",
    }


def meta_body(doc: Document) -> str:
    """The text between the delimiters, e.g. ``type=Web lang=EN domain=x.org source=web``."""
    return " ".join(f"{k}={_clean(v)}" for k, v in meta_fields(doc).items())


def parse_meta_body(body: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in body.split() if "=" in part)
