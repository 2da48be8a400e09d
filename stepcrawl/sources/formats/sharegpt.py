"""ShareGPT conversations, incl. LLaMA-Factory's tool turns and Hermes function calling.

Shape: ``{"conversations": [{"from": ROLE, "value": "..."}], "system"?: str, "tools"?: str|list}``
(``messages`` accepted; a bare list of turns is one record).

* ``from``: ``human``/``user`` → user, ``gpt``/``assistant``/``chatgpt``/``bing``/``bard`` →
  assistant, ``system`` → system, ``function_call`` → an assistant turn made of tool call(s)
  (its value is the JSON ``{"name", "arguments"}`` or a list of them — LLaMA-Factory /
  glaive), ``observation`` / ``tool`` / ``function_response`` → a tool result.
* Hermes function calling (NousResearch): the system prompt lists ``<tools>``, assistant turns
  carry ``<tool_call>{…}</tool_call>`` (JSON or a Python-literal dict), tool turns
  ``<tool_response>…</tool_response>``; calls become Call parts, responses tool results.
* Assistant text may hold inline ``<think>…</think>`` (R1 distillations): a Think part.
"""

from __future__ import annotations

import json
from typing import Any

from stepcrawl.sources.formats.model import (
    Conversation, FormatError, FormatOptions, Message, Text, TraceFormat, call_from_object,
    decode_tools, first_dict, need_dict, need_list, need_str, normalise_assistant_text, result_text, tool_responses,
)
from stepcrawl.sources.formats.openai import origin_of, record_id

ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system",
    "function_call": "call", "observation": "tool", "tool": "tool", "function_response": "tool",
}


def turns_of(rec: Any) -> Any:
    return rec if isinstance(rec, list) else rec.get("conversations", rec.get("messages"))


def detect(rec: Any) -> bool:
    if not isinstance(rec, (dict, list)):
        return False
    first = first_dict(turns_of(rec))
    return first is not None and "from" in first and "role" not in first


def _calls(value: str, where: str) -> list:
    try:
        body = json.loads(value)
    except ValueError as exc:
        raise FormatError("bad_tool_call", f"{where}: function_call value is not JSON ({exc})") from exc
    bodies = body if isinstance(body, list) else [body]
    if not bodies:
        raise FormatError("bad_tool_call", f"{where}: function_call holds no call")
    return [call_from_object(b, f"{where} function_call[{k}]") for k, b in enumerate(bodies)]


def parse(rec: Any, opts: FormatOptions) -> list[Conversation]:
    turns = need_list(turns_of(rec), "conversations", optional=False)
    messages: list[Message] = []
    if isinstance(rec, dict) and rec.get("system") is not None:
        system = need_str(rec["system"], "system")
        if system:
            messages.append(Message("system", [Text(system)]))
    for i, turn in enumerate(turns):
        where = f"turn {i}"
        turn = need_dict(turn, f"{where}: a turn")
        tag = need_str(turn.get("from"), f"{where}: 'from'", optional=False)
        role = ROLES.get(tag)
        if role is None:
            raise FormatError("unknown_role", f"{where}: unknown role {tag!r}")
        raw = turn.get("value")
        value = need_str(raw, f"{where}.value", optional=False)  # ShareGPT turns always carry a string
        if role == "call":
            messages.append(Message("assistant", _calls(value, where)))
        elif role == "assistant":
            messages.append(Message("assistant", normalise_assistant_text(value, where)))
        elif role == "tool":
            bodies = tool_responses(value)
            for body in (bodies if bodies is not None else [value]):
                messages.append(Message("tool", [Text(result_text(raw, body, where))]))
        elif role == "user" and (bodies := tool_responses(value)) is not None:
            messages += [Message("tool", [Text(result_text(raw, b, where))]) for b in bodies]
        else:
            messages.append(Message(role, [Text(value)] if value else []))
    tools = decode_tools(rec.get("tools")) if isinstance(rec, dict) else []
    return [Conversation(messages, tools, record_id(rec), origin_of(rec), "sharegpt")]


FORMATS = [
    TraceFormat("sharegpt", frozenset({"tool-use", "reasoning"}),
                "ShareGPT from/value turns: function_call/observation, from: tool, Hermes <tool_call>/<tool_response>",
                detect, parse),
]
