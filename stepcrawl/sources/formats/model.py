"""The one normalised form every trace format is parsed into, and the checks shared by parsers.

A :class:`Conversation` is a list of :class:`Message` s with four roles — ``system``, ``user``,
``assistant``, ``tool`` (a tool *result*) — and ordered parts: :class:`Text`, :class:`Think`
(reasoning) and :class:`Call` (a tool call, assistant only). ``tool_use.render_conversation``
turns it into text + loss spans; no parser renders anything itself.

Parsers never guess: a field of the wrong type, a role or content part they do not know, or
a tool result that comes out empty raises :class:`FormatError` with a named *reason*, and the
record is counted under that reason instead of becoming a document with parts missing.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


class FormatError(ValueError):
    """A record that cannot be rendered faithfully; ``reason`` names the drop bucket."""

    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message
        super().__init__(message)

    def __reduce__(self):  # picklable: worker processes hand it back to the parent
        return (type(self), (self.reason, self.message))


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Think:
    text: str


@dataclass(frozen=True)
class Call:
    name: str
    arguments: Any  # a decoded JSON value (normally an object)
    id: str | None = None


Part = Text | Think | Call


@dataclass
class Message:
    role: str
    parts: list[Part] = field(default_factory=list)
    call_id: str | None = None  # tool results: the call this answers, when the format says

    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, Text))


@dataclass
class Conversation:
    messages: list[Message]
    tools: list[Any] = field(default_factory=list)
    id: str | None = None
    origin: str | None = None  # the record's own "source" field, when it has one
    format: str = ""
    fields: list[str | None] = field(default_factory=list)  # reasoning: the fields read
    meta: dict[str, Any] = field(default_factory=dict)  # scalar record fields worth keeping (domain, …)


# --------------------------------------------------------------------------- field checks
def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def need_str(value: Any, where: str, *, optional: bool = True) -> str:
    """A string field; ``None`` → ``""`` when optional. Anything else is ``wrong_type`` (a
    number rendered as text would be a silent change of meaning)."""
    if isinstance(value, str):
        return value
    if value is None and optional:
        return ""
    raise FormatError("wrong_type", f"{where} must be a string, got {type_name(value)}")


def need_list(value: Any, where: str, *, optional: bool = True) -> list:
    if isinstance(value, list):
        return value
    if value is None and optional:
        return []
    raise FormatError("wrong_type", f"{where} must be a list, got {type_name(value)}")


def need_dict(value: Any, where: str) -> dict:
    if isinstance(value, dict):
        return value
    raise FormatError("wrong_type", f"{where} must be an object, got {type_name(value)}")


def decode_arguments(value: Any, where: str) -> Any:
    """Tool-call arguments: a JSON string (OpenAI) or an already decoded object (Anthropic
    ``input``, ShareGPT function_call bodies). ``"arguments": 7`` is ``wrong_type``; a string
    that is not JSON is ``bad_arguments``."""
    if value is None:
        return {}
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except ValueError as exc:
            raise FormatError("bad_arguments", f"{where}: arguments are not valid JSON ({exc})") from exc
    raise FormatError("wrong_type", f"{where}: arguments must be a JSON string or an object, got {type_name(value)}")


def decode_tools(value: Any, where: str = "tools") -> list[Any]:
    """``tools`` as a list of schema objects or as a JSON string holding that list (ShareGPT /
    LLaMA-Factory)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise FormatError("bad_tools", f"{where} is a string but not JSON ({exc})") from exc
        if isinstance(value, dict):
            value = [value]
    if not isinstance(value, list):
        raise FormatError("wrong_type", f"{where} must be a list or a JSON string, got {type_name(value)}")
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise FormatError("wrong_type", f"{where}[{i}] must be an object, got {type_name(t)}")
    return value


def call_from_object(obj: Any, where: str, call_id: Any = None) -> Call:
    """``{"name", "arguments"}`` (or OpenAI's ``{"id", "function": {…}}``) → Call."""
    obj = need_dict(obj, where)
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError("bad_tool_call", f"{where}: tool call without a function name")
    args_key = "arguments" if "arguments" in fn else "parameters" if "parameters" in fn else "input"
    cid = obj.get("id", call_id)
    if cid is not None and not isinstance(cid, (str, int)):
        raise FormatError("wrong_type", f"{where}: call id must be a string, got {type_name(cid)}")
    return Call(name, decode_arguments(fn.get(args_key), where), None if cid in (None, "") else str(cid))


# --------------------------------------------------------------------------- inline markup
_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_TOOL_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.S)


def split_think(text: str) -> list[Part]:
    """Inline R1-style reasoning → Think parts. ``<think>…</think>`` anywhere; a leading body
    closed by ``</think>`` without an opening tag (the chat template opened it) is reasoning
    too. The reasoning is stripped of its surrounding blank lines and so is the text after
    it (template formatting, not content). An unclosed ``<think>`` is ``unclosed_think``: a
    generation cut off mid-thought is not a faithful sample."""
    if "think>" not in text:
        return [Text(text)] if text else []
    parts: list[Part] = []
    close = text.find("</think>")
    open_ = text.find("<think>")
    if close != -1 and (open_ == -1 or close < open_):
        parts.append(Think(text[:close].strip()))
        text = text[close + len("</think>"):].lstrip()
    pos = 0
    for m in _THINK.finditer(text):
        before = text[pos:m.start()]
        if before.strip():
            parts.append(Text(before))
        parts.append(Think(m.group(1).strip()))
        pos = m.end()
    rest = text[pos:]
    if pos:
        rest = rest.lstrip()
    if "<think>" in rest or "</think>" in rest:
        raise FormatError("unclosed_think", "a <think> block is not closed (or </think> has no <think>)")
    if rest:
        parts.append(Text(rest))
    return [p for p in parts if not (isinstance(p, Think) and not p.text)] or []


def _loads_lenient(body: str) -> Any:
    """JSON, else a Python literal: Hermes function-calling data writes its calls as Python
    dicts (``{'name': 'f', 'arguments': {...}}``); ``ast.literal_eval`` reads those safely."""
    try:
        return json.loads(body)
    except ValueError:
        try:
            return ast.literal_eval(body)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise FormatError("bad_tool_call", f"<tool_call> body is neither JSON nor a literal ({exc})") from exc


def split_tool_calls(parts: list[Part], where: str) -> list[Part]:
    """Hermes-style ``<tool_call>{json}</tool_call>`` inside assistant text → Call parts."""
    out: list[Part] = []
    for p in parts:
        if not isinstance(p, Text) or "<tool_call>" not in p.text:
            out.append(p)
            continue
        pos = 0
        for m in _TOOL_CALL.finditer(p.text):
            before = p.text[pos:m.start()]
            if before.strip():
                out.append(Text(before.rstrip() if not out else before.strip()))
            out.append(call_from_object(_loads_lenient(m.group(1).strip()), f"{where} <tool_call>"))
            pos = m.end()
        rest = p.text[pos:]
        if "<tool_call>" in rest or "</tool_call>" in rest:
            raise FormatError("bad_tool_call", f"{where}: unclosed <tool_call>")
        if rest.strip():
            out.append(Text(rest.strip()))
    return out


def tool_responses(text: str) -> list[str] | None:
    """The bodies of ``<tool_response>…</tool_response>`` blocks when a message consists of
    nothing else (Hermes results); ``None`` when it is ordinary text."""
    if "<tool_response>" not in text:
        return None
    # only the line breaks the wrapper adds are removed: a result's own indentation is content
    bodies = [m.group(1).strip("\r\n") for m in _TOOL_RESPONSE.finditer(text)]
    if _TOOL_RESPONSE.sub("", text).strip():
        return None  # prose around the blocks: keep the message as it is
    return bodies


def normalise_assistant_text(text: str, where: str) -> list[Part]:
    """Assistant text → Text / Think / Call parts (inline ``<think>`` and ``<tool_call>``)."""
    return split_tool_calls(split_think(text), where)


# --------------------------------------------------------------------------- format registry types
@dataclass(frozen=True)
class FormatOptions:
    """Options some formats take (the CLI passes them through)."""

    generation: str = "first-correct"  # OpenR1 ``generations``: first-correct | first | all | <index>
    problem_field: str | None = None
    reasoning_field: str | None = None
    answer_field: str | None = None


@dataclass(frozen=True)
class TraceFormat:
    """One input format: a detector over a parsed record and a parser to Conversations (a
    list: an OpenR1 record with ``--generation all`` gives several)."""

    name: str
    kinds: frozenset[str]  # "tool-use", "reasoning"
    summary: str
    detect: Any  # Callable[[Any], bool]
    parse: Any  # Callable[[Any, FormatOptions], list[Conversation]]


def first_dict(items: Any) -> dict | None:
    if isinstance(items, list):
        for x in items:
            if isinstance(x, dict):
                return x
    return None


def result_text(raw: Any, text: str, where: str) -> str:
    """Guard for tool results: input that held something but yields no text is a lost result
    (``empty_tool_result``), not an empty one. A result that was empty in the input stays
    empty — that is what the tool returned."""
    if not text.strip() and raw not in (None, "", []) and not (isinstance(raw, str) and not raw.strip()):
        raise FormatError("empty_tool_result", f"{where}: the tool result has content we could not read as text")
    return text
