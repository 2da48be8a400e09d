"""OpenAI Chat Completions messages, and litellm request/response logs (as OpenHands writes them).

Record shapes (https://platform.openai.com/docs/api-reference/chat):

* ``{"messages": [...], "tools": [...]?, "id"?}`` — ``tools`` as schema objects or a JSON
  string; ``conversations`` accepted for ``messages``; a bare list of messages is one record.
* messages: ``system`` / ``developer`` / ``user``: ``content`` a string or ``[{"type": "text",
  "text"}]`` parts; ``assistant``: ``content``, ``reasoning_content`` (or ``reasoning``),
  ``tool_calls: [{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}]``
  (several = parallel calls), legacy ``function_call: {"name", "arguments"}``, ``refusal``
  (the text when there is no content), litellm ``thinking_blocks``; ``tool``:
  ``tool_call_id`` + ``content``; legacy ``function`` role (a result, by ``name``).
* Inline markup in the text is structure, not literal text: ``<think>…</think>`` in assistant
  content becomes a Think part, Hermes ``<tool_call>{…}</tool_call>`` a Call, a message that is
  only ``<tool_response>…</tool_response>`` blocks becomes tool result(s).
* litellm log (OpenHands ``log_completions``): ``{"messages", "response": {"choices":
  [{"message": {...}}]}, "kwargs": {"tools": [...]}, "fncall_messages"?, "fncall_response"?}``.
  The final response is the last assistant turn; with mock function calling the structured
  ``fncall_*`` pair is used (``messages`` then holds the same calls as prose).
"""

from __future__ import annotations

from typing import Any

from stepcrawl.sources.formats.model import (
    Conversation, FormatError, FormatOptions, Message, Part, Text, Think, TraceFormat,
    call_from_object, decode_tools, first_dict, need_dict, need_list, need_str,
    normalise_assistant_text, result_text, split_think, tool_responses, type_name,
)

ROLE_ALIASES = {"developer": "system", "function": "tool", "human": "user", "gpt": "assistant", "model": "assistant"}
TEXT_PART_TYPES = ("text", "input_text", "output_text")


def content_text(content: Any, where: str) -> str:
    """A string, or the text of a list of ``{"type": "text", "text"}`` parts (plain strings
    allowed). Any other part type (images, audio, files) cannot be rendered as text:
    ``unknown_part``. ``"content": 123`` is ``wrong_type``."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise FormatError("wrong_type", f"{where}: content must be a string or a list of parts, got {type_name(content)}")
    out = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict) and part.get("type", "text") in TEXT_PART_TYPES and "text" in part:
            out.append(need_str(part["text"], f"{where} content[{j}].text", optional=False))
        elif isinstance(part, dict):
            raise FormatError("unknown_part", f"{where}: content part of type {part.get('type')!r} cannot be rendered as text")
        else:
            raise FormatError("wrong_type", f"{where}: content part must be an object, got {type_name(part)}")
    return "".join(out)


def parse_message(msg: Any, where: str, role_aliases: dict[str, str] = ROLE_ALIASES) -> list[Message]:
    """One OpenAI-shaped message → normalised message(s) (a Hermes user/tool message holding
    several ``<tool_response>`` blocks becomes several results)."""
    msg = need_dict(msg, f"{where}: a message")
    role = need_str(msg.get("role"), f"{where}: role", optional=False)
    role = role_aliases.get(role, role)
    if role not in ("system", "user", "assistant", "tool"):
        raise FormatError("unknown_role", f"{where}: unknown role {role!r}")
    raw = msg.get("content")
    text = content_text(raw, where)
    if role == "assistant":
        parts: list[Part] = []
        reasoning = msg.get("reasoning_content", msg.get("reasoning"))
        if reasoning is not None:
            reasoning = need_str(reasoning, f"{where}.reasoning_content")
            if reasoning.strip():
                parts.append(Think(reasoning.strip()))
        elif msg.get("thinking_blocks"):  # litellm's Anthropic thinking, when no reasoning_content was set
            for k, b in enumerate(need_list(msg["thinking_blocks"], f"{where}.thinking_blocks")):
                if not isinstance(b, dict) or b.get("type") != "thinking":
                    raise FormatError("unknown_part", f"{where}: thinking block {k} is not a 'thinking' block")
                t = need_str(b.get("thinking"), f"{where}.thinking_blocks[{k}].thinking").strip()
                if t:
                    parts.append(Think(t))
        parts += normalise_assistant_text(text, where)
        if msg.get("refusal") is not None and not text:  # the model's refusal is its output
            parts += [Text(need_str(msg["refusal"], f"{where}.refusal"))]
        calls = need_list(msg.get("tool_calls"), f"{where}.tool_calls")
        for j, call in enumerate(calls):
            parts.append(call_from_object(call, f"{where} tool_calls[{j}]"))
        if msg.get("function_call") is not None:
            parts.append(call_from_object(msg["function_call"], f"{where} function_call"))
        return [Message("assistant", parts)]
    if role == "tool":
        cid = msg.get("tool_call_id")
        if cid is not None and not isinstance(cid, (str, int)):
            raise FormatError("wrong_type", f"{where}: tool_call_id must be a string, got {type_name(cid)}")
        bodies = tool_responses(text)
        if bodies is not None and len(bodies) != 1:
            return [Message("tool", [Text(result_text(raw, b, where))]) for b in bodies]
        body = bodies[0] if bodies else text
        return [Message("tool", [Text(result_text(raw, body, where))], None if cid is None else str(cid))]
    if role == "user":
        bodies = tool_responses(text)
        if bodies is not None:  # Hermes results sent in a user turn
            return [Message("tool", [Text(result_text(raw, b, where))]) for b in bodies]
    return [Message(role, [Text(text)] if text else [])]


def parse_messages(messages: Any, where: str = "messages") -> list[Message]:
    out: list[Message] = []
    for i, msg in enumerate(need_list(messages, where, optional=False)):
        out += parse_message(msg, f"message {i}")
    return out


def record_id(rec: Any) -> str | None:
    if isinstance(rec, dict):
        for key in ("id", "uuid", "instance_id", "trace_id", "conversation_id"):
            v = rec.get(key)
            if isinstance(v, (str, int)) and not isinstance(v, bool):
                return str(v)
    return None


def origin_of(rec: Any) -> str | None:
    return rec.get("source") if isinstance(rec, dict) and isinstance(rec.get("source"), str) else None


def messages_of(rec: Any) -> Any:
    if isinstance(rec, list):
        return rec
    return rec.get("messages", rec.get("conversations"))


# --------------------------------------------------------------------------- detection
def detect_openai(rec: Any) -> bool:
    first = first_dict(messages_of(rec)) if isinstance(rec, (dict, list)) else None
    return first is not None and isinstance(first.get("role"), str)


def parse_openai(rec: Any, opts: FormatOptions) -> list[Conversation]:
    tools = decode_tools(rec.get("tools")) if isinstance(rec, dict) else []
    return [Conversation(parse_messages(messages_of(rec)), tools, record_id(rec), origin_of(rec), "openai")]


def detect_litellm_log(rec: Any) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get("messages"), list)
            and isinstance(rec.get("response"), dict) and "choices" in rec["response"])


def parse_litellm_log(rec: dict, opts: FormatOptions) -> list[Conversation]:
    fncall = rec.get("fncall_messages") is not None
    messages = rec["fncall_messages"] if fncall else rec["messages"]
    response = need_dict(rec.get("fncall_response") if fncall and rec.get("fncall_response") is not None else rec["response"], "response")
    choices = need_list(response.get("choices"), "response.choices")
    if not choices:
        raise FormatError("no_response", "the logged response has no choices")
    final = need_dict(need_dict(choices[0], "response.choices[0]").get("message"), "response.choices[0].message")
    out = parse_messages(messages) + parse_message({**final, "role": final.get("role", "assistant")}, "response")
    kwargs = rec.get("kwargs") if isinstance(rec.get("kwargs"), dict) else {}
    tools = decode_tools(kwargs.get("tools", rec.get("tools")))
    rid = record_id(response) or record_id(rec)
    return [Conversation(out, tools, rid, origin_of(rec), "litellm_log")]


FORMATS = [
    TraceFormat("litellm_log", frozenset({"tool-use", "reasoning"}),
                "litellm request/response log (OpenHands log_completions): messages + final response",
                detect_litellm_log, parse_litellm_log),
    TraceFormat("openai", frozenset({"tool-use", "reasoning"}),
                "OpenAI chat completions: messages with role/content, tool_calls, role tool, reasoning_content",
                detect_openai, parse_openai),
]

__all__ = ["FORMATS", "content_text", "parse_message", "parse_messages", "record_id", "origin_of", "split_think"]
