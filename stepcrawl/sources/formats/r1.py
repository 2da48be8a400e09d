"""R1-style reasoning records: OpenR1 ``generations`` lists, and problem / reasoning / answer
fields (``{prompt, response}`` with inline ``<think>`` included).

* **r1_generations** (open-r1 OpenR1-Math-220k and alike): ``{"problem", "generations":
  [str], "correctness_math_verify"?: [bool], "is_reasoning_complete"?: [bool],
  "finish_reasons"?: [str], "answer"?, "uuid"?, "source"?}``. Each generation is
  ``<think>…</think>answer``. ``--generation`` picks which: ``first-correct`` (default: the
  first generation that is marked correct — by ``correctness_math_verify``, else
  ``correctness_llama`` — and, where the record says, complete), ``first``, ``all`` (one
  document per generation), or an index ``N``. No generation fitting the selector:
  ``no_generation``.
* **fields**: the problem, reasoning and answer from named fields (``--problem-field`` …,
  dotted paths), else the first present of ``problem|question|prompt|input``,
  ``reasoning|thinking|reasoning_content|cot|rationale``, ``answer|solution|response|output``.
  Without a reasoning field, an answer holding ``<think>…</think>`` supplies it (DeepSeek-R1
  distillations as ``{prompt, response}``). Missing problem or answer: ``missing_field``.
"""

from __future__ import annotations

from typing import Any

from stepcrawl.sources.formats.model import (
    Conversation, FormatError, FormatOptions, Message, Text, Think, TraceFormat, split_think, type_name,
)
from stepcrawl.sources.formats.openai import origin_of, record_id

PROBLEM_FIELDS = ("problem", "question", "prompt", "input")
REASONING_FIELDS = ("reasoning", "thinking", "reasoning_content", "cot", "rationale")
ANSWER_FIELDS = ("answer", "solution", "response", "output")


def get_field(rec: dict, name: str) -> Any:
    cur: Any = rec
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def pick(rec: dict, explicit: str | None, candidates: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(field name used, string value) — explicit name, or the first candidate present.
    Numbers are written as text (``"answer": 4``); other non-strings are ``wrong_type``."""
    for name in ([explicit] if explicit else candidates):
        v = get_field(rec, name)
        if v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise FormatError("wrong_type", f"field {name!r} must be a string, got {type_name(v)}")
        if v.strip():
            return name, v
    return None, None


def detect_fields(rec: Any) -> bool:
    """Any of the known field names (a record with a problem but no answer is then reported
    as ``missing_field``, which says more than ``unknown_format``)."""
    return isinstance(rec, dict) and any(k in rec for k in (*PROBLEM_FIELDS, *ANSWER_FIELDS, *REASONING_FIELDS))


KEPT_META = ("domain", "difficulty", "problem_type", "question_type")


def record_meta(rec: dict) -> dict:
    return {k: rec[k] for k in KEPT_META if isinstance(rec.get(k), (str, int, float)) and not isinstance(rec.get(k), bool)}


def _conversation(rec: dict, problem: str, reasoning: str | None, answer: str, fmt: str, fields: list) -> Conversation:
    parts = [Think(reasoning.strip())] if reasoning and reasoning.strip() else []
    parts += split_think(answer.strip()) if not parts else [Text(answer.strip())]
    conv = Conversation([Message("user", [Text(problem.strip())]), Message("assistant", parts)],
                        [], record_id(rec), origin_of(rec), fmt)
    conv.fields = fields
    conv.meta = record_meta(rec)
    return conv


def parse_fields(rec: dict, opts: FormatOptions) -> list[Conversation]:
    pf, problem = pick(rec, opts.problem_field, PROBLEM_FIELDS)
    af, answer = pick(rec, opts.answer_field, ANSWER_FIELDS)
    rf, reasoning = pick(rec, opts.reasoning_field, REASONING_FIELDS)
    if problem is None or answer is None:
        want = {"problem": opts.problem_field or "|".join(PROBLEM_FIELDS), "answer": opts.answer_field or "|".join(ANSWER_FIELDS)}
        missing = [w for w, v in (("problem", problem), ("answer", answer)) if v is None]
        raise FormatError("missing_field", "missing " + ", ".join(f"{m} ({want[m]})" for m in missing))
    return [_conversation(rec, problem, reasoning, answer, "fields", [pf, rf, af])]


def detect_generations(rec: Any) -> bool:
    gens = rec.get("generations") if isinstance(rec, dict) else None
    return isinstance(gens, list) and bool(gens) and all(isinstance(g, str) for g in gens)


def _flags(rec: dict, key: str, n: int) -> list | None:
    v = rec.get(key)
    return v if isinstance(v, list) and len(v) == n else None


def select_generations(rec: dict, selector: str) -> list[int]:
    gens = rec["generations"]
    n = len(gens)
    if selector == "all":
        return list(range(n))
    if selector == "first":
        return [0]
    if selector.lstrip("-").isdigit():
        i = int(selector)
        return [i] if -n <= i < n else []
    if selector != "first-correct":
        raise ValueError(f"unknown generation selector {selector!r} (first-correct, first, all, or an index)")
    correct = _flags(rec, "correctness_math_verify", n) or _flags(rec, "correctness_llama", n)
    complete = _flags(rec, "is_reasoning_complete", n)
    for i in range(n):
        if correct is not None and correct[i] is not True:
            continue
        if complete is not None and complete[i] is False:
            continue
        if correct is None and complete is None:
            return [i]  # nothing says otherwise: the first one
        return [i]
    return []


def parse_generations(rec: dict, opts: FormatOptions) -> list[Conversation]:
    pf, problem = pick(rec, opts.problem_field, PROBLEM_FIELDS)
    if problem is None:
        raise FormatError("missing_field", f"missing problem ({opts.problem_field or '|'.join(PROBLEM_FIELDS)})")
    chosen = select_generations(rec, opts.generation)
    if not chosen:
        raise FormatError("no_generation", f"no generation fits --generation {opts.generation}")
    out = []
    for i in chosen:
        gen = rec["generations"][i]
        conv = Conversation([Message("user", [Text(problem.strip())]), Message("assistant", split_think(gen.strip()))],
                            [], record_id(rec), origin_of(rec), "r1_generations")
        conv.fields = [pf, f"generations[{i}]"]
        conv.meta = record_meta(rec)
        if len(chosen) > 1 and conv.id is not None:
            conv.id = f"{conv.id}#{i}"
        out.append(conv)
    return out


FORMATS = [
    TraceFormat("r1_generations", frozenset({"reasoning"}),
                "OpenR1-style record: problem + generations list (<think>…</think>answer), --generation picks",
                detect_generations, parse_generations),
    TraceFormat("fields", frozenset({"reasoning"}),
                "problem / reasoning / answer fields ({prompt, response} with inline <think> included)",
                detect_fields, parse_fields),
]
