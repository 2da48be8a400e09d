"""OpenHands event streams (``trajectory.json``, or ``history`` in evaluation ``output.jsonl``).

Events are serialised by ``openhands/events/serialization/event.py``: an **action**
``{"id", "timestamp", "source": "user"|"agent"|"environment", "message", "action": TYPE,
"args": {...}, "tool_call_metadata"?: {"function_name", "tool_call_id", "model_response",
"total_calls_in_response"}}`` or an **observation** ``{"id", "source", "observation": TYPE,
"content", "extras": {...}, "cause": ACTION_ID, "tool_call_metadata"?}``.

Mapping:

* ``action: system`` → the system turn (``args.content``; ``args.tools`` → tool schemas).
* ``action: message`` → a user turn (source ``user``) or assistant text (source ``agent``).
* any other agent action → an assistant tool call. With ``tool_call_metadata`` the call is
  the one in the logged ``model_response`` (name, id, exact arguments), and actions from the
  same model response form one assistant turn (parallel calls); the first one's
  ``args.thought`` is the turn's text. Without metadata (prompt-based CodeAct agents) the call
  is named by the action type with ``args`` (minus ``thought``) as its arguments.
* an observation → a tool result answering its ``tool_call_metadata.tool_call_id``.
* Bookkeeping events that never reach the model are skipped: actions ``change_agent_state``,
  ``recall``, ``null``, ``condensation``, ``condensation_request``; observations
  ``agent_state_changed``, ``null``, ``recall``, ``agent_condensation``. Every other
  observation (errors, ``user_rejected``, …) is a tool result: the model saw it.
"""

from __future__ import annotations

from typing import Any

from stepcrawl.sources.formats.model import (
    Call, Conversation, FormatError, FormatOptions, Message, Text, TraceFormat, call_from_object, decode_arguments,
    decode_tools, first_dict, need_dict, need_list, need_str, normalise_assistant_text, result_text,
)
from stepcrawl.sources.formats.openai import origin_of, record_id

SKIP_ACTIONS = {"change_agent_state", "recall", "null", "condensation", "condensation_request"}
SKIP_OBSERVATIONS = {"agent_state_changed", "null", "recall", "agent_condensation"}


def _is_event(x: Any) -> bool:
    return isinstance(x, dict) and ("action" in x or "observation" in x) and "role" not in x


def events_of(rec: Any) -> Any:
    return rec if isinstance(rec, list) else rec.get("history") if isinstance(rec, dict) else None


def detect(rec: Any) -> bool:
    return _is_event(first_dict(events_of(rec)))


def _logged_call(meta: dict, where: str) -> Call | None:
    """The call with ``tool_call_id`` in the logged model response, if it is there."""
    resp = meta.get("model_response")
    if not isinstance(resp, dict):
        return None
    for choice in resp.get("choices") or []:
        msg = choice.get("message") if isinstance(choice, dict) else None
        for call in (msg or {}).get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == meta.get("tool_call_id"):
                return call_from_object(call, where)
    return None


def parse(rec: Any, opts: FormatOptions) -> list[Conversation]:
    events = need_list(events_of(rec), "history", optional=False)
    messages: list[Message] = []
    tools: list[Any] = []
    turn_key: Any = None  # model response id of the assistant turn being built
    for i, ev in enumerate(events):
        where = f"event {i}"
        ev = need_dict(ev, f"{where}: an event")
        if "action" in ev:
            kind = need_str(ev["action"], f"{where}: action", optional=False)
            if kind in SKIP_ACTIONS:
                continue
            args = ev.get("args") if ev.get("args") is not None else {}
            args = need_dict(args, f"{where}.args")
            source = ev.get("source")
            if kind == "system":
                messages.append(Message("system", [Text(need_str(args.get("content"), f"{where}.args.content"))]))
                tools += decode_tools(args.get("tools"), f"{where}.args.tools")
                turn_key = None
                continue
            if kind == "message" and source == "user":
                messages.append(Message("user", [Text(need_str(args.get("content"), f"{where}.args.content"))]))
                turn_key = None
                continue
            if source not in ("agent", None):
                raise FormatError("unknown_role", f"{where}: action {kind!r} from source {source!r}")
            if kind == "message":
                messages.append(Message("assistant", normalise_assistant_text(need_str(args.get("content"), f"{where}.args.content"), where)))
                turn_key = None
                continue
            meta = ev.get("tool_call_metadata")
            thought = need_str(args.get("thought"), f"{where}.args.thought")
            if isinstance(meta, dict):
                call = _logged_call(meta, where)
                if call is None:
                    name = need_str(meta.get("function_name"), f"{where}.tool_call_metadata.function_name", optional=False)
                    arguments = {k: v for k, v in args.items() if k not in ("thought", "security_risk")}
                    call = Call(name, arguments, None if meta.get("tool_call_id") is None else str(meta["tool_call_id"]))
                resp = meta.get("model_response")
                key = resp.get("id") if isinstance(resp, dict) and resp.get("id") else None
            else:
                call = Call(kind, decode_arguments({k: v for k, v in args.items() if k not in ("thought", "security_risk")}, where))
                key = None
            if key is not None and key == turn_key and messages and messages[-1].role == "assistant":
                messages[-1].parts.append(call)  # another call of the same model response
            else:
                parts = normalise_assistant_text(thought, where) if thought.strip() else []
                messages.append(Message("assistant", [*parts, call]))
            turn_key = key
        elif "observation" in ev:
            kind = need_str(ev["observation"], f"{where}: observation", optional=False)
            if kind in SKIP_OBSERVATIONS:
                continue
            raw = ev.get("content")
            text = result_text(raw, need_str(raw, f"{where}.content"), where)
            meta = ev.get("tool_call_metadata")
            cid = meta.get("tool_call_id") if isinstance(meta, dict) else None
            messages.append(Message("tool", [Text(text)], None if cid is None else str(cid)))
            turn_key = None
        else:
            raise FormatError("unknown_part", f"{where}: neither an action nor an observation")
    rid = record_id(rec) if isinstance(rec, dict) else None
    return [Conversation(messages, tools, rid, origin_of(rec) if isinstance(rec, dict) else None, "openhands")]


FORMATS = [
    TraceFormat("openhands", frozenset({"tool-use"}),
                "OpenHands event stream: actions (tool_call_metadata) and observations, bare list or {history}",
                detect, parse),
]
