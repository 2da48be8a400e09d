"""Input formats of `ingest tool-use` / `ingest reasoning`: one real-shaped record per published
schema (written here, in the shape each project documents), exact span text and loss masks,
named rejection reasons, the readers (JSON arrays cut short, .gz/.zst, pretty JSON, bare
message lists) and hypothesis tests for the detectors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepcrawl.cli import main as cli_main
from stepcrawl.document import Document
from stepcrawl.errors import EXIT_DROPPED_INPUT
from stepcrawl.io import BadRecord, read_documents
from stepcrawl.manifest import StageManifest
from stepcrawl.sources.common import RejectedRecord, check_spans, iter_json_records
from stepcrawl.sources.formats import FormatError, FormatOptions, detect_format, formats_for, is_message_or_event
from stepcrawl.sources.reasoning import ReasoningConfig, iter_reasoning
from stepcrawl.sources.tool_use import ToolUseConfig, iter_tool_use, parse_record

LOSS = {"assistant", "think", "tool_call"}


def pieces(doc: Document) -> list[tuple[str, bool, str]]:
    check_spans(doc.text, doc.spans)
    return [(s.role, s.loss, doc.text[s.start:s.end]) for s in doc.spans]


def content(doc: Document) -> list[tuple[str, str]]:
    """(role, text) of the non-scaffold spans; loss must follow the role everywhere."""
    got = pieces(doc)
    for role, loss, _ in got:
        assert loss == (role in LOSS), (role, loss)
    return [(r, t) for r, _, t in got if r != "scaffold"]


def one(tmp_path: Path, rec, name: str = "t.jsonl", kind: str = "tool-use", **cfg):
    f = tmp_path / name
    f.write_text(rec if isinstance(rec, str) else json.dumps(rec) + "\n")
    it = iter_tool_use([f], ToolUseConfig(**cfg)) if kind == "tool-use" else iter_reasoning([f], ReasoningConfig(**cfg))
    items = list(it)
    assert len(items) == 1, items
    return items[0]


# --------------------------------------------------------------------------- OpenAI + litellm
def test_openai_tools_as_json_string_reasoning_and_inline_think(tmp_path):
    rec = {
        "id": "oa-1",
        "tools": json.dumps([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]),
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo and Bergen?"},
            {"role": "assistant", "content": None, "reasoning_content": "Two cities: two calls.",
             "tool_calls": [
                 {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
                 {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Bergen\"}"}}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "rain, 9C"},
            {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "sun, 12C"}]},
            {"role": "assistant", "content": "<think>Oslo is warmer.</think>\n\nOslo: sun, 12C. Bergen: rain, 9C."},
        ],
    }
    doc = one(tmp_path, rec)
    assert content(doc) == [
        ("system", '<|system|>Be brief.\n\n# Tools\n{"function": {"name": "get_weather", "parameters": {"type": "object"}}, "type": "function"}<|end|>'),
        ("user", "<|user|>Weather in Oslo and Bergen?<|end|>"),
        ("think", "<|think|>Two cities: two calls.<|/think|>"),
        ("tool_call", '<|tool_call|>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
                      '<|tool_call|>{"name": "get_weather", "arguments": {"city": "Bergen"}}'),
        ("assistant", "<|end|>"),
        ("tool_result", "<|tool_result|>rain, 9C<|end|>"),
        ("tool_result", "<|tool_result|>sun, 12C<|end|>"),
        ("think", "<|think|>Oslo is warmer.<|/think|>"),  # inline <think> is a think span, not literal text
        ("assistant", "Oslo: sun, 12C. Bergen: rain, 9C.<|end|>"),
    ]
    assert doc.meta["format"] == "openai" and doc.meta["n_parallel_turns"] == 1 and doc.meta["trace_id"] == "oa-1"
    assert "<think>" not in doc.text


def test_litellm_log_keeps_the_final_response(tmp_path):
    log = {  # the file OpenHands' log_completions writes per LLM call
        "messages": [{"role": "system", "content": "You are OpenHands."}, {"role": "user", "content": "List files."}],
        "response": {"id": "chatcmpl-9", "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Listing.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "execute_bash", "arguments": "{\"command\": \"ls\"}"}}]}}]},
        "args": [], "kwargs": {"tools": [{"type": "function", "function": {"name": "execute_bash"}}], "temperature": 0},
        "timestamp": 1718000000.5, "cost": 0.001,
    }
    doc = one(tmp_path, json.dumps(log, indent=2), name="gpt-4o-1718000000.5.json")
    assert content(doc) == [
        ("system", '<|system|>You are OpenHands.\n\n# Tools\n{"function": {"name": "execute_bash"}, "type": "function"}<|end|>'),
        ("user", "<|user|>List files.<|end|>"),
        ("assistant", "Listing."),
        ("tool_call", '<|tool_call|>{"name": "execute_bash", "arguments": {"command": "ls"}}'),
        ("assistant", "<|end|>"),
    ]
    assert doc.meta["format"] == "litellm_log" and doc.meta["trace_id"] == "chatcmpl-9" and doc.meta["unanswered_calls"] == 1
    # mock function calling: the structured fncall_* pair is used, not the prose version
    mock = {**log, "messages": [{"role": "user", "content": "List files. (tools in prose)"}],
            "response": {"choices": [{"message": {"role": "assistant", "content": "<function=execute_bash>ls</function>"}}]},
            "fncall_messages": log["messages"], "fncall_response": log["response"]}
    doc2 = one(tmp_path, mock, name="mock.jsonl")
    assert doc2.text == doc.text


# --------------------------------------------------------------------------- ShareGPT family
def test_sharegpt_function_call_and_observation(tmp_path):
    rec = {  # LLaMA-Factory sharegpt / glaive_toolcall shape
        "conversations": [
            {"from": "human", "value": "Convert 100 USD to EUR."},
            {"from": "function_call", "value": "{\"name\": \"convert_currency\", \"arguments\": {\"amount\": 100, \"from\": \"USD\", \"to\": \"EUR\"}}"},
            {"from": "observation", "value": "{\"converted_amount\": 92.5}"},
            {"from": "gpt", "value": "100 USD is 92.5 EUR."},
        ],
        "system": "You can convert currencies.",
        "tools": "[{\"name\": \"convert_currency\", \"description\": \"Convert\", \"parameters\": {\"type\": \"object\"}}]",
    }
    doc = one(tmp_path, rec)
    assert content(doc) == [
        ("system", '<|system|>You can convert currencies.\n\n# Tools\n{"description": "Convert", "name": "convert_currency", '
                   '"parameters": {"type": "object"}}<|end|>'),
        ("user", "<|user|>Convert 100 USD to EUR.<|end|>"),
        ("tool_call", '<|tool_call|>{"name": "convert_currency", "arguments": {"amount": 100, "from": "USD", "to": "EUR"}}'),
        ("assistant", "<|end|>"),
        ("tool_result", '<|tool_result|>{"converted_amount": 92.5}<|end|>'),
        ("assistant", "100 USD is 92.5 EUR.<|end|>"),
    ]
    assert doc.meta["format"] == "sharegpt"


def test_hermes_tool_call_and_tool_response_tags(tmp_path):
    rec = {"id": "hermes-7", "conversations": [
        {"from": "system", "value": "You are a function calling AI model. <tools> [{'name': 'get_stock_price'}] </tools>"},
        {"from": "human", "value": "What is TSLA at?"},
        {"from": "gpt", "value": "Checking.\n<tool_call>\n{'arguments': {'symbol': 'TSLA'}, 'name': 'get_stock_price'}\n</tool_call>"},
        {"from": "tool", "value": "<tool_response>\n{'name': 'get_stock_price', 'content': {'price': 250.1}}\n</tool_response>"},
        {"from": "gpt", "value": "TSLA trades at 250.1."},
    ]}
    doc = one(tmp_path, rec)
    assert content(doc) == [
        ("system", "<|system|>You are a function calling AI model. <tools> [{'name': 'get_stock_price'}] </tools><|end|>"),
        ("user", "<|user|>What is TSLA at?<|end|>"),
        ("assistant", "Checking."),
        ("tool_call", '<|tool_call|>{"name": "get_stock_price", "arguments": {"symbol": "TSLA"}}'),  # Python dict read as data
        ("assistant", "<|end|>"),
        ("tool_result", "<|tool_result|>{'name': 'get_stock_price', 'content': {'price': 250.1}}<|end|>"),  # not empty
        ("assistant", "TSLA trades at 250.1.<|end|>"),
    ]


def test_llamafactory_value_parts(tmp_path):
    rec = {"messages": [
        {"role": "system", "content": [{"type": "text", "value": "Use tools."},
                                       {"type": "tools", "value": "[{\"name\": \"add\", \"parameters\": {}}]"}], "loss_weight": 0.0},
        {"role": "user", "content": [{"type": "text", "value": "2+3?"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "Use add."},
                                          {"type": "tool_call", "value": "{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}"}],
         "loss_weight": 1.0},
        {"role": "tool", "content": [{"type": "text", "value": "5"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": "5"}], "loss_weight": 1.0},
    ]}
    doc = one(tmp_path, rec)
    assert content(doc) == [
        ("system", '<|system|>Use tools.\n\n# Tools\n{"name": "add", "parameters": {}}<|end|>'),
        ("user", "<|user|>2+3?<|end|>"),
        ("think", "<|think|>Use add.<|/think|>"),
        ("tool_call", '<|tool_call|>{"name": "add", "arguments": {"a": 2, "b": 3}}'),
        ("assistant", "<|end|>"),
        ("tool_result", "<|tool_result|>5<|end|>"),
        ("assistant", "5<|end|>"),
    ]
    assert "[reasoning]" not in doc.text and "[tool_call]" not in doc.text and doc.meta["format"] == "llamafactory"


def test_anthropic_content_blocks_keep_their_order(tmp_path):
    rec = {
        "system": "You are a coding agent.",
        "tools": [{"name": "bash", "description": "Run a command", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "How many lines in a.txt?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Count with wc.", "signature": "EqQBCgIYAhIM"},
                {"type": "text", "text": "Counting."},
                {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "wc -l a.txt"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "3 a.txt"}]},
                {"type": "text", "text": "Thanks."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a.txt has 3 lines."}]},
        ],
    }
    doc = one(tmp_path, rec)
    assert content(doc) == [
        ("system", '<|system|>You are a coding agent.\n\n# Tools\n{"description": "Run a command", "input_schema": '
                   '{"type": "object"}, "name": "bash"}<|end|>'),
        ("user", "<|user|>How many lines in a.txt?<|end|>"),
        ("think", "<|think|>Count with wc.<|/think|>"),
        ("assistant", "Counting."),
        ("tool_call", '<|tool_call|>{"name": "bash", "arguments": {"command": "wc -l a.txt"}}'),
        ("assistant", "<|end|>"),
        ("tool_result", "<|tool_result|>3 a.txt<|end|>"),
        ("user", "<|user|>Thanks.<|end|>"),
        ("assistant", "a.txt has 3 lines.<|end|>"),
    ]
    assert doc.meta["format"] == "anthropic" and doc.meta["unanswered_calls"] == 0


# --------------------------------------------------------------------------- agent trajectories
SWE_TRAJ = {
    "environment": "swe_main",
    "trajectory": [{"action": "ls", "observation": "setup.py", "response": "ls", "thought": "", "state": {}, "execution_time": 0.1}],
    "history": [
        {"role": "system", "content": "SETTING: you are an autonomous programmer.", "agent": "main", "message_type": "system_prompt"},
        {"role": "user", "content": "Here is a demonstration: ...", "agent": "main", "message_type": "demonstration", "is_demo": True},
        {"role": "user", "content": "<issue>sum() is off by one</issue>", "agent": "main", "message_type": "observation"},
        {"role": "assistant", "content": "Let me look at the repository.", "thought": "Let me look at the repository.",
         "action": "ls", "agent": "main", "message_type": "action",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}]},
        {"role": "tool", "content": [{"type": "text", "text": "setup.py\nsrc"}], "agent": "main", "message_type": "observation",
         "tool_call_ids": ["call_1"]},
        {"role": "assistant", "content": "Done.", "agent": "main", "message_type": "action",
         "tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "submit", "arguments": "{}"}}]},
    ],
    "info": {"exit_status": "submitted", "submission": "diff --git a/x b/x", "model_stats": {"api_calls": 2}},
}


def test_swe_agent_traj_history(tmp_path):
    doc = one(tmp_path, json.dumps(SWE_TRAJ, indent=2), name="astropy__astropy-12907.traj")
    got = content(doc)
    assert got[0] == ("system", "<|system|>SETTING: you are an autonomous programmer.<|end|>")
    assert got[1] == ("user", "<|user|>Here is a demonstration: ...<|end|>")
    assert got[2] == ("user", "<|user|><issue>sum() is off by one</issue><|end|>")  # the task prompt (an "observation")
    assert got[3:] == [
        ("assistant", "Let me look at the repository."),
        ("tool_call", '<|tool_call|>{"name": "bash", "arguments": {"command": "ls"}}'),
        ("assistant", "<|end|>"),
        ("tool_result", "<|tool_result|>setup.py\nsrc<|end|>"),
        ("assistant", "Done."),
        ("tool_call", '<|tool_call|>{"name": "submit", "arguments": {}}'),
        ("assistant", "<|end|>"),
    ]
    assert doc.meta["format"] == "swe_agent" and doc.meta["n_tool_calls"] == 2
    # without history, the trajectory steps are used
    doc2 = one(tmp_path, {k: v for k, v in SWE_TRAJ.items() if k != "history"}, name="old.jsonl")
    assert content(doc2) == [("assistant", "ls<|end|>"), ("tool_result", "<|tool_result|>setup.py<|end|>")]
    # without function calling, the output after an action is a user "observation": a tool result
    plain = [{k: v for k, v in h.items() if k not in ("tool_calls", "tool_call_ids")} for h in SWE_TRAJ["history"][:5]]
    plain[4]["role"] = "user"
    doc3 = one(tmp_path, {"history": plain, "info": {}}, name="plain.jsonl")
    assert content(doc3)[2:] == [("user", "<|user|><issue>sum() is off by one</issue><|end|>"),
                                 ("assistant", "Let me look at the repository.<|end|>"),
                                 ("tool_result", "<|tool_result|>setup.py\nsrc<|end|>")]


def test_mini_swe_agent_trajectory(tmp_path):
    rec = {
        "info": {"exit_status": "Submitted", "submission": "", "model_stats": {"instance_cost": 0.01, "api_calls": 2},
                 "mini_version": "1.9.0"},
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that can interact with a computer."},
            {"role": "user", "content": "Please solve this issue: fix the typo."},
            {"role": "assistant", "content": "THOUGHT: find it.\n\n```bash\ngrep -rn teh .\n```", "extra": {"response": {"id": "r1"}}},
            {"role": "user", "content": "<returncode>0</returncode>\n<output>\n./a.txt:1:teh\n</output>"},
            {"role": "assistant", "content": "```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"},
        ],
        "trajectory_format": "mini-swe-agent-1",
    }
    doc = one(tmp_path, json.dumps(rec, indent=1), name="inst.traj.json")
    assert content(doc) == [
        ("system", "<|system|>You are a helpful assistant that can interact with a computer.<|end|>"),
        ("user", "<|user|>Please solve this issue: fix the typo.<|end|>"),
        ("assistant", "THOUGHT: find it.\n\n```bash\ngrep -rn teh .\n```<|end|>"),
        ("tool_result", "<|tool_result|><returncode>0</returncode>\n<output>\n./a.txt:1:teh\n</output><|end|>"),
        ("assistant", "```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```<|end|>"),
    ]
    assert doc.meta["format"] == "mini_swe_agent"


def _tcm(call_id, name, args, resp_id, calls):
    return {"function_name": name, "tool_call_id": call_id, "total_calls_in_response": len(calls),
            "model_response": {"id": resp_id, "choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for cid, n, a in calls]}}]}}


def test_openhands_event_stream(tmp_path):
    calls = [("t1", "execute_bash", {"command": "ls"}), ("t2", "str_replace_editor", {"command": "view", "path": "/w/a.py"})]
    events = [
        {"id": 0, "source": "agent", "action": "system", "message": "", "args": {
            "content": "You are OpenHands agent.", "tools": [{"type": "function", "function": {"name": "execute_bash"}}]}},
        {"id": 1, "source": "user", "action": "message", "message": "Fix a.py", "args": {"content": "Fix a.py", "image_urls": None}},
        {"id": 2, "source": "environment", "observation": "agent_state_changed", "content": "", "extras": {"agent_state": "running"}},
        {"id": 3, "source": "agent", "action": "run", "message": "Running command: ls",
         "args": {"command": "ls", "thought": "Look around first.", "is_input": False},
         "tool_call_metadata": _tcm("t1", "execute_bash", {"command": "ls"}, "resp-1", calls)},
        {"id": 4, "source": "agent", "action": "read", "message": "Reading /w/a.py", "args": {"path": "/w/a.py", "thought": ""},
         "tool_call_metadata": _tcm("t2", "str_replace_editor", {}, "resp-1", calls)},
        {"id": 5, "source": "agent", "observation": "run", "content": "a.py", "cause": 3, "extras": {"exit_code": 0},
         "tool_call_metadata": _tcm("t1", "execute_bash", {}, "resp-1", calls)},
        {"id": 6, "source": "agent", "observation": "read", "content": "print(1)", "cause": 4, "extras": {"path": "/w/a.py"},
         "tool_call_metadata": _tcm("t2", "str_replace_editor", {}, "resp-1", calls)},
        {"id": 7, "source": "agent", "action": "message", "args": {"content": "a.py prints 1.", "wait_for_response": True}},
    ]
    doc = one(tmp_path, json.dumps(events, indent=2), name="trajectory.json")  # a bare event list is one trajectory
    assert content(doc) == [
        ("system", '<|system|>You are OpenHands agent.\n\n# Tools\n{"function": {"name": "execute_bash"}, "type": "function"}<|end|>'),
        ("user", "<|user|>Fix a.py<|end|>"),
        ("assistant", "Look around first."),
        ("tool_call", '<|tool_call|>{"name": "execute_bash", "arguments": {"command": "ls"}}'
                      '<|tool_call|>{"name": "str_replace_editor", "arguments": {"command": "view", "path": "/w/a.py"}}'),
        ("assistant", "<|end|>"),
        ("tool_result", "<|tool_result|>a.py<|end|>"),
        ("tool_result", "<|tool_result|>print(1)<|end|>"),
        ("assistant", "a.py prints 1.<|end|>"),
    ]
    assert doc.meta["format"] == "openhands" and doc.meta["n_parallel_turns"] == 1 and doc.meta["unanswered_calls"] == 0
    wrapped = one(tmp_path, {"instance_id": "django__django-1", "history": events}, name="output.jsonl")
    assert wrapped.text == doc.text and wrapped.meta["trace_id"] == "django__django-1"


# --------------------------------------------------------------------------- reasoning
OPENR1 = {
    "problem": "What is 6*7?", "answer": "42", "uuid": "u-1", "source": "olympiads",
    "generations": ["<think>\n6*7 = 48?\n</think>\n\n48", "<think>\n6*7 = 42.\n</think>\n\n**42**", "<think>42</think>42"],
    "correctness_math_verify": [False, True, True], "is_reasoning_complete": [True, True, True],
    "finish_reasons": ["stop", "stop", "stop"],
    "messages": [{"role": "user", "content": "What is 6*7?"}, {"role": "assistant", "content": "<think>\n6*7 = 48?\n</think>\n\n48"}],
}


def _reason_pieces(doc):
    got = pieces(doc)
    for role, loss, _ in got:
        assert loss == (role in {"think", "assistant"})
    return got


def test_openr1_generations_selector(tmp_path):
    doc = one(tmp_path, OPENR1, kind="reasoning")
    assert _reason_pieces(doc) == [
        ("user", False, "<|user|>What is 6*7?<|end|>"), ("scaffold", False, "\n<|assistant|>"),
        ("think", True, "<|think|>6*7 = 42.<|/think|>"), ("assistant", True, "**42**<|end|>")]
    assert doc.meta["format"] == "r1_generations" and doc.meta["fields"] == ["problem", "generations[1]"]
    assert doc.meta["origin"] == "olympiads"
    assert "48" in one(tmp_path, OPENR1, kind="reasoning", generation="first").text
    assert "<|think|>42<|/think|>42" in one(tmp_path, OPENR1, kind="reasoning", generation="2").text
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps(OPENR1) + "\n")
    assert len([d for d in iter_reasoning([f], ReasoningConfig(generation="all")) if isinstance(d, Document)]) == 3
    none_right = {**OPENR1, "correctness_math_verify": [False, False, False]}
    bad = one(tmp_path, none_right, kind="reasoning")
    assert isinstance(bad, RejectedRecord) and bad.reason == "no_generation"


def test_reasoning_chat_and_prompt_response_shapes(tmp_path):
    want = [("user", False, "<|user|>Is 91 prime?<|end|>"), ("scaffold", False, "\n<|assistant|>"),
            ("think", True, "<|think|>91 = 7*13.<|/think|>"), ("assistant", True, "No.<|end|>")]
    shapes = [
        {"prompt": "Is 91 prime?", "response": "<think>\n91 = 7*13.\n</think>\n\nNo."},
        {"messages": [{"role": "user", "content": "Is 91 prime?"},
                      {"role": "assistant", "content": "No.", "reasoning_content": "91 = 7*13."}]},
        {"messages": [{"role": "user", "content": "Is 91 prime?"}, {"role": "assistant", "content": "<think>91 = 7*13.</think>No."}]},
        {"conversations": [{"from": "human", "value": "Is 91 prime?"}, {"from": "gpt", "value": "91 = 7*13.</think>\nNo."}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "value": "Is 91 prime?"}]},
                      {"role": "assistant", "content": [{"type": "reasoning", "value": "91 = 7*13."}, {"type": "text", "value": "No."}]}]},
        {"messages": [{"role": "user", "content": "Is 91 prime?"}, {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "91 = 7*13.", "signature": "x"}, {"type": "text", "text": "No."}]}]},
    ]
    formats = []
    for i, rec in enumerate(shapes):
        doc = one(tmp_path, rec, name=f"r{i}.jsonl", kind="reasoning")
        assert _reason_pieces(doc) == want, rec
        formats.append(doc.meta["format"])
    assert formats == ["fields", "openai", "openai", "sharegpt", "llamafactory", "anthropic"]


# --------------------------------------------------------------------------- the rule: named reasons
REJECTS = [
    ({"messages": [{"role": "user", "content": "x"}, {"role": "narrator", "content": "y"}]}, "unknown_role"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": 7}}]}]}, "wrong_type"),
    ({"messages": [{"role": "user", "content": 123}, {"role": "assistant", "content": "y"}]}, "wrong_type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]},
                   {"role": "assistant", "content": "a cat"}]}, "unknown_part"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "<tool_call>{\"name\": \"f\"}</tool_call>"},
                        {"from": "tool", "value": "<tool_response>   </tool_response>"}, {"from": "gpt", "value": "ok"}]},
     "empty_tool_result"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "value": "x"}]},
                   {"role": "assistant", "content": [{"type": "image_url", "value": "http://x"}]}]}, "unknown_part"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "<think>cut off"}]}, "unclosed_think"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "<tool_call>{not a call</tool_call>"}]},
     "bad_tool_call"),
    ({"system": "s", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3"}, {"type": "text", "text": "y"}]}]}, "unknown_part"),
    ({"records": [1, 2]}, "unknown_format"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no_assistant"),
]


def test_unrenderable_records_are_counted_under_named_reasons(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r, _ in REJECTS))
    out = tmp_path / "out"
    assert cli_main(["ingest", "tool-use", str(f), "--out", str(out), "--no-progress", "--keep-rejected"]) == EXIT_DROPPED_INPUT  # done, input dropped (stepcrawl.errors)
    m = StageManifest.read(out)
    want: dict[str, int] = {}
    for _, reason in REJECTS:
        want[reason] = want.get(reason, 0) + 1
    assert dict(m.accounting.drops) == want and m.accounting.docs_out == 0
    assert m.accounting.docs_in == m.accounting.docs_out + sum(m.accounting.drops.values())
    errs = m.extra["errors"]
    assert [e.split(":")[1] for e in errs] == [str(i) for i in range(1, len(REJECTS) + 1)]
    assert [e.split("[", 1)[1].split("]")[0] for e in errs] == [r for _, r in REJECTS]
    assert "got int" in errs[1] and "arguments" in errs[1] and "content must be a string" in errs[2]
    rejected = list(read_documents(out / "rejected"))
    assert len(rejected) == len(REJECTS) and json.loads(rejected[0].text) == REJECTS[0][0]  # the record itself is kept


def test_parse_errors_never_escape_as_other_exceptions():
    opts = FormatOptions()
    for kind in ("tool-use", "reasoning"):
        for fmt in formats_for(kind):
            for rec in ({}, [], {"messages": 5}, {"messages": [5]}, {"history": [{"action": 3}]}, [{"role": None}],
                        {"conversations": [{"from": "gpt", "value": None}]}, {"generations": [1]}, {"problem": ["x"]}):
                try:
                    parse_record(rec, kind, fmt.name, opts)
                except FormatError:
                    pass


# --------------------------------------------------------------------------- readers
def test_truncated_json_array_keeps_complete_elements(tmp_path):
    recs = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(4)]
    whole = json.dumps(recs, indent=2)
    cut = whole[: whole.rindex('"a3"')]  # the 4th element is cut off mid-string
    f = tmp_path / "cut.json"
    f.write_text(cut)
    out = tmp_path / "out"
    assert cli_main(["ingest", "tool-use", str(f), "--out", str(out), "--no-progress"]) == EXIT_DROPPED_INPUT  # done, input dropped (stepcrawl.errors)
    m = StageManifest.read(out)
    assert m.accounting.docs_out == 3 and dict(m.accounting.drops) == {"malformed": 1}
    (err,) = m.extra["errors"]
    offset = whole.index("{", whole.index('"a2"'))  # where the 4th element starts
    assert err.startswith(f"{f}:{offset}: JSON array cut off") and "3 complete element(s) kept" in err


def test_readers_gz_zst_pretty_json_and_bare_message_lists(tmp_path):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rec = {"messages": conv}
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress((json.dumps(rec) + "\n").encode()))
    (tmp_path / "b.json.zst").write_bytes(zstandard.ZstdCompressor().compress(json.dumps([rec, rec], indent=2).encode()))
    (tmp_path / "c.json").write_text(json.dumps(rec, indent=4))  # one pretty-printed object
    (tmp_path / "d.json").write_text(json.dumps(conv, indent=1))  # a bare message list = one record
    (tmp_path / "e.jsonl").write_text(json.dumps(conv) + "\n" + json.dumps(rec) + "\n")
    got = {p.name: list(iter_json_records(p, group=is_message_or_event)) for p in sorted(tmp_path.iterdir())}
    assert got["a.jsonl.gz"] == [(1, rec)]
    assert got["b.json.zst"] == [(1, rec), (2, rec)]
    assert got["c.json"] == [(1, rec)]
    assert got["d.json"] == [(1, conv)]
    assert got["e.jsonl"] == [(1, conv), (2, rec)]
    out = tmp_path / "out"
    assert cli_main(["ingest", "tool-use", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    m = StageManifest.read(out)
    assert m.accounting.docs_in == 7 and m.accounting.docs_out == 1 and m.accounting.drops == {"duplicate": 6}
    assert m.extra["formats"] == {"openai": 7}


def test_list_formats_and_forced_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["ingest", "tool-use", "--list-formats"])
    assert exc.value.code == 0
    listed = capsys.readouterr().out
    for name in ("openai", "litellm_log", "sharegpt", "llamafactory", "anthropic", "swe_agent", "mini_swe_agent", "openhands"):
        assert f"  {name} " in listed
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n")
    item = one(tmp_path, f.read_text(), format="sharegpt")
    assert isinstance(item, RejectedRecord) and item.reason in ("unknown_role", "wrong_type", "wrong_shape")


# --------------------------------------------------------------------------- detectors (hypothesis)
_text = st.text(max_size=8)
_openai_msg = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": _text})
_share_turn = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "observation", "function_call"]),
                                     "value": _text})
_lf_msg = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                 "content": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "reasoning"]),
                                                                            "value": _text}), min_size=1, max_size=3)})
_anth_msg = st.fixed_dictionaries({"role": st.just("assistant"), "content": st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": _text, "name": _text, "input": st.just({})}),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": _text})), min_size=1, max_size=2)})
_event = st.one_of(st.fixed_dictionaries({"action": st.sampled_from(["run", "message", "read"]), "args": st.just({})}),
                   st.fixed_dictionaries({"observation": st.sampled_from(["run", "read"]), "content": _text}))
_extra = st.dictionaries(st.sampled_from(["id", "source", "tools", "meta"]), _text, max_size=2)

SHAPES = {
    "openai": st.builds(lambda m, e: {**e, "messages": m}, st.lists(_openai_msg, min_size=1, max_size=4), _extra),
    "sharegpt": st.builds(lambda m, e: {**e, "conversations": m}, st.lists(_share_turn, min_size=1, max_size=4), _extra),
    "llamafactory": st.builds(lambda m: {"messages": m}, st.lists(_lf_msg, min_size=1, max_size=3)),
    "anthropic": st.builds(lambda a: {"messages": [{"role": "user", "content": "q"}, *a]}, st.lists(_anth_msg, min_size=1, max_size=2)),
    "openhands": st.one_of(st.lists(_event, min_size=1, max_size=4), st.builds(lambda h: {"history": h}, st.lists(_event, min_size=1))),
    "litellm_log": st.builds(lambda m: {"messages": m, "response": {"choices": []}}, st.lists(_openai_msg, min_size=1, max_size=3)),
    "swe_agent": st.builds(lambda m: {"history": [{**x, "message_type": "action", "agent": "main"} for x in m], "info": {}},
                           st.lists(_openai_msg, min_size=1, max_size=3)),
    "mini_swe_agent": st.builds(lambda m: {"messages": m, "info": {"mini_version": "1.0"}, "trajectory_format": "mini-swe-agent-1"},
                                st.lists(_openai_msg, min_size=1, max_size=3)),
}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SHAPES)).flatmap(lambda name: st.tuples(st.just(name), SHAPES[name])))
def test_detector_picks_the_shape_it_was_given(case):
    name, rec = case
    fmt = detect_format(rec, "tool-use")
    assert fmt is not None and fmt.name == name


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.builds(lambda gens, e: {"problem": "p", "generations": gens, **e}, st.lists(_text, min_size=1, max_size=3),
                 st.dictionaries(st.sampled_from(["messages", "answer", "uuid"]), st.just([]), max_size=2)))
def test_reasoning_detector_prefers_generations(rec):
    assert detect_format(rec, "reasoning").name == "r1_generations"


_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2, 2), _text,
                               st.sampled_from(["user", "assistant", "tool", "gpt", "human", "run", "<think>x</think>y",
                                                "<tool_call>{}</tool_call>", "<tool_response>r</tool_response>"])),
                     lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from([
                         "messages", "conversations", "role", "from", "value", "content", "type", "text", "history",
                         "action", "observation", "args", "tool_calls", "function", "name", "arguments", "generations",
                         "problem", "answer", "response", "prompt", "tools", "system", "info", "trajectory"]), inner, max_size=5)),
                     max_leaves=14)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_json)
def test_arbitrary_records_are_detected_parsed_or_rejected_never_crash(rec):
    opts = FormatOptions()
    for kind in ("tool-use", "reasoning"):
        for fmt in formats_for(kind):
            assert fmt.detect(rec) in (True, False)  # a detector never raises (detect_format would hide it)
        if not isinstance(rec, (dict, list)):
            continue
        try:
            _, convs = parse_record(rec, kind, None, opts)
        except FormatError as exc:
            assert exc.reason
            continue
        for conv in convs:
            assert all(m.role in ("system", "user", "assistant", "tool") for m in conv.messages)


def test_bad_records_are_bad_records():
    assert issubclass(RejectedRecord, BadRecord)
    r = RejectedRecord("f.jsonl", 3, "wrong_type", "x must be a string")
    assert str(r) == "f.jsonl:3: [wrong_type] x must be a string"
    import pickle

    assert str(pickle.loads(pickle.dumps(r))) == str(r)


def test_damaged_bytes_and_streams_cost_only_what_they_hold(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    line = json.dumps(good).encode()
    (tmp_path / "bad_utf8.jsonl").write_bytes(line + b"\n" + line.replace(b'"q"', b'"\xff"') + b"\n" + line + b"\n")
    (tmp_path / "bad_utf8.json").write_bytes(b"[" + line + b",\n" + line.replace(b'"q"', b'"\xfe"') + b",\n" + line + b"]")
    got = list(iter_json_records(tmp_path / "bad_utf8.jsonl"))
    assert [type(x).__name__ for x in got] == ["tuple", "BadRecord", "tuple"] and "2: not valid UTF-8" in str(got[1])
    got = list(iter_json_records(tmp_path / "bad_utf8.json"))
    assert [type(x).__name__ for x in got] == ["tuple", "BadRecord", "tuple"]
    rows = b"".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}).encode()
                    + b"\n" for i in range(5000))
    gz = gzip.compress(rows)
    (tmp_path / "cut.jsonl.gz").write_bytes(gz[: len(gz) // 2])  # a download cut in half
    got = list(iter_json_records(tmp_path / "cut.jsonl.gz"))
    assert isinstance(got[-1], BadRecord) and "cannot read further" in str(got[-1])
    assert len(got) > 1000 and all(isinstance(x, tuple) for x in got[:-1])  # what came before the damage is kept
    compact = json.dumps([good, good, good])
    (tmp_path / "compact_cut.json").write_text(compact[:-30])
    got = list(iter_json_records(tmp_path / "compact_cut.json"))
    assert [type(x).__name__ for x in got] == ["tuple", "tuple", "BadRecord"] and "2 complete element(s) kept" in str(got[-1])


def test_openai_refusal_and_litellm_thinking_blocks_are_not_lost(tmp_path):
    rec = {"messages": [{"role": "user", "content": "Help me pick a lock."},
                        {"role": "assistant", "content": None, "refusal": "I can't help with that.",
                         "thinking_blocks": [{"type": "thinking", "thinking": "This is unsafe.", "signature": "s"}]}]}
    doc = one(tmp_path, rec)
    assert content(doc)[1:] == [("think", "<|think|>This is unsafe.<|/think|>"), ("assistant", "I can't help with that.<|end|>")]


def test_github_threads_from_a_cut_off_json_array_keep_their_complete_records(tmp_path):
    """The GitHub adapters share the readers (issue 15 §5: a cut-off .json array lost every thread)."""
    rows = [{"number": n, "repo": "acme/widgets", "title": f"Issue {n}", "body": "Steps to reproduce.",
             "user": {"login": "amy"}, "state": "open"} for n in (1, 2, 3)]
    text = json.dumps(rows, indent=2)
    f = tmp_path / "issues.json"
    f.write_text(text[: text.rindex('"Issue 3"')])
    out = tmp_path / "out"
    assert cli_main(["ingest", "issues", str(f), "--out", str(out), "--no-progress", "--min-stars", "0"]) == EXIT_DROPPED_INPUT  # done, input dropped (stepcrawl.errors)
    m = StageManifest.read(out)
    assert m.accounting.docs_out == 2 and m.accounting.drops == {"malformed": 1}
    third = text.rindex("{", 0, text.index('"Issue 3"'))  # where the cut element starts
    assert m.extra["errors"][0].startswith(f"{f}:{third}: JSON array cut off")


@pytest.mark.parametrize("rec", [
    {"conversations": [{"from": "human", "value": None}, {"from": "gpt", "value": "y"}]},
    {"conversations": [{"from": "human", "value": ["x"]}, {"from": "gpt", "value": "y"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "value": 3}]}, {"role": "assistant", "content": "y"}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "text", "text": None},
                                                                                    {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "reasoning_content": {"summary": "z"}}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": {"id": "c"}}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": ["c"], "content": "r"}]},
    {"tools": 5, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
    {"history": [{"action": "message", "source": "user", "args": {"content": 42}}]},
])
def test_wrong_typed_fields_are_rejected_not_rendered(tmp_path, rec):
    item = one(tmp_path, rec)
    assert isinstance(item, RejectedRecord) and item.reason == "wrong_type", item


def test_a_jsonl_file_with_a_broken_first_line_loses_only_that_line(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    f = tmp_path / "t.jsonl"
    f.write_text('{"messages": [{"role": "user"\n' + good + "\n" + good + "\n")
    got = list(iter_json_records(f))
    assert [type(x).__name__ for x in got] == ["BadRecord", "tuple", "tuple"] and str(got[0]).startswith(f"{f}:1: malformed JSON")


def test_a_truncated_pretty_printed_trajectory_is_one_bad_record(tmp_path):
    f = tmp_path / "run.traj"
    text = json.dumps(SWE_TRAJ, indent=2)
    f.write_text(text[: len(text) // 2])
    (bad,) = list(iter_json_records(f))
    assert isinstance(bad, BadRecord) and "JSON document 1 broken at offset 0" in str(bad)


_recs = st.lists(st.dictionaries(st.sampled_from(["a", "b", "role", "messages"]),
                                 st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)),
                                 min_size=1, max_size=3), min_size=1, max_size=6)


@pytest.mark.timeout(120)
@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_recs, st.data())
def test_reader_fuzz_cut_arrays_and_corrupt_lines(tmp_path, recs, data):
    # a JSON array cut anywhere: exactly the elements that end before the cut are kept, plus one damage report
    parts = [json.dumps(r, indent=data.draw(st.sampled_from([None, 1]))) for r in recs]
    text, ends = "[", []
    for i, p in enumerate(parts):
        text += ("," if i else "") + "\n" + p
        ends.append(len(text))
    text += "\n]"
    cut = data.draw(st.integers(1, len(text)))
    f = tmp_path / "cut.json"
    f.write_text(text[:cut])
    got = list(iter_json_records(f))
    ok = [x for x in got if isinstance(x, tuple)]
    bad = [x for x in got if isinstance(x, BadRecord)]
    assert [r for _, r in ok] == recs[: sum(e <= cut for e in ends)] or (cut == len(text) and [r for _, r in ok] == recs)
    assert len(bad) == (0 if cut == len(text) else 1)
    # JSONL with some lines replaced by junk: every good line kept, every junk line one BadRecord
    junk = data.draw(st.lists(st.booleans(), min_size=len(recs), max_size=len(recs)))
    lines = [("{oops" + json.dumps(r)[:3]) if j else json.dumps(r) for r, j in zip(recs, junk)]
    g = tmp_path / "t.jsonl"
    g.write_text("\n".join(lines) + "\n")
    got = list(iter_json_records(g))
    assert len(got) == len(recs)
    assert [isinstance(x, BadRecord) for x in got] == junk
