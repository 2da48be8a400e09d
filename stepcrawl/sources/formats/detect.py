"""The format registry: which formats each ``ingest`` kind reads, and detection order.

Detection looks at one parsed record and takes the first format whose detector accepts it, so
the order goes from the most specific shape to the most general one (a litellm log *has*
OpenAI ``messages``; an OpenR1 record *has* chat ``messages`` too, but its ``generations``
are the point). ``--format NAME`` skips detection.
"""

from __future__ import annotations

from typing import Any

from stepcrawl.sources.formats import anthropic, llamafactory, openai, openhands, r1, sharegpt, swe_agent
from stepcrawl.sources.formats.model import TraceFormat

_ORDER = [
    *openhands.FORMATS,
    *swe_agent.FORMATS,
    *r1.FORMATS[:1],  # r1_generations
    openai.FORMATS[0],  # litellm_log
    *anthropic.FORMATS,
    *llamafactory.FORMATS,
    *sharegpt.FORMATS,
    openai.FORMATS[1],  # openai
    *r1.FORMATS[1:],  # fields: the loosest shape comes last
]
REGISTRY: dict[str, TraceFormat] = {f.name: f for f in _ORDER}
KINDS = ("tool-use", "reasoning")


def formats_for(kind: str) -> list[TraceFormat]:
    """The formats ``ingest KIND`` reads, in detection order."""
    return [f for f in _ORDER if kind in f.kinds]


def get_format(name: str, kind: str) -> TraceFormat:
    """The format forced with ``--format``; ValueError naming the choices otherwise."""
    names = [f.name for f in formats_for(kind)]
    if name not in names:
        raise ValueError(f"unknown format {name!r} for ingest {kind}; known: {', '.join(names)}")
    return REGISTRY[name]


def detect_format(rec: Any, kind: str) -> TraceFormat | None:
    """The first format of ``kind`` whose detector accepts ``rec``; None when none does.
    A detector never raises (hypothesis-tested); a record a detector chokes on is simply not
    of that format."""
    for f in formats_for(kind):
        try:
            if f.detect(rec):
                return f
        except Exception:  # noqa: BLE001 - a detector bug must not lose the record
            continue
    return None


def is_message_or_event(item: Any) -> bool:
    """Group predicate for the readers: a JSON array whose first element is a chat message
    (``role`` / ``from``) or an agent event (``action`` / ``observation``) is *one* record —
    a bare message list or an OpenHands event stream — not a list of records."""
    if not isinstance(item, dict) or "messages" in item or "conversations" in item:
        return False
    return ("role" in item or "from" in item or "action" in item or "observation" in item)


def list_formats(kind: str) -> str:
    """The ``--list-formats`` table."""
    fs = formats_for(kind)
    width = max(len(f.name) for f in fs)
    lines = [f"formats read by `stepcrawl ingest {kind}` (detection order):"]
    lines += [f"  {f.name:<{width}}  {f.summary}" for f in fs]
    return "\n".join(lines)
