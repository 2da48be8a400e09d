"""Rebuild ``samples/traces/tool_use.jsonl`` and ``samples/traces/reasoning.jsonl``.

The trajectories are scripted, but every tool *result* is real: ``grep``/``read_file`` results
come from running the search on this machine's CPython 3.11 standard library
(``/usr/lib/python3.11``), ``python``/``calculator`` results from actually evaluating the code,
and reasoning answers are computed. Messages follow the OpenAI Chat Completions shape
(``tool_calls`` with JSON-string ``arguments``, ``role: tool`` results with ``tool_call_id``),
including parallel tool calls. Deterministic: ``python samples/traces/build_traces.py``.
"""

from __future__ import annotations

import ast
import json
import math
import random
import statistics
from fractions import Fraction
from pathlib import Path

STDLIB = Path("/usr/lib/python3.11")
HERE = Path(__file__).resolve().parent

CODE_TOOLS = [
    {"type": "function", "function": {"name": "grep", "description": "Search files for a regular expression.",
     "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}}, "required": ["pattern"]}}},
    {"type": "function", "function": {"name": "read_file", "description": "Read lines of a file.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "start": {"type": "integer"}, "end": {"type": "integer"}}, "required": ["path"]}}},
    {"type": "function", "function": {"name": "list_dir", "description": "List a directory.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
]
CALC_TOOLS = [
    {"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression.",
     "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
    {"type": "function", "function": {"name": "python", "description": "Run Python code and return stdout.",
     "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}},
]
MODULES = ["bisect.py", "colorsys.py", "fnmatch.py", "glob.py", "shlex.py", "textwrap.py", "heapq.py", "base64.py",
           "string.py", "calendar.py", "fractions.py", "statistics.py", "json/decoder.py", "email/utils.py",
           "urllib/parse.py", "posixpath.py", "gettext.py", "quopri.py", "netrc.py", "tabnanny.py"]


def call(cid: str, name: str, **args) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def public_functions(rel: str) -> list[tuple[str, int, int, str]]:
    """(name, first line, last line, first docstring line) of top-level public functions."""
    src = (STDLIB / rel).read_text("utf-8")
    out = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            doc = (ast.get_docstring(node) or "").strip().split("\n")[0]
            if doc:
                out.append((node.name, node.lineno, node.end_lineno or node.lineno, doc))
    return out


def grep(name: str) -> str:
    """Real ``grep -rn 'def NAME('`` over the stdlib (first 6 hits)."""
    hits = []
    for p in sorted(STDLIB.rglob("*.py")):
        if "site-packages" in p.parts or "test" in p.parts:
            continue
        try:
            for i, line in enumerate(p.read_text("utf-8").split("\n"), 1):
                if f"def {name}(" in line:
                    hits.append(f"Lib/{p.relative_to(STDLIB).as_posix()}:{i}:{line.strip()}")
        except (UnicodeDecodeError, OSError):
            continue
        if len(hits) >= 6:
            break
    return "\n".join(hits) or "(no matches)"


def read_lines(rel: str, start: int, end: int) -> str:
    lines = (STDLIB / rel).read_text("utf-8").split("\n")
    return "\n".join(f"{i:4d}  {lines[i - 1]}" for i in range(start, min(end, len(lines)) + 1))


def code_trace(k: int, rng: random.Random) -> dict | None:
    rel = MODULES[k % len(MODULES)]
    funcs = public_functions(rel)
    if not funcs:
        return None
    name, start, end, doc = rng.choice(funcs)
    module = rel[:-3].replace("/", ".")
    folder = "Lib/" + (rel.rsplit("/", 1)[0] if "/" in rel else "")
    listing = "\n".join(sorted(p.name for p in (STDLIB / (rel.rsplit("/", 1)[0] if "/" in rel else "")).iterdir()
                               if p.suffix == ".py")[:25])
    end_shown = min(end, start + 40)
    msgs = [
        {"role": "system", "content": "You are a coding assistant working in a checkout of the Python standard library. "
                                      "Use the tools to look at the code before answering."},
        {"role": "user", "content": rng.choice([
            f"Where is `{name}` defined and what does it do?",
            f"Can you find the implementation of `{module}.{name}` and summarise it?",
            f"I'm reading {module}. Explain `{name}` to me, with the line numbers.",
        ])},
    ]
    thought = f"I should locate `{name}` first; grep for its definition and list the package folder at the same time."
    a1 = {"role": "assistant", "content": None, "tool_calls": [
        call(f"call_{k}_a", "grep", pattern=f"def {name}\\(", path="Lib/"),
        call(f"call_{k}_b", "list_dir", path=folder.rstrip("/") or "Lib"),
    ]}
    if k % 3 == 0:
        a1["reasoning_content"] = thought
    msgs.append(a1)
    msgs.append({"role": "tool", "tool_call_id": f"call_{k}_a", "name": "grep", "content": grep(name)})
    msgs.append({"role": "tool", "tool_call_id": f"call_{k}_b", "name": "list_dir", "content": listing})
    msgs.append({"role": "assistant", "content": f"Found it in `Lib/{rel}`. Reading the function.", "tool_calls": [
        call(f"call_{k}_c", "read_file", path=f"Lib/{rel}", start=start, end=end_shown)]})
    msgs.append({"role": "tool", "tool_call_id": f"call_{k}_c", "name": "read_file", "content": read_lines(rel, start, end_shown)})
    msgs.append({"role": "assistant", "content":
                 f"`{name}` is defined in `Lib/{rel}` at lines {start}–{end}. Its docstring summarises it: \"{doc}\" "
                 f"The function body spans {end - start + 1} lines; the excerpt above shows the core logic."})
    return {"id": f"code-{k:03d}", "source": "scripted-stdlib", "tools": CODE_TOOLS, "messages": msgs}


def calc_trace(k: int, rng: random.Random) -> dict:
    prices = [round(rng.uniform(5, 120), 2) for _ in range(3)]
    rate = rng.choice([0.07, 0.19, 0.2, 0.085])
    exprs = [f"{p} * (1 + {rate})" for p in prices]
    results = [round(eval(e), 4) for e in exprs]  # noqa: S307 - our own arithmetic strings
    msgs = [
        {"role": "user", "content": f"What do these three items cost with {rate:.1%} sales tax: "
                                    + ", ".join(f"${p}" for p in prices) + "? And what's the total?"},
        {"role": "assistant", "content": "I'll compute the three prices in parallel.",
         "tool_calls": [call(f"c{k}_{i}", "calculator", expression=e) for i, e in enumerate(exprs)]},
    ]
    for i, r in enumerate(results):
        msgs.append({"role": "tool", "tool_call_id": f"c{k}_{i}", "content": str(r)})
    total_expr = " + ".join(str(r) for r in results)
    total = round(sum(results), 4)
    msgs.append({"role": "assistant", "content": None, "tool_calls": [call(f"c{k}_t", "calculator", expression=total_expr)]})
    msgs.append({"role": "tool", "tool_call_id": f"c{k}_t", "content": str(total)})
    msgs.append({"role": "assistant", "content": "With tax: " + ", ".join(f"${r:.2f}" for r in results) + f". Total: ${total:.2f}."})
    return {"id": f"calc-{k:03d}", "source": "scripted-arithmetic", "tools": CALC_TOOLS, "messages": msgs}


def stats_trace(k: int, rng: random.Random) -> dict:
    data = [rng.randint(1, 99) for _ in range(rng.randint(7, 12))]
    code = f"import statistics as st\nxs = {data}\nprint(st.mean(xs), st.median(xs), round(st.stdev(xs), 3))"
    out = f"{statistics.mean(data)} {statistics.median(data)} {round(statistics.stdev(data), 3)}"
    msgs = [
        {"role": "system", "content": "You can run Python to answer data questions."},
        {"role": "user", "content": f"Here are my weekly step counts in thousands: {data}. Mean, median and standard deviation?"},
        {"role": "assistant", "reasoning_content": "Use the statistics module; sample standard deviation is appropriate here.",
         "content": None, "tool_calls": [call(f"s{k}", "python", code=code)]},
        {"role": "tool", "tool_call_id": f"s{k}", "content": out},
        {"role": "assistant", "content": f"Mean {statistics.mean(data):.2f}, median {statistics.median(data)}, "
                                         f"sample standard deviation {statistics.stdev(data):.3f} (thousand steps)."},
    ]
    return {"id": f"stats-{k:03d}", "source": "scripted-python", "tools": CALC_TOOLS, "messages": msgs}


def reasoning_records(rng: random.Random, n: int) -> list[dict]:
    out = []
    for k in range(n):
        kind = k % 4
        if kind == 0:
            a, b = rng.randint(12, 99), rng.randint(12, 99)
            g = math.gcd(a, b)
            out.append({"id": f"r{k}", "problem": f"Simplify the fraction {a}/{b}.",
                        "reasoning": f"The greatest common divisor of {a} and {b} is {g} (Euclid's algorithm). "
                                     f"Divide numerator and denominator by {g}: {a}/{g} = {a // g}, {b}/{g} = {b // g}.",
                        "answer": str(Fraction(a, b)), "domain": "math"})
        elif kind == 1:
            speed, hours = rng.randint(40, 110), rng.randint(2, 7)
            extra = rng.randint(10, 90)
            dist = speed * hours + extra
            out.append({"id": f"r{k}", "problem": f"A train travels at {speed} km/h for {hours} hours and then {extra} km more. How far does it go?",
                        "reasoning": f"Distance at constant speed is speed × time: {speed} × {hours} = {speed * hours} km. "
                                     f"Adding the extra {extra} km gives {speed * hours} + {extra} = {dist} km.",
                        "answer": f"{dist} km", "domain": "math"})
        elif kind == 2:
            xs = sorted(rng.sample(range(1, 60), 5))
            target = xs[rng.randrange(5)]
            import bisect
            idx = bisect.bisect_left(xs, target)
            out.append({"id": f"r{k}", "question": f"In Python, what does `bisect.bisect_left({xs}, {target})` return?",
                        "cot": f"bisect_left returns the leftmost insertion point for {target} keeping the list sorted. "
                               f"{target} already occurs in the list at index {xs.index(target)}, and bisect_left places it "
                               f"before any equal element, so the result is that index.",
                        "solution": str(idx), "domain": "code"})
        else:
            n_ = rng.randint(5, 30)
            s = n_ * (n_ + 1) // 2
            out.append({"id": f"r{k}", "problem": f"What is the sum of the integers from 1 to {n_}?",
                        "reasoning": f"Pair the first and last terms: each pair sums to {n_ + 1}, and there are {n_}/2 pairs. "
                                     f"So the sum is {n_} × {n_ + 1} / 2 = {s}.",
                        "answer": str(s), "domain": "math"})
    return out


def main() -> None:
    rng = random.Random(11)
    traces = [t for t in (code_trace(k, rng) for k in range(20)) if t]
    traces += [calc_trace(k, rng) for k in range(8)]
    traces += [stats_trace(k, rng) for k in range(8)]
    rng.shuffle(traces)
    with open(HERE / "tool_use.jsonl", "w", encoding="utf-8") as fh:
        for t in traces:
            fh.write(json.dumps(t, ensure_ascii=False) + "\n")
    recs = reasoning_records(rng, 40)
    with open(HERE / "reasoning.jsonl", "w", encoding="utf-8") as fh:
        for r in recs:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(traces)} trajectories, {len(recs)} reasoning records")


if __name__ == "__main__":
    main()
