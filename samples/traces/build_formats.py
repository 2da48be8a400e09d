"""Rebuild ``samples/traces/formats/``: a few of the bundled trajectories and reasoning records
re-expressed in the other published shapes ``stepcrawl ingest`` reads.

The content (tool results included) is that of ``tool_use.jsonl`` / ``reasoning.jsonl``, whose
results are real (see ``build_traces.py``); only the container changes, written here by hand
from each project's documented schema: ShareGPT as LLaMA-Factory writes tool turns
(``function_call`` / ``observation``), Hermes function calling (``<tool_call>`` /
``<tool_response>``), LLaMA-Factory v1 content parts, Anthropic content blocks, an OpenHands
event stream, a litellm log as OpenHands writes it, a SWE-agent ``.traj`` (pretty-printed),
and for reasoning an OpenR1-style ``generations`` record, ``{prompt, response}`` with
``<think>`` and chat records with ``reasoning_content``. Deterministic:
``python samples/traces/build_formats.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "formats"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / name).read_text("utf-8").splitlines() if line.strip()]


def calls_of(msg: dict) -> list[tuple[str, str, dict]]:
    return [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]


def think(msg: dict) -> str:
    return msg.get("reasoning_content") or ""


def split_system(t: dict) -> tuple[str | None, list[dict]]:
    msgs = t["messages"]
    return (msgs[0]["content"], msgs[1:]) if msgs[0]["role"] == "system" else (None, msgs)


# --------------------------------------------------------------------------- tool use
def to_sharegpt(t: dict) -> dict:
    """LLaMA-Factory sharegpt: reasoning inline as <think>, parallel calls as a list value."""
    system, rest = split_system(t)
    turns = []
    for m in rest:
        if m["role"] == "user":
            turns.append({"from": "human", "value": m["content"]})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            body = [{"name": n, "arguments": a} for _, n, a in calls_of(m)]
            turns.append({"from": "function_call", "value": json.dumps(body[0] if len(body) == 1 else body)})
        elif m["role"] == "assistant":
            turns.append({"from": "gpt", "value": m["content"]})
        else:
            turns.append({"from": "observation", "value": m["content"]})
    tools = [x["function"] for x in t["tools"]]
    return {"id": t["id"] + "-sharegpt", **({"system": system} if system else {}), "tools": json.dumps(tools),
            "conversations": turns}


def to_hermes(t: dict) -> dict:
    system, rest = split_system(t)
    tools = json.dumps([x for x in t["tools"]])
    turns = [{"from": "system", "value": f"{system or 'You are a helpful assistant.'} You may call functions. <tools> {tools} </tools>"}]
    for m in rest:
        if m["role"] == "user":
            turns.append({"from": "human", "value": m["content"]})
        elif m["role"] == "assistant":
            text = f"<think>\n{think(m)}\n</think>\n" if think(m) else ""
            text += m.get("content") or ""
            text += "".join(f"\n<tool_call>\n{json.dumps({'arguments': a, 'name': n})}\n</tool_call>" for _, n, a in calls_of(m))
            turns.append({"from": "gpt", "value": text.strip()})
        elif turns[-1]["from"] == "tool":  # parallel results share one tool turn
            turns[-1]["value"] += f"\n<tool_response>\n{m['content']}\n</tool_response>"
        else:
            turns.append({"from": "tool", "value": f"<tool_response>\n{m['content']}\n</tool_response>"})
    return {"id": t["id"] + "-hermes", "conversations": turns}


def to_llamafactory(t: dict) -> dict:
    system, rest = split_system(t)
    msgs = [{"role": "system", "content": [{"type": "text", "value": system or ""},
                                           {"type": "tools", "value": json.dumps(t["tools"])}], "loss_weight": 0.0}]
    for m in rest:
        if m["role"] == "assistant":
            parts = [{"type": "reasoning", "value": think(m)}] if think(m) else []
            parts += [{"type": "text", "value": m["content"]}] if m.get("content") else []
            parts += [{"type": "tool_call", "value": json.dumps({"name": n, "arguments": a})} for _, n, a in calls_of(m)]
            msgs.append({"role": "assistant", "content": parts, "loss_weight": 1.0})
        else:
            msgs.append({"role": m["role"], "content": [{"type": "text", "value": m["content"]}], "loss_weight": 0.0})
    return {"id": t["id"] + "-llamafactory", "messages": msgs}


def to_anthropic(t: dict) -> dict:
    system, rest = split_system(t)
    msgs: list[dict] = []
    for m in rest:
        if m["role"] == "user":
            msgs.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
            blocks = [{"type": "thinking", "thinking": think(m), "signature": "c2FtcGxl"}] if think(m) else []
            blocks += [{"type": "text", "text": m["content"]}] if m.get("content") else []
            blocks += [{"type": "tool_use", "id": cid, "name": n, "input": a} for cid, n, a in calls_of(m)]
            msgs.append({"role": "assistant", "content": blocks})
        else:
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]}
            if msgs[-1]["role"] == "user" and isinstance(msgs[-1]["content"], list):
                msgs[-1]["content"].append(block)
            else:
                msgs.append({"role": "user", "content": [block]})
    tools = [{"name": x["function"]["name"], "description": x["function"]["description"],
              "input_schema": x["function"]["parameters"]} for x in t["tools"]]
    return {"id": t["id"] + "-anthropic", **({"system": system} if system else {}), "tools": tools, "messages": msgs}


def to_openhands(t: dict) -> list[dict]:
    system, rest = split_system(t)
    events: list[dict] = [{"id": 0, "source": "agent", "action": "system", "message": system or "",
                           "args": {"content": system or "", "tools": t["tools"]}}]
    cause: dict[str, int] = {}
    for k, m in enumerate(rest, 1):
        if m["role"] == "user":
            events.append({"id": len(events), "source": "user", "action": "message", "message": m["content"],
                           "args": {"content": m["content"]}})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            resp = {"id": f"resp-{t['id']}-{k}", "choices": [{"message": {"role": "assistant", "content": None,
                                                                            "tool_calls": m["tool_calls"]}}]}
            for j, (cid, name, args) in enumerate(calls_of(m)):
                cause[cid] = len(events)
                events.append({"id": len(events), "source": "agent", "action": "run_ipython" if name == "python" else "run",
                               "message": f"Calling {name}", "args": {**args, "thought": (m.get("content") or "") if j == 0 else ""},
                               "tool_call_metadata": {"function_name": name, "tool_call_id": cid, "model_response": resp,
                                                      "total_calls_in_response": len(m["tool_calls"])}})
        elif m["role"] == "assistant":
            events.append({"id": len(events), "source": "agent", "action": "message", "message": m["content"],
                           "args": {"content": m["content"], "wait_for_response": True}})
        else:
            cid = m["tool_call_id"]
            events.append({"id": len(events), "source": "agent", "observation": "run", "content": m["content"],
                           "cause": cause[cid], "extras": {"exit_code": 0},
                           "tool_call_metadata": {"function_name": "", "tool_call_id": cid, "model_response": None,
                                                  "total_calls_in_response": 1}})
            events.append({"id": len(events), "source": "environment", "observation": "agent_state_changed",
                           "content": "", "extras": {"agent_state": "running"}})
    return events


def to_litellm_log(t: dict) -> dict:
    *prompt, final = t["messages"]
    return {"messages": prompt, "response": {"id": f"chatcmpl-{t['id']}", "object": "chat.completion", "model": "gpt-4o",
                                             "choices": [{"index": 0, "finish_reason": "stop", "message": final}]},
            "args": [], "kwargs": {"tools": t["tools"], "temperature": 0.0}, "timestamp": 1718000000.0, "cost": 0.0}


def to_swe_agent(t: dict) -> dict:
    system, rest = split_system(t)
    history = [{"role": "system", "content": system or "", "agent": "main", "message_type": "system_prompt"}]
    for m in rest:
        if m["role"] == "user":
            history.append({"role": "user", "content": m["content"], "agent": "main", "message_type": "observation"})
        elif m["role"] == "assistant":
            item = {"role": "assistant", "content": m.get("content") or "", "thought": m.get("content") or "",
                    "agent": "main", "message_type": "action"}
            if m.get("tool_calls"):
                item["tool_calls"] = m["tool_calls"]
                item["action"] = json.dumps([a for _, _, a in calls_of(m)])
            if think(m):
                item["thinking_blocks"] = [{"type": "thinking", "thinking": think(m), "signature": "c2FtcGxl"}]
            history.append(item)
        else:
            history.append({"role": "tool", "content": [{"type": "text", "text": m["content"]}], "agent": "main",
                            "message_type": "observation", "tool_call_ids": [m["tool_call_id"]]})
    return {"environment": t["id"], "history": history, "trajectory": [],
            "info": {"exit_status": "submitted", "model_stats": {"api_calls": sum(h["role"] == "assistant" for h in history)}}}


# --------------------------------------------------------------------------- reasoning
def reasoning_variants(recs: list[dict]) -> list[dict]:
    out = []
    for k, r in enumerate(recs[:12]):
        problem = r.get("problem") or r.get("question")
        reasoning = r.get("reasoning") or r.get("cot")
        answer = r.get("answer") or r.get("solution")
        shape = k % 3
        if shape == 0:  # OpenR1: a wrong first generation, the bundled (correct) one second
            out.append({"uuid": f"{r['id']}-openr1", "problem": problem, "answer": answer, "source": "sample",
                        "generations": [f"<think>\nA first attempt without checking.\n</think>\n\n{answer}?",
                                        f"<think>\n{reasoning}\n</think>\n\n{answer}"],
                        "correctness_math_verify": [False, True], "is_reasoning_complete": [True, True],
                        "finish_reasons": ["stop", "stop"]})
        elif shape == 1:
            out.append({"id": f"{r['id']}-r1", "prompt": problem, "response": f"<think>\n{reasoning}\n</think>\n\n{answer}"})
        else:
            out.append({"id": f"{r['id']}-chat", "messages": [{"role": "user", "content": problem},
                                                             {"role": "assistant", "content": answer, "reasoning_content": reasoning}]})
    return out


def main() -> None:
    traces = load("tool_use.jsonl")
    pick = traces[:4]
    OUT.mkdir(exist_ok=True)
    files = {
        # LLaMA-Factory's function_call turn holds calls only: traces whose turns mix text and calls are left out
        "sharegpt.jsonl": [to_sharegpt(t) for t in traces if not any(
            m.get("content") and m.get("tool_calls") for m in t["messages"])][:4],
        "hermes.jsonl": [to_hermes(t) for t in pick],
        "llamafactory.jsonl": [to_llamafactory(t) for t in pick],
        "anthropic.jsonl": [to_anthropic(t) for t in pick],
        "openhands-litellm.jsonl": [to_litellm_log(t) for t in traces[4:6]],
    }
    for name, rows in files.items():
        (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (OUT / "openhands-trajectory.json").write_text(json.dumps(to_openhands(pick[0]), indent=2, ensure_ascii=False) + "\n")
    (OUT / "swe-agent.traj").write_text(json.dumps(to_swe_agent(pick[1]), indent=2, ensure_ascii=False) + "\n")
    variants = reasoning_variants(load("reasoning.jsonl"))
    (HERE / "reasoning_formats.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in variants))
    print(f"{sum(map(len, files.values())) + 2} trajectories in {len(files) + 2} files, {len(variants)} reasoning records")


if __name__ == "__main__":
    main()
