"""LLaMA-Factory v1 messages: content as a list of typed parts that carry ``value``.

Shape (LLaMA-Factory ``v1`` data engine, ``extras/types.py``): ``{"messages": [{"role":
"system"|"user"|"assistant"|"tool", "content": [{"type": T, "value": "..."}], "loss_weight"?}],
"tools"?: "<JSON string>"}``.

Part types: ``text`` → text (assistant text is still checked for inline ``<think>``),
``reasoning`` → Think, ``tool_call`` / ``tool_calls`` → Call(s) (value: JSON ``{"name",
"arguments"}`` or a list), ``tools`` → tool schemas (JSON list). ``image_url`` and any other
type cannot be rendered as text → ``unknown_part``. ``loss_weight`` is not used: our loss
masks come from roles (docs/SOURCES.md), the same for every format.
"""

from __future__ import annotations

import json
from typing import Any

from stepcrawl.sources.formats.model import (
    Conversation, FormatError, FormatOptions, Message, Part, Text, Think, TraceFormat, call_from_object,
    decode_tools, need_dict, need_list, need_str, normalise_assistant_text, result_text,
)
from stepcrawl.sources.formats.openai import origin_of, record_id

ROLES = {"system", "user", "assistant", "tool"}


def _value_parts(content: Any) -> bool:
    return isinstance(content, list) and any(isinstance(p, dict) and "value" in p and "type" in p for p in content)


def detect(rec: Any) -> bool:
    msgs = rec.get("messages") if isinstance(rec, dict) else rec if isinstance(rec, list) else None
    if not isinstance(msgs, list):
        return False
    return any(isinstance(m, dict) and "role" in m and _value_parts(m.get("content")) for m in msgs)


def _json_value(value: str, where: str, reason: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise FormatError(reason, f"{where}: value is not JSON ({exc})") from exc


def parse(rec: Any, opts: FormatOptions) -> list[Conversation]:
    msgs = need_list(rec.get("messages") if isinstance(rec, dict) else rec, "messages", optional=False)
    tools = decode_tools(rec.get("tools")) if isinstance(rec, dict) else []
    out: list[Message] = []
    for i, msg in enumerate(msgs):
        where = f"message {i}"
        msg = need_dict(msg, f"{where}: a message")
        role = need_str(msg.get("role"), f"{where}: role", optional=False)
        if role not in ROLES:
            raise FormatError("unknown_role", f"{where}: unknown role {role!r}")
        content = msg.get("content")
        if isinstance(content, str):  # plain strings are allowed alongside parts
            content = [{"type": "text", "value": content}]
        parts: list[Part] = []
        for j, part in enumerate(need_list(content, f"{where}.content")):
            pw = f"{where} content[{j}]"
            part = need_dict(part, f"{pw}: a part")
            kind = part.get("type")
            value = need_str(part.get("value"), f"{pw}.value", optional=False)
            if kind == "text":
                parts += normalise_assistant_text(value, pw) if role == "assistant" else ([Text(value)] if value else [])
            elif kind == "reasoning" and role == "assistant":
                if value.strip():
                    parts.append(Think(value.strip()))
            elif kind in ("tool_call", "tool_calls") and role == "assistant":
                body = _json_value(value, pw, "bad_tool_call")
                for k, b in enumerate(body if isinstance(body, list) else [body]):
                    parts.append(call_from_object(b, f"{pw}[{k}]"))
            elif kind == "tools":
                tools += decode_tools(value, f"{pw}.value")
            else:
                raise FormatError("unknown_part", f"{pw}: part type {kind!r} cannot be rendered for role {role!r}")
        if role == "tool":
            text = "".join(p.text for p in parts if isinstance(p, Text))
            parts = [Text(result_text(content, text, where))]
        out.append(Message(role, parts))
    return [Conversation(out, tools, record_id(rec), origin_of(rec), "llamafactory")]


FORMATS = [
    TraceFormat("llamafactory", frozenset({"tool-use", "reasoning"}),
                "LLaMA-Factory v1 messages: content parts {type, value} incl. reasoning / tool_call parts",
                detect, parse),
]
