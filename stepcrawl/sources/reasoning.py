"""Reasoning records → chat documents with ``<|think|>`` spans.

Input: JSONL / JSON records in any reasoning format of ``stepcrawl.sources.formats``, detected
per record: OpenR1 ``generations`` lists (``--generation`` selects), chat records (OpenAI
``messages`` with ``reasoning_content`` or inline ``<think>``, ShareGPT, LLaMA-Factory
``reasoning`` parts, Anthropic ``thinking`` blocks, litellm logs) and problem / reasoning /
answer fields (``--problem-field`` … force that format; ``{prompt, response}`` with inline
``<think>`` included).

Layout (the tool-use renderer, so both kinds agree)::

    <|user|>{problem}<|end|>
    <|assistant|><|think|>{reasoning}<|/think|>{answer}<|end|>

Spans: ``user`` (the whole user turn), ``scaffold`` (newline + ``<|assistant|>`` header),
``think`` (``<|think|>…<|/think|>``), ``assistant`` (answer + ``<|end|>``). Default loss:
``think`` and ``assistant``. A record without any reasoning is dropped (``no_reasoning``)
unless ``allow_missing_reasoning``; one we cannot read is counted under its named reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import RejectedRecord, make_id, natural_language, parse_roles
from stepcrawl.sources.formats import FormatError, FormatOptions
from stepcrawl.sources.formats.r1 import ANSWER_FIELDS, PROBLEM_FIELDS, REASONING_FIELDS, get_field, pick  # noqa: F401 (re-exported)
from stepcrawl.sources.tool_use import iter_conversations, raw_json, render_conversation
from stepcrawl.steps import Drop


@dataclass
class ReasoningConfig:
    source: str = "reasoning"
    problem_field: str | None = None
    reasoning_field: str | None = None
    answer_field: str | None = None
    loss_roles: list[str] = field(default_factory=lambda: ["think", "assistant"])
    allow_missing_reasoning: bool = False
    max_chars: int = 200_000
    format: str | None = None  # force one input format (None: detect; "fields" when a *_field is given)
    generation: str = "first-correct"  # OpenR1 generations: first-correct | first | all | <index>


def iter_reasoning(paths: Iterable[str | Path], cfg: ReasoningConfig, stats: dict | None = None) -> Iterator[Document | Drop | BadRecord]:
    loss_roles = parse_roles(cfg.loss_roles)
    opts = FormatOptions(generation=cfg.generation, problem_field=cfg.problem_field,
                         reasoning_field=cfg.reasoning_field, answer_field=cfg.answer_field)
    forced = cfg.format
    if forced is None and (cfg.problem_field or cfg.reasoning_field or cfg.answer_field):
        forced = "fields"  # naming fields says which shape the records have
    if opts.generation not in ("first-correct", "first", "all") and not opts.generation.lstrip("-").isdigit():
        raise ValueError(f"unknown --generation {opts.generation!r} (first-correct, first, all, or an index)")
    seen: set[str] = set()
    for item in iter_conversations(paths, "reasoning", forced, opts, stats):
        if isinstance(item, BadRecord):
            yield item
            continue
        path, lineno, fmt, conv, rec = item
        try:
            text, spans, tstats = render_conversation(conv, loss_roles, render_tools=True)
        except FormatError as exc:
            yield RejectedRecord(path, lineno, exc.reason, str(exc), raw_json(rec))
            continue
        meta = {"file": path, "line": lineno, "record_id": conv.id, "format": fmt,
                "fields": conv.fields, "n_messages": tstats["n_messages"]}
        if conv.origin:
            meta["origin"] = conv.origin
        meta.update(conv.meta)
        lang, lang_score = natural_language(tstats["user_text"])
        doc = Document(id=make_id(cfg.source, text), text=text, source=cfg.source, kind="reasoning", spans=spans,
                       meta=meta, lang=lang, lang_score=lang_score)
        if tstats["n_think"] == 0 and not cfg.allow_missing_reasoning:
            yield Drop("no_reasoning", doc)
        elif doc.id in seen:
            yield Drop("duplicate", doc)
        elif len(text) > cfg.max_chars:
            yield Drop("too_long", doc)
        else:
            seen.add(doc.id)
            yield doc
