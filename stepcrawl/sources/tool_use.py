"""Agent trajectories → Documents with role markers and loss spans.

Input: JSONL / JSON / ``.traj`` files (plain, ``.gz``, ``.zst``) in any format of
``stepcrawl.sources.formats`` — OpenAI chat completions, litellm logs, ShareGPT (incl. Hermes
and LLaMA-Factory tool turns), LLaMA-Factory v1 parts, Anthropic content blocks, SWE-agent,
mini-swe-agent, OpenHands — detected per record (``format`` forces one). Every format is
parsed into the same :class:`~stepcrawl.sources.formats.model.Conversation`, rendered here.

Layout (markers are single tokens of our tokenizer; ``\\n`` between turns)::

    <|system|>…\\n\\n# Tools\\n{schema per line}<|end|>
    <|user|>…<|end|>
    <|assistant|><|think|>…<|/think|>text<|tool_call|>{"name": …, "arguments": {…}}<|tool_call|>{…}<|end|>
    <|tool_result|>…<|end|>
    <|tool_result|>…<|end|>

The parts of an assistant turn keep their order in the source (Anthropic blocks may
interleave text, thinking and calls). Spans: the ``<|assistant|>`` header and the newlines are
``scaffold`` (inserted by the chat template, never a loss target); every other piece has its
role (``system``, ``user``, ``assistant`` incl. its closing ``<|end|>``, ``think``,
``tool_call``, ``tool_result``). The loss roles are configurable; the default is the agent's
own output: ``assistant``, ``think``, ``tool_call``.

A record that cannot be rendered faithfully is a ``RejectedRecord`` under a named reason (see
docs/SOURCES.md): the formats' reasons (``unknown_role``, ``wrong_type``, ``unknown_part``,
``bad_arguments``, ``empty_tool_result``, …) and the protocol checks here
(``orphan_tool_result``, ``duplicate_call_id``, ``no_assistant``, ``no_messages``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import (
    ASSISTANT, END, END_THINK, SYSTEM, THINK, TOOL_CALL, TOOL_RESULT, USER,
    RejectedRecord, SpanText, check_spans, iter_records, make_id, natural_language, parse_roles, strip_markers,
)
from stepcrawl.sources.formats import (
    Call, Conversation, FormatError, FormatOptions, Text, Think, detect_format, get_format, is_message_or_event,
)
from stepcrawl.steps import Drop

DEFAULT_LOSS_ROLES = ("assistant", "think", "tool_call")
MAX_RAW_CHARS = 1_000_000  # a rejected record's JSON kept in rejected/ (longer: cut, and said so)


@dataclass
class ToolUseConfig:
    source: str = "tool_use"
    loss_roles: list[str] = field(default_factory=lambda: list(DEFAULT_LOSS_ROLES))
    max_chars: int = 400_000  # longer trajectories: drop "too_long"
    render_tools: bool = True  # put the tool schemas into the system turn
    format: str | None = None  # force one input format (None: detect per record)


def _call_json(call: Call) -> str:
    return json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)


def render_conversation(conv: Conversation, loss_roles: frozenset[str], render_tools: bool = True) -> tuple[str, list, dict]:
    """(text, spans, stats) of one conversation; FormatError on a protocol violation."""
    if not conv.messages:
        raise FormatError("no_messages", "no messages")
    st = SpanText(loss_roles)
    pending: dict[str, str] = {}  # unanswered call id → tool name
    answered: set[str] = set()
    n_calls = n_parallel = n_assistant = n_think = 0
    user_text: list[str] = []  # for language identification
    tools_text = ""
    if render_tools and conv.tools:
        tools_text = "\n\n# Tools\n" + "\n".join(json.dumps(t, ensure_ascii=False, sort_keys=True) for t in conv.tools)
    system_done = False
    for i, msg in enumerate(conv.messages):
        if i > 0:
            st.add("\n", "scaffold")
        if msg.role == "system":
            st.add(SYSTEM + strip_markers(msg.text()) + (tools_text if not system_done else "") + END, "system")
            system_done = True
            continue
        if tools_text and not system_done:
            st.add(SYSTEM + tools_text.lstrip("\n") + END, "system")
            st.add("\n", "scaffold")
            system_done = True
        if msg.role == "user":
            utext = strip_markers(msg.text())
            user_text.append(utext)
            st.add(USER + utext + END, "user")
        elif msg.role == "assistant":
            n_assistant += 1
            st.add(ASSISTANT, "scaffold")
            calls = 0
            for part in msg.parts:
                if isinstance(part, Think):
                    n_think += 1
                    st.add(THINK + strip_markers(part.text) + END_THINK, "think")
                elif isinstance(part, Text):
                    st.add(strip_markers(part.text), "assistant")
                elif isinstance(part, Call):
                    if part.id is not None:
                        if part.id in pending or part.id in answered:
                            raise FormatError("duplicate_call_id", f"message {i}: duplicate tool call id {part.id!r}")
                        pending[part.id] = part.name
                    calls += 1
                    st.add(TOOL_CALL + strip_markers(_call_json(part)), "tool_call")
            n_calls += calls
            n_parallel += calls > 1
            st.add(END, "assistant")
        elif msg.role == "tool":
            if msg.call_id is not None:
                if msg.call_id not in pending:
                    raise FormatError("orphan_tool_result",
                                      f"message {i}: tool result for unknown or already answered call {msg.call_id!r}")
                del pending[msg.call_id]
                answered.add(msg.call_id)
            st.add(TOOL_RESULT + strip_markers(msg.text()) + END, "tool_result")
        else:  # pragma: no cover - parsers only emit the four roles
            raise FormatError("unknown_role", f"message {i}: unknown role {msg.role!r}")
    if n_assistant == 0:
        raise FormatError("no_assistant", "no assistant turn")
    text, spans = st.build()
    check_spans(text, spans)
    return text, spans, {"n_messages": len(conv.messages), "n_tool_calls": n_calls, "n_parallel_turns": n_parallel,
                         "unanswered_calls": len(pending), "n_think": n_think, "user_text": "\n".join(user_text)}


def raw_json(rec: Any) -> str:
    try:
        raw = json.dumps(rec, ensure_ascii=False)
    except (TypeError, ValueError):  # pragma: no cover - records come from JSON
        return ""
    return raw if len(raw) <= MAX_RAW_CHARS else raw[:MAX_RAW_CHARS] + " …[cut]"


def parse_record(rec: Any, kind: str, forced: str | None, opts: FormatOptions) -> tuple[str, list[Conversation]]:
    """(format name, conversations) of one record; FormatError when it cannot be read."""
    fmt = get_format(forced, kind) if forced else detect_format(rec, kind)
    if fmt is None:
        keys = sorted(rec)[:8] if isinstance(rec, dict) else f"a list of {len(rec)}"
        raise FormatError("unknown_format", f"no {kind} format recognises this record (keys: {keys}); "
                          f"see `stepcrawl ingest {kind} --list-formats`")
    try:
        return fmt.name, fmt.parse(rec, opts)
    except FormatError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a forced format on a record of another shape
        raise FormatError("wrong_shape", f"record does not have the {fmt.name} shape ({type(exc).__name__}: {exc})") from exc


def iter_conversations(paths: Iterable[str | Path], kind: str, forced: str | None, opts: FormatOptions,
                       stats: dict | None) -> Iterator[tuple[str, int, str, Conversation, Any] | BadRecord]:
    """``(path, line, format, conversation, record)`` for every conversation in ``paths``; records
    that cannot be read are ``BadRecord`` / ``RejectedRecord``. ``stats["formats"]`` counts
    the records per detected format."""
    if forced:
        get_format(forced, kind)  # an unknown --format is a usage error before anything is read
    formats: Counter = Counter()
    for item in iter_records(paths, stats, group=is_message_or_event):
        if isinstance(item, BadRecord):
            yield item
            continue
        path, lineno, rec = item
        try:
            name, convs = parse_record(rec, kind, forced, opts)
        except FormatError as exc:
            yield RejectedRecord(str(path), lineno, exc.reason, str(exc), raw_json(rec))
            continue
        formats[name] += 1
        for conv in convs:
            yield str(path), lineno, name, conv, rec
    if stats is not None:
        stats["formats"] = dict(sorted(formats.items()))


def iter_tool_use(paths: Iterable[str | Path], cfg: ToolUseConfig, stats: dict | None = None) -> Iterator[Document | Drop | BadRecord]:
    loss_roles = parse_roles(cfg.loss_roles)
    seen: set[str] = set()
    for item in iter_conversations(paths, "tool-use", cfg.format, FormatOptions(), stats):
        if isinstance(item, BadRecord):
            yield item
            continue
        path, lineno, fmt, conv, rec = item
        try:
            text, spans, tstats = render_conversation(conv, loss_roles, cfg.render_tools)
        except FormatError as exc:
            yield RejectedRecord(path, lineno, exc.reason, str(exc), raw_json(rec))
            continue
        lang, lang_score = natural_language(tstats.pop("user_text"))
        doc = Document(
            id=make_id(cfg.source, conv.id) if conv.id else make_id(cfg.source, text),
            text=text, source=cfg.source, kind="tool_use", spans=spans, lang=lang, lang_score=lang_score,
            meta={"file": path, "line": lineno, "trace_id": conv.id, "format": fmt, **tstats,
                  **({"origin": conv.origin} if conv.origin else {})},
        )
        text_key = make_id("t", text)  # a trace repeated under another id is a duplicate too
        if doc.id in seen or text_key in seen:
            yield Drop("duplicate", doc)
            continue
        seen.update({doc.id, text_key})
        if len(text) > cfg.max_chars:
            yield Drop("too_long", doc)
        else:
            yield doc
