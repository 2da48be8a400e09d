"""Agent trajectories (OpenAI-style chat messages with ``tool_calls``) → Documents with loss spans.

Input: JSONL (one trajectory per line) or JSON (one trajectory, or a list of them). A
trajectory is ``{"messages": [...], "tools": [...]?, "id"?: ...}`` (``conversations`` is
accepted as an alias of ``messages``). Messages follow the OpenAI Chat Completions shape:

* ``system`` / ``user``: ``content`` (a string or a list of ``{"type": "text", "text"}`` parts);
* ``assistant``: optional ``content``, optional ``reasoning_content`` (rendered inside
  ``<|think|>…<|/think|>``), optional ``tool_calls`` — several of them = *parallel* calls —
  each ``{"id", "type": "function", "function": {"name", "arguments": "<JSON string>"}}``;
* ``tool``: the result of one call, ``tool_call_id`` naming it, ``content``.

Validation (a failing trajectory is reported by file:line and counted as ``malformed``): known
roles only; every tool call has a name and JSON-decodable arguments; every tool message answers
an earlier call of the same trajectory that has not been answered yet; at least one assistant
turn.

Layout (markers are single tokens of our tokenizer; ``\\n`` between turns)::

    <|system|>…<|end|>
    <|user|>…<|end|>
    <|assistant|><|think|>…<|/think|>text<|tool_call|>{"name": …, "arguments": {…}}<|tool_call|>{…}<|end|>
    <|tool_result|>…<|end|>
    <|tool_result|>…<|end|>

Spans: the ``<|assistant|>`` header and the newlines are ``scaffold`` (inserted by the chat
template, never a loss target); every other piece has its message's role (``system``, ``user``,
``assistant``, ``think``, ``tool_call``, ``tool_result``). Which roles carry loss is
configurable; the default is the agent's own output: ``assistant``, ``think``, ``tool_call``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import (
    ASSISTANT, END, SYSTEM, THINK, END_THINK, TOOL_CALL, TOOL_RESULT, USER,
    SpanText, check_spans, iter_records, make_id, natural_language, parse_roles, strip_markers,
)
from stepcrawl.steps import Drop

DEFAULT_LOSS_ROLES = ("assistant", "think", "tool_call")
ROLE_ALIASES = {"function": "tool", "human": "user", "gpt": "assistant", "model": "assistant"}


@dataclass
class ToolUseConfig:
    source: str = "tool_use"
    loss_roles: list[str] = field(default_factory=lambda: list(DEFAULT_LOSS_ROLES))
    max_chars: int = 400_000  # longer trajectories: drop "too_long"
    render_tools: bool = True  # put the tool schemas into the system turn


class TraceError(ValueError):
    """A trajectory that breaks the message protocol."""


def content_text(content: Any, where: str) -> str:
    """String content, or the text parts of a list-of-parts content; None → ''."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                out.append(str(part.get("text") or ""))
            elif isinstance(part, dict):
                out.append(f"[{part.get('type')}]")  # images etc.: a placeholder, not data
            else:
                raise TraceError(f"{where}: content part of type {type(part).__name__}")
        return "".join(out)
    raise TraceError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")


def _call_json(call: Any, where: str) -> tuple[str, str]:
    """(call id, canonical JSON ``{"name", "arguments"}``) of one tool call."""
    if not isinstance(call, dict):
        raise TraceError(f"{where}: tool call is not an object")
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    name = fn.get("name")
    if not name or not isinstance(name, str):
        raise TraceError(f"{where}: tool call without a function name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as exc:
            raise TraceError(f"{where}: arguments of {name!r} are not valid JSON ({exc})") from exc
    return str(call.get("id") or ""), json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def render_trajectory(rec: dict, loss_roles: frozenset[str], render_tools: bool = True) -> tuple[str, list, dict]:
    """(text, spans, stats) of one trajectory; raises TraceError on a protocol violation."""
    messages = rec.get("messages", rec.get("conversations"))
    if not isinstance(messages, list) or not messages:
        raise TraceError("no 'messages' list")
    st = SpanText(loss_roles)
    pending: dict[str, str] = {}  # unanswered call id → tool name
    n_calls = n_parallel = n_assistant = 0
    user_text: list[str] = []  # for language identification
    tools_text = ""
    if render_tools and isinstance(rec.get("tools"), list) and rec["tools"]:
        tools_text = "\n\n# Tools\n" + "\n".join(json.dumps(t, ensure_ascii=False, sort_keys=True) for t in rec["tools"])
    system_done = False
    for i, msg in enumerate(messages):
        where = f"message {i}"
        if not isinstance(msg, dict):
            raise TraceError(f"{where}: not an object")
        role = msg.get("role", msg.get("from"))
        if not isinstance(role, str):
            raise TraceError(f"{where}: role must be a string, got {role!r}")
        role = ROLE_ALIASES.get(role, role)
        if i > 0:
            st.add("\n", "scaffold")
        if role == "system":
            text = strip_markers(content_text(msg.get("content", msg.get("value")), where))
            st.add(SYSTEM + text + (tools_text if not system_done else "") + END, "system")
            system_done = True
        elif role == "user":
            if tools_text and not system_done:
                st.add(SYSTEM + tools_text.lstrip("\n") + END + "\n", "system")
                system_done = True
            utext = strip_markers(content_text(msg.get("content", msg.get("value")), where))
            user_text.append(utext)
            st.add(USER + utext + END, "user")
        elif role == "assistant":
            n_assistant += 1
            st.add(ASSISTANT, "scaffold")
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            if isinstance(reasoning, str) and reasoning.strip():
                st.add(THINK + strip_markers(reasoning) + END_THINK, "think")
            st.add(strip_markers(content_text(msg.get("content", msg.get("value")), where)), "assistant")
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise TraceError(f"{where}: tool_calls must be a list")
            if len(calls) > 1:
                n_parallel += 1
            for j, call in enumerate(calls):
                cid, js = _call_json(call, f"{where} tool_calls[{j}]")
                if cid:
                    if cid in pending:
                        raise TraceError(f"{where}: duplicate tool call id {cid!r}")
                    pending[cid] = js
                n_calls += 1
                st.add(TOOL_CALL + strip_markers(js), "tool_call")
            st.add(END, "assistant")
        elif role == "tool":
            cid = msg.get("tool_call_id")
            if cid is not None and not isinstance(cid, (str, int)):
                raise TraceError(f"{where}: tool_call_id must be a string")
            if cid is not None:
                cid = str(cid)
                if cid not in pending:
                    raise TraceError(f"{where}: tool result for unknown or already answered call {cid!r}")
                del pending[cid]
            st.add(TOOL_RESULT + strip_markers(content_text(msg.get("content"), where)) + END, "tool_result")
        else:
            raise TraceError(f"{where}: unknown role {role!r}")
    if n_assistant == 0:
        raise TraceError("no assistant turn")
    text, spans = st.build()
    check_spans(text, spans)
    return text, spans, {"n_messages": len(messages), "n_tool_calls": n_calls, "n_parallel_turns": n_parallel,
                         "unanswered_calls": len(pending), "user_text": "\n".join(user_text)}


def iter_tool_use(paths: Iterable[str | Path], cfg: ToolUseConfig, stats: dict | None = None) -> Iterator[Document | Drop | BadRecord]:
    loss_roles = parse_roles(cfg.loss_roles)
    seen: set[str] = set()
    for item in iter_records(paths, stats):
        if isinstance(item, BadRecord):
            yield item
            continue
        path, lineno, rec = item
        try:
            text, spans, tstats = render_trajectory(rec, loss_roles, cfg.render_tools)
        except TraceError as exc:
            yield BadRecord(str(path), lineno, str(exc))
            continue
        rid = rec.get("id")
        lang, lang_score = natural_language(tstats.pop("user_text"))
        doc = Document(
            id=make_id(cfg.source, rid) if rid else make_id(cfg.source, text),
            text=text, source=cfg.source, kind="tool_use", spans=spans, lang=lang, lang_score=lang_score,
            meta={"file": str(path), "line": lineno, "trace_id": rid, **tstats,
                  **({"origin": rec["source"]} if isinstance(rec.get("source"), str) else {})},
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
