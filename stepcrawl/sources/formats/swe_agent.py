"""SWE-agent ``.traj`` files and mini-swe-agent trajectories.

**SWE-agent** (``sweagent/types.py``): ``{"history": [HistoryItem], "trajectory":
[TrajectoryStep], "info": {...}, "replay_config"?, "environment"?}``.

* ``history`` is the conversation as the model saw it and is used when present:
  ``{"role", "content" (str or text parts), "message_type": "system_prompt"|"demonstration"|
  "thought"|"action"|"observation"|…, "agent", "is_demo"?, "thought"?, "action"?,
  "tool_calls"? (OpenAI shape), "tool_call_ids"? (on ``tool`` messages), "thinking_blocks"?}``.
  Demonstrations are part of the prompt and stay (as the user/assistant turns they are).
  SWE-agent files the task prompt (instance template) as a ``user`` message with
  ``message_type: observation``; it stays a user turn. Without function calling the
  environment's output after an action is such a message too, and becomes a tool result.
* Without ``history``, ``trajectory`` steps ``{"response", "thought", "action",
  "observation"}`` give one assistant turn (the raw ``response``, else thought + action)
  and one tool result each.

**mini-swe-agent** (``trajectory_format: "mini-swe-agent-1"`` / ``"-1.1"``): ``{"info": {...},
"messages": [OpenAI messages + "extra"]}``. The agent's bash block stays in its assistant
text; an observation (a user turn starting with ``<returncode>`` / ``<output>``, or any user
turn after the first assistant turn that the tool-call variant sends as ``role: tool``) is a
tool result. ``role: exit`` messages (v2: the exit status, repeated in ``info``) are skipped.
"""

from __future__ import annotations

from typing import Any

from stepcrawl.sources.formats.model import (
    Conversation, FormatError, FormatOptions, Message, Part, Text, Think, TraceFormat, first_dict,
    need_dict, need_list, need_str, result_text,
)
from stepcrawl.sources.formats.openai import content_text, origin_of, parse_message, record_id


def _id(rec: dict) -> str | None:
    env = rec.get("environment")
    if isinstance(rec.get("instance_id"), str):
        return rec["instance_id"]
    info = rec.get("info") if isinstance(rec.get("info"), dict) else {}
    for v in (info.get("instance_id"), env if isinstance(env, str) else None):
        if isinstance(v, str):
            return v
    return record_id(rec)


def detect_swe_agent(rec: Any) -> bool:
    if not isinstance(rec, dict):
        return False
    h = first_dict(rec.get("history"))
    if h is not None and "role" in h and ("message_type" in h or "agent" in h):
        return True
    t = first_dict(rec.get("trajectory"))
    return t is not None and "observation" in t and ("response" in t or "action" in t)


def _history_message(item: Any, where: str, after_action: bool) -> list[Message]:
    item = need_dict(item, f"{where}: a history item")
    role, mtype = item.get("role"), item.get("message_type")
    if role == "user" and mtype == "observation" and after_action and not item.get("is_demo"):
        raw = item.get("content")
        return [Message("tool", [Text(result_text(raw, content_text(raw, where), where))])]
    if role == "tool":
        ids = need_list(item.get("tool_call_ids"), f"{where}.tool_call_ids")
        if len(ids) > 1:
            raise FormatError("unsupported_shape", f"{where}: one tool message answering {len(ids)} calls")
        msg = {k: v for k, v in item.items() if k in ("role", "content")}
        if ids:
            msg["tool_call_id"] = ids[0]
        return parse_message(msg, where)
    msg = {k: v for k, v in item.items() if k in ("role", "content", "tool_calls")}
    out = parse_message(msg, where)
    if role == "assistant" and item.get("thinking_blocks"):
        thinks: list[Part] = []
        for k, b in enumerate(need_list(item["thinking_blocks"], f"{where}.thinking_blocks")):
            if not isinstance(b, dict) or b.get("type") != "thinking":
                raise FormatError("unknown_part", f"{where}: thinking block {k} is not a 'thinking' block")
            t = need_str(b.get("thinking"), f"{where}.thinking_blocks[{k}].thinking").strip()
            if t:
                thinks.append(Think(t))
        out[0].parts[:0] = thinks
    return out


def parse_swe_agent(rec: dict, opts: FormatOptions) -> list[Conversation]:
    messages: list[Message] = []
    if rec.get("history"):
        for i, item in enumerate(need_list(rec["history"], "history")):
            after_action = any(m.role == "assistant" for m in messages)
            messages += _history_message(item, f"history {i}", after_action)
    else:
        for i, step in enumerate(need_list(rec.get("trajectory"), "trajectory", optional=False)):
            where = f"trajectory {i}"
            step = need_dict(step, f"{where}: a step")
            response = need_str(step.get("response"), f"{where}.response")
            if not response.strip():
                thought = need_str(step.get("thought"), f"{where}.thought")
                action = need_str(step.get("action"), f"{where}.action")
                response = "\n".join(x for x in (thought.strip(), action.strip()) if x)
            messages.append(Message("assistant", [Text(response)] if response else []))
            raw = step.get("observation")
            messages.append(Message("tool", [Text(need_str(raw, f"{where}.observation"))]))
    return [Conversation(messages, [], _id(rec), origin_of(rec), "swe_agent")]


def detect_mini(rec: Any) -> bool:
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
        return False
    fmt = rec.get("trajectory_format")
    if isinstance(fmt, str) and fmt.startswith("mini-swe-agent"):
        return True
    info = rec.get("info")
    return isinstance(info, dict) and ("mini_version" in info or ("exit_status" in info and "model_stats" in info))


def _is_observation(text: str) -> bool:
    head = text.lstrip()[:40]
    return head.startswith(("<returncode>", "<output>"))


def parse_mini(rec: dict, opts: FormatOptions) -> list[Conversation]:
    messages: list[Message] = []
    for i, msg in enumerate(need_list(rec["messages"], "messages", optional=False)):
        where = f"message {i}"
        if isinstance(msg, dict) and msg.get("role") == "exit":
            continue
        if isinstance(msg, dict) and msg.get("role") == "user":
            raw = msg.get("content")
            text = content_text(raw, where)
            if _is_observation(text):
                messages.append(Message("tool", [Text(result_text(raw, text, where))]))
                continue
        messages += parse_message({k: v for k, v in msg.items() if k != "extra"} if isinstance(msg, dict) else msg, where)
    return [Conversation(messages, [], _id(rec), origin_of(rec), "mini_swe_agent")]


FORMATS = [
    TraceFormat("swe_agent", frozenset({"tool-use"}),
                "SWE-agent .traj: history (message_type, tool_calls, tool_call_ids) or trajectory steps",
                detect_swe_agent, parse_swe_agent),
    TraceFormat("mini_swe_agent", frozenset({"tool-use"}),
                "mini-swe-agent trajectory: info + messages (bash blocks, <returncode> observations)",
                detect_mini, parse_mini),
]

