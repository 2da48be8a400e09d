"""Decontamination of PR/issue data against SWE-bench-style task lists.

The report deduplicates its PR/Issue/Commit data "strictly" against SWE-bench Verified and
SWE-bench Multilingual. A task list is JSONL with ``repo`` ("owner/name"), ``instance_id``
("owner__name-1234", the number being the PR that solved the task) and ``problem_statement``
(the issue text). A thread or PR-Dialogue example is contaminated when

1. **id match**: its repo and number equal a task's repo and number (case-insensitive repo), or
   its text links the task's PR/issue number in the same repo ("fixes #1234"); or
2. **n-gram match**: its problem text shares at least ``min_overlap`` word 13-grams with any
   task's problem statement (13-grams as in the GPT-3 / Llama decontamination reports).

The n-gram test uses the project's decontamination helper (``stepcrawl.decontam``:
``NgramIndex`` / ``count_overlap``, same text normalisation as dedup and the corpus-wide
decontam), so a thread dropped here would also be flagged there. That helper cannot match a
problem statement shorter than 13 words; for those we add an exact check of the statement's
word sequence inside the document (``words`` below), so short tasks are not silently missed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from stepcrawl.decontam import NgramIndex, count_overlap
from stepcrawl.dedup.normalize import ngram_hashes
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import iter_json_records

NGRAM = 13
_WORD = re.compile(r"\w+", re.UNICODE)
# GitHub owners cannot contain "_", repo names can: split at the first "__".
_INSTANCE = re.compile(r"^(?P<owner>[^_]+)__(?P<name>.+)-(?P<number>\d+)$")


def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` words for the exact short-statement check (digits kept as they are,
    unlike dedup's normalised words: a short statement must occur literally)."""
    return _WORD.findall(text.lower())


def parse_instance_id(instance_id: str) -> tuple[str, int] | None:
    """``"django__django-11099"`` → ``("django/django", 11099)``; None when it does not parse."""
    m = _INSTANCE.match(instance_id or "")
    if not m:
        return None
    return f"{m.group('owner')}/{m.group('name')}".lower(), int(m.group("number"))


@dataclass
class SwebenchIndex:
    """Task ids and problem statements of one or more SWE-bench-style task lists."""

    ids: set[tuple[str, int]] = field(default_factory=set)
    repos: set[str] = field(default_factory=set)
    statements: list[tuple[str, str]] = field(default_factory=list)  # (instance_id, text)
    min_overlap: int = 1
    n_tasks: int = 0
    errors: list[str] = field(default_factory=list)
    _index: NgramIndex | None = None  # over all statements
    _short: list[tuple[str, str]] = field(default_factory=list)  # (instance_id, " ".join(words)) < n words

    @classmethod
    def from_jsonl(cls, paths: str | Path | Iterable[str | Path], min_overlap: int = 1) -> "SwebenchIndex":
        if isinstance(paths, (str, Path)):
            paths = [paths]
        idx = cls(min_overlap=min_overlap)
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"SWE-bench task list not found: {path}")
            for item in iter_json_records(path):  # JSONL, or a .json list of tasks
                if isinstance(item, BadRecord):
                    idx.errors.append(str(item))
                    continue
                lineno, rec = item
                wrong = [k for k in ("repo", "instance_id", "problem_statement") if rec.get(k) is not None and not isinstance(rec[k], str)]
                if wrong:  # a wrong-typed field is reported, never matched as str(list)
                    idx.errors.append(str(BadRecord(str(path), lineno, f"task field {wrong[0]!r} is {type(rec[wrong[0]]).__name__}, expected a string")))
                    continue
                iid = str(rec.get("instance_id") or "")
                parsed = parse_instance_id(iid)
                repo = str(rec.get("repo") or (parsed[0] if parsed else "")).lower()
                if parsed is None:
                    idx.errors.append(str(BadRecord(str(path), lineno, f"instance_id {iid!r} is not owner__repo-NUMBER")))
                else:
                    idx.ids.add((repo or parsed[0], parsed[1]))
                if repo:
                    idx.repos.add(repo)
                stmt = str(rec.get("problem_statement") or "")
                if stmt.strip():
                    idx.statements.append((iid, stmt))
                    w = words(stmt)
                    if len(w) < NGRAM:
                        idx._short.append((iid, " ".join(w)))
                idx.n_tasks += 1
        idx._index = NgramIndex.from_texts([t for _, t in idx.statements], n=NGRAM, name="swebench")
        return idx

    def overlap(self, text: str) -> int:
        """Distinct problem-statement 13-grams that ``text`` shares with the task list."""
        return count_overlap(text, self._index)

    def _attribute(self, text: str) -> str:
        """Which task a matching text overlaps most, counted on the same n-grams as
        :meth:`overlap` (only called on a match: rare path)."""
        mine = set(ngram_hashes(text, NGRAM).tolist())
        best = max(self.statements, key=lambda it: len(mine.intersection(ngram_hashes(it[1], NGRAM).tolist())), default=("?", ""))
        return best[0]

    def match(self, repo: str | None, numbers: Iterable[int], text: str) -> tuple[str, str] | None:
        """(drop reason, matching task) when contaminated, else None.

        ``numbers`` are the thread's own number and the issue/PR numbers it links."""
        r = (repo or "").lower()
        for num in numbers:
            if (r, int(num)) in self.ids:
                return "swebench:id", f"{r}#{num}"
        if self.overlap(text) >= self.min_overlap:
            return "swebench:ngram", self._attribute(text)
        if self._short:
            joined = " " + " ".join(words(text)) + " "
            for iid, short in self._short:
                if short and f" {short} " in joined:
                    return "swebench:ngram", iid
        return None


_LINKED = re.compile(r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?|see|refs?|addresses)\s*:?\s+#(\d+)")


def linked_numbers(text: str) -> list[int]:
    """Issue numbers a PR links with GitHub's closing keywords (or see/ref): ``Fixes #12``."""
    return [int(m) for m in _LINKED.findall(text or "")]
