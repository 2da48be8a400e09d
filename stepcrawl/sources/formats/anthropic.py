"""Anthropic Messages API content blocks.

Shape (https://docs.anthropic.com/en/api/messages): ``{"system"?: str | [text blocks],
"messages": [{"role": "user"|"assistant", "content": str | [blocks]}], "tools"?: [{"name",
"description", "input_schema"}]}``.

Blocks: ``text`` → text; ``thinking`` (``thinking``, ``signature``) → Think; ``tool_use``
(``id``, ``name``, ``input``) → Call; ``tool_result`` (``tool_use_id``, ``content`` a string or
text blocks, ``is_error``) inside a user turn → a tool result message (the user turn's own
text blocks follow as a user message, in order). ``redacted_thinking`` holds encrypted data
and ``image`` / ``document`` are not text: such records are counted (``unknown_part``).
"""

from __future__ import annotations

from typing import Any

from stepcrawl.sources.formats.model import (
    Call, Conversation, FormatError, FormatOptions, Message, Part, Text, Think, TraceFormat, decode_arguments,
    decode_tools, need_dict, need_list, need_str, normalise_assistant_text, result_text, type_name,
)
from stepcrawl.sources.formats.openai import origin_of, record_id

ANTHROPIC_BLOCKS = {"tool_use", "tool_result", "thinking", "redacted_thinking"}


def detect(rec: Any) -> bool:
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
        return False
    for m in rec["messages"]:
        if isinstance(m, dict) and isinstance(m.get("content"), list):
            if any(isinstance(b, dict) and b.get("type") in ANTHROPIC_BLOCKS for b in m["content"]):
                return True
    # a top-level system prompt next to user/assistant messages is the Anthropic layout too
    return "system" in rec and all(isinstance(m, dict) and m.get("role") in ("user", "assistant") for m in rec["messages"])


def _blocks(content: Any, where: str) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return need_list(content, f"{where}.content")


def _text_of_result(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    out = []
    for k, b in enumerate(need_list(content, f"{where}.content")):
        b = need_dict(b, f"{where} content[{k}]")
        if b.get("type") != "text":
            raise FormatError("unknown_part", f"{where}: tool_result block of type {b.get('type')!r} is not text")
        out.append(need_str(b.get("text"), f"{where} content[{k}].text"))
    return "".join(out)


def parse(rec: dict, opts: FormatOptions) -> list[Conversation]:
    out: list[Message] = []
    system = rec.get("system")
    if system is not None:
        text = _text_of_result(system, "system") if isinstance(system, list) else need_str(system, "system")
        if text:
            out.append(Message("system", [Text(text)]))
    for i, msg in enumerate(rec["messages"]):
        where = f"message {i}"
        msg = need_dict(msg, f"{where}: a message")
        role = need_str(msg.get("role"), f"{where}: role", optional=False)
        if role not in ("user", "assistant"):
            raise FormatError("unknown_role", f"{where}: unknown role {role!r} (the Messages API has user and assistant)")
        parts: list[Part] = []
        for j, b in enumerate(_blocks(msg.get("content"), where)):
            bw = f"{where} content[{j}]"
            b = need_dict(b, f"{bw}: a block")
            kind = b.get("type")
            if kind == "text":
                text = need_str(b.get("text"), f"{bw}.text", optional=False)
                parts += normalise_assistant_text(text, bw) if role == "assistant" else ([Text(text)] if text else [])
            elif kind == "thinking" and role == "assistant":
                thought = need_str(b.get("thinking"), f"{bw}.thinking")
                if thought.strip():
                    parts.append(Think(thought.strip()))
            elif kind == "tool_use" and role == "assistant":
                name = b.get("name")
                if not isinstance(name, str) or not name:
                    raise FormatError("bad_tool_call", f"{bw}: tool_use without a name")
                cid = b.get("id")
                parts.append(Call(name, decode_arguments(b.get("input"), bw), None if cid is None else str(cid)))
            elif kind == "tool_result" and role == "user":
                if parts:  # user text before a result: keep the order
                    out.append(Message("user", parts))
                    parts = []
                raw = b.get("content")
                cid = b.get("tool_use_id")
                if cid is not None and not isinstance(cid, (str, int)):
                    raise FormatError("wrong_type", f"{bw}: tool_use_id must be a string, got {type_name(cid)}")
                text = result_text(raw, _text_of_result(raw, bw), bw)
                out.append(Message("tool", [Text(text)], None if cid is None else str(cid)))
            else:
                raise FormatError("unknown_part", f"{bw}: block of type {kind!r} cannot be rendered for role {role!r}")
        if parts or role == "assistant":
            out.append(Message(role, parts))
    return [Conversation(out, decode_tools(rec.get("tools")), record_id(rec), origin_of(rec), "anthropic")]


FORMATS = [
    TraceFormat("anthropic", frozenset({"tool-use", "reasoning"}),
                "Anthropic Messages: content blocks text / tool_use / tool_result / thinking, top-level system",
                detect, parse),
]
