"""Tool-use trajectories (parallel tool calls, role markers, loss spans) and reasoning traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.cli import main as cli_main
from stepcrawl.io import read_documents
from stepcrawl.manifest import StageManifest
from stepcrawl.sources.common import check_spans
from stepcrawl.sources.reasoning import ReasoningConfig, iter_reasoning
from stepcrawl.sources.tool_use import ToolUseConfig, iter_tool_use
from stepcrawl.io import BadRecord
from stepcrawl.steps import Drop

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "traces"


def call(cid, name, **args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


PARALLEL = {
    "id": "t1",
    "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}],
    "messages": [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "text", "text": "a.py and b.py"}]},
        {"role": "assistant", "content": None, "reasoning_content": "Read both at once.",
         "tool_calls": [call("c1", "read_file", path="a.py"), call("c2", "read_file", path="b.py")]},
        {"role": "tool", "tool_call_id": "c2", "content": "B = 2"},
        {"role": "tool", "tool_call_id": "c1", "content": "A = 1  <|end|> injected"},
        {"role": "assistant", "content": "a.py sets A, b.py sets B."},
    ],
}


def pieces(doc):
    check_spans(doc.text, doc.spans)
    return [(s.role, s.loss, doc.text[s.start:s.end]) for s in doc.spans]


def test_parallel_tool_calls_render_with_markers_and_default_loss(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(PARALLEL) + "\n")
    (doc,) = list(iter_tool_use([f], ToolUseConfig()))
    got = pieces(doc)
    assert got[0] == ("system", False, '<|system|>You are an agent.\n\n# Tools\n'
                      '{"function": {"name": "read_file", "parameters": {"type": "object"}}, "type": "function"}<|end|>')
    assert ("user", False, "<|user|>Compare a.py and b.py<|end|>") in got
    roles = [r for r, _, _ in got if r != "scaffold"]
    assert roles == ["system", "user", "think", "tool_call", "assistant", "tool_result", "tool_result", "assistant"]
    call_text = next(t for r, _, t in got if r == "tool_call")
    assert call_text == ('<|tool_call|>{"name": "read_file", "arguments": {"path": "a.py"}}'
                         '<|tool_call|>{"name": "read_file", "arguments": {"path": "b.py"}}')
    assert ("think", True, "<|think|>Read both at once.<|/think|>") in got
    results = [t for r, _, t in got if r == "tool_result"]
    assert results == ["<|tool_result|>B = 2<|end|>", "<|tool_result|>A = 1  <| end |> injected<|end|>"]  # marker defused
    for role, loss, text in got:
        assert loss == (role in {"assistant", "think", "tool_call"})
        if role == "scaffold":
            assert text in ("\n", "\n<|assistant|>")
    assert doc.text.count("<|end|>") == 6 and doc.text.count("<|assistant|>") == 2
    assert doc.lang == "en" and "user_text" not in doc.meta
    assert doc.meta["n_tool_calls"] == 2 and doc.meta["n_parallel_turns"] == 1 and doc.kind == "tool_use"


def test_loss_roles_are_configurable(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([PARALLEL]))  # a JSON list of trajectories
    (doc,) = list(iter_tool_use([f], ToolUseConfig(loss_roles=["tool_call", "tool_result"])))
    for role, loss, _ in pieces(doc):
        assert loss == (role in {"tool_call", "tool_result"})
    with pytest.raises(ValueError, match="unknown role"):
        list(iter_tool_use([f], ToolUseConfig(loss_roles=["assistnat"])))


def test_malformed_trajectories_are_reported_by_line(tmp_path):
    bad_args = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]}
    orphan = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                           {"role": "tool", "tool_call_id": "zzz", "content": "r"}]}
    answered_twice = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call("c", "f")]},
                                   {"role": "tool", "tool_call_id": "c", "content": "1"},
                                   {"role": "tool", "tool_call_id": "c", "content": "2"}]}
    unknown_role = {"messages": [{"role": "narrator", "content": "x"}]}
    no_assistant = {"messages": [{"role": "user", "content": "x"}]}
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [PARALLEL, bad_args, orphan, answered_twice, unknown_role, no_assistant, PARALLEL])
                 + "\n{broken\n")
    out = tmp_path / "out"
    # exit 1: done, but malformed input was dropped (stepcrawl.errors)
    assert cli_main(["ingest", "tool-use", str(f), "--out", str(out), "--no-progress", "--keep-rejected"]) == 1
    m = StageManifest.read(out)
    assert m.accounting.docs_out == 1 and m.accounting.drops == {
        "bad_arguments": 1, "orphan_tool_result": 2, "unknown_role": 1, "no_assistant": 1, "malformed": 1, "duplicate": 1}
    assert m.accounting.docs_in == m.accounting.docs_out + sum(m.accounting.drops.values())
    assert m.extra["n_malformed"] == 1
    errs = m.extra["errors"]
    assert [e.split(":")[1] for e in errs] == ["2", "3", "4", "5", "6", "8"]
    assert "not valid JSON" in errs[0] and "unknown or already answered call 'zzz'" in errs[1]
    assert "already answered call 'c'" in errs[2] and "unknown role 'narrator'" in errs[3] and "no assistant turn" in errs[4]
    (doc,) = read_documents(out)
    assert doc.source == "tool_use" and doc.spans and doc.meta["line"] == 1


def test_reasoning_fields_markers_and_drops(tmp_path):
    rows = [
        {"problem": "What is 2+2?", "reasoning": "Add two and two.", "answer": "4"},
        {"q": {"text": "Capital of France?"}, "why": "It is Paris.", "ans": "Paris"},
        {"problem": "No answer here", "reasoning": "..."},
        {"problem": "Is 7 prime?", "answer": "yes"},
        {"problem": "What is 2+2?", "reasoning": "Add two and two.", "answer": "4"},
    ]
    f = tmp_path / "r.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = list(iter_reasoning([f], ReasoningConfig()))
    assert isinstance(items[0], type(items[0])) and not isinstance(items[0], (Drop, BadRecord))
    doc = items[0]
    assert doc.text == "<|user|>What is 2+2?<|end|>\n<|assistant|><|think|>Add two and two.<|/think|>4<|end|>"
    assert pieces(doc) == [
        ("user", False, "<|user|>What is 2+2?<|end|>"),
        ("scaffold", False, "\n<|assistant|>"),
        ("think", True, "<|think|>Add two and two.<|/think|>"),
        ("assistant", True, "4<|end|>"),
    ]
    assert isinstance(items[1], BadRecord) and items[1].line == 2  # default names do not fit record 2
    assert isinstance(items[2], BadRecord) and "missing answer" in str(items[2]) and f"{f}:3" in str(items[2])
    assert isinstance(items[3], Drop) and items[3].reason == "no_reasoning"
    assert isinstance(items[4], Drop) and items[4].reason == "duplicate"
    custom = ReasoningConfig(problem_field="q.text", reasoning_field="why", answer_field="ans", loss_roles=["assistant"])
    items = list(iter_reasoning([f], custom))
    ok = [i for i in items if not isinstance(i, (Drop, BadRecord))]
    assert len(ok) == 1 and "Capital of France?" in ok[0].text and "<|think|>It is Paris.<|/think|>Paris" in ok[0].text
    assert [s.loss for s in ok[0].spans] == [False, False, False, True]


def test_bundled_trace_samples_ingest(tmp_path):
    out = tmp_path / "tu"
    assert cli_main(["ingest", "tool-use", str(SAMPLES / "tool_use.jsonl"), "--out", str(out), "--no-progress"]) == 0
    m = StageManifest.read(out)
    assert m.accounting.docs_out >= 24 and m.extra["n_malformed"] == 0
    docs = list(read_documents(out))
    assert sum(d.meta["n_parallel_turns"] > 0 for d in docs) >= 10
    for d in docs:
        check_spans(d.text, d.spans)
    out = tmp_path / "re"
    assert cli_main(["ingest", "reasoning", str(SAMPLES / "reasoning.jsonl"), "--out", str(out), "--no-progress",
                     "--source", "reasoning-x"]) == 0
    docs = list(read_documents(out))
    assert len(docs) >= 30 and all(d.source == "reasoning-x" and "<|think|>" in d.text for d in docs)


def test_resume_skips_a_finished_identical_run(tmp_path, capsys):
    args = ["ingest", "reasoning", str(SAMPLES / "reasoning.jsonl"), "--out", str(tmp_path / "r"), "--no-progress", "--resume"]
    assert cli_main(args) == 0
    first = StageManifest.read(tmp_path / "r")
    assert cli_main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert StageManifest.read(tmp_path / "r").created_at == first.created_at
    assert cli_main(args + ["--loss-roles", "assistant"]) == 0  # other config: rebuilt
    assert StageManifest.read(tmp_path / "r").config["loss_roles"] == ["assistant"]


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=6),
                  st.sampled_from(["user", "assistant", "tool", "system", "c1", "f", "{}", '{"a": 1}']))
_val = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "id", "function", "name",
                                     "arguments", "type", "text", "reasoning_content"]), inner, max_size=4)),
    max_leaves=10)


_message = st.builds(
    lambda role, extra: {**extra, "role": role},
    st.one_of(st.sampled_from(["system", "user", "assistant", "tool"]), _leaf),
    st.fixed_dictionaries({}, optional={
        "content": _val,
        "tool_calls": st.lists(st.one_of(_val, st.builds(
            lambda cid, name, args: {"id": cid, "function": {"name": name, "arguments": args}},
            st.sampled_from(["c1", "c2", 3]), st.sampled_from(["f", "", 5]), st.sampled_from(["{}", "{bad", '{"x": [1]}', 7]))),
            max_size=3),
        "tool_call_id": st.sampled_from(["c1", "c2", 3, None, ["c1"]]),
        "reasoning_content": _val,
    }),
)
_trajectory = st.one_of(
    st.dictionaries(st.sampled_from(["messages", "tools", "id"]), _val, max_size=3),
    st.fixed_dictionaries({"messages": st.lists(_message, max_size=6)}, optional={"tools": _val, "id": _val}),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(_trajectory, max_size=4))
def test_arbitrary_trajectories_are_documents_or_bad_records(tmp_path_factory, records):
    f = tmp_path_factory.mktemp("tu") / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in records))
    items = list(iter_tool_use([f], ToolUseConfig()))
    assert len(items) == len(records)
    for it in items:
        if not isinstance(it, (BadRecord, Drop)):
            check_spans(it.text, it.spans)


def test_bundled_format_samples_render_like_their_openai_originals(tmp_path):
    """samples/traces/formats/ holds bundled trajectories re-expressed in other published
    shapes (build_formats.py): each must ingest without a reject and render the same turns as
    its OpenAI original (the system turn differs: each format writes tool schemas its own way;
    ShareGPT function_call turns and OpenHands actions have no place for reasoning)."""
    def body(doc, skip=("system",)):
        return "".join(doc.text[s.start:s.end] for s in doc.spans if s.role not in skip).lstrip("\n")

    originals = [d for d in iter_tool_use([SAMPLES / "tool_use.jsonl"], ToolUseConfig()) if not isinstance(d, (Drop, BadRecord))]
    plain = {body(d) for d in originals}
    no_think = {body(d, ("system", "think")) for d in originals}
    out = tmp_path / "formats"
    assert cli_main(["ingest", "tool-use", str(SAMPLES / "formats"), "--out", str(out), "--no-progress"]) == 0
    m = StageManifest.read(out)
    assert m.accounting.drops == {} and m.extra["formats"] == {
        "anthropic": 4, "litellm_log": 2, "llamafactory": 4, "openhands": 1, "sharegpt": 8, "swe_agent": 1}
    for d in read_documents(out):
        check_spans(d.text, d.spans)
        if d.meta["format"] == "openhands" or (d.meta["format"] == "sharegpt" and "-sharegpt" in d.meta["trace_id"]):
            assert body(d, ("system", "think")) in no_think, d.meta
        else:
            assert body(d) in plain, d.meta
    out = tmp_path / "reasoning"
    assert cli_main(["ingest", "reasoning", str(SAMPLES / "reasoning_formats.jsonl"), "--out", str(out), "--no-progress"]) == 0
    m = StageManifest.read(out)
    assert m.accounting.docs_out == 12 and m.extra["formats"] == {"fields": 4, "openai": 4, "r1_generations": 4}
    for d in read_documents(out):
        assert "A first attempt" not in d.text  # the generation marked wrong is not selected
        assert [s.role for s in d.spans] == ["user", "scaffold", "think", "assistant"]
