"""Problem / reasoning / answer records → chat documents with ``<|think|>`` spans.

Input: JSONL/JSON records. Field names are configurable (``--problem-field`` etc.); by default
the first present of a few common names is used (``problem|question|prompt|input``,
``reasoning|thinking|reasoning_content|cot|rationale``, ``answer|solution|response|output``);
dotted paths (``meta.question``) reach into nested objects. A record without a problem or an
answer is malformed (reported by file:line); one without reasoning is dropped
(``no_reasoning``) unless ``allow_missing_reasoning``.

Layout::

    <|user|>{problem}<|end|>
    <|assistant|><|think|>{reasoning}<|/think|>{answer}<|end|>

Spans: ``user`` (the whole user turn), ``scaffold`` (newline + ``<|assistant|>`` header),
``think`` (``<|think|>…<|/think|>``), ``assistant`` (answer + ``<|end|>``). Default loss:
``think`` and ``assistant``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import (
    ASSISTANT, END, END_THINK, THINK, USER, SpanText, check_spans, iter_records, make_id, natural_language, parse_roles, strip_markers,
)
from stepcrawl.steps import Drop

PROBLEM_FIELDS = ("problem", "question", "prompt", "input")
REASONING_FIELDS = ("reasoning", "thinking", "reasoning_content", "cot", "rationale")
ANSWER_FIELDS = ("answer", "solution", "response", "output")


@dataclass
class ReasoningConfig:
    source: str = "reasoning"
    problem_field: str | None = None
    reasoning_field: str | None = None
    answer_field: str | None = None
    loss_roles: list[str] = field(default_factory=lambda: ["think", "assistant"])
    allow_missing_reasoning: bool = False
    max_chars: int = 200_000


def get_field(rec: dict, name: str) -> Any:
    cur: Any = rec
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def pick(rec: dict, explicit: str | None, candidates: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(field name used, string value) — explicit name, or the first candidate present."""
    for name in ([explicit] if explicit else candidates):
        v = get_field(rec, name)
        if v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str) and v.strip():
            return name, v
    return None, None


def render_reasoning(problem: str, reasoning: str | None, answer: str, loss_roles: frozenset[str]):
    st = SpanText(loss_roles)
    st.add(USER + strip_markers(problem.strip()) + END, "user")
    st.add("\n" + ASSISTANT, "scaffold")
    if reasoning:
        st.add(THINK + strip_markers(reasoning.strip()) + END_THINK, "think")
    st.add(strip_markers(answer.strip()) + END, "assistant")
    text, spans = st.build()
    check_spans(text, spans)
    return text, spans


def iter_reasoning(paths: Iterable[str | Path], cfg: ReasoningConfig, stats: dict | None = None) -> Iterator[Document | Drop | BadRecord]:
    loss_roles = parse_roles(cfg.loss_roles)
    seen: set[str] = set()
    for item in iter_records(paths, stats):
        if isinstance(item, BadRecord):
            yield item
            continue
        path, lineno, rec = item
        pf, problem = pick(rec, cfg.problem_field, PROBLEM_FIELDS)
        af, answer = pick(rec, cfg.answer_field, ANSWER_FIELDS)
        rf, reasoning = pick(rec, cfg.reasoning_field, REASONING_FIELDS)
        if problem is None or answer is None:
            missing = [w for w, v in (("problem", problem), ("answer", answer)) if v is None]
            want = {"problem": cfg.problem_field or "|".join(PROBLEM_FIELDS), "answer": cfg.answer_field or "|".join(ANSWER_FIELDS)}
            yield BadRecord(str(path), lineno, "missing " + ", ".join(f"{m} ({want[m]})" for m in missing))
            continue
        text, spans = render_reasoning(problem, reasoning, answer, loss_roles)
        rid = rec.get("id")
        meta = {"file": str(path), "line": lineno, "record_id": rid, "fields": [pf, rf, af]}
        for key in ("source", "domain", "difficulty"):
            if isinstance(rec.get(key), (str, int, float)):
                meta[key if key != "source" else "origin"] = rec[key]
        lang, lang_score = natural_language(problem)
        doc = Document(id=make_id(cfg.source, text), text=text, source=cfg.source, kind="reasoning", spans=spans,
                       meta=meta, lang=lang, lang_score=lang_score)
        if reasoning is None and not cfg.allow_missing_reasoning:
            yield Drop("no_reasoning", doc)
        elif doc.id in seen:
            yield Drop("duplicate", doc)
        elif len(text) > cfg.max_chars:
            yield Drop("too_long", doc)
        else:
            seen.add(doc.id)
            yield doc
