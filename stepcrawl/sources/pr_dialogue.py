"""PR-Dialogue: pull requests with diffs → Agentless-style training examples with loss spans.

The report (App. C.2.2) builds 90B tokens of "PR-Dialogue" from two Agentless templates:

* **localization**: problem statement + repository structure → the files to edit;
* **repair**: problem statement + file contents → SEARCH/REPLACE edits.

The edits are derived from the PR's diff hunks (``unidiff``): for each hunk, SEARCH is the
hunk's old side (context + removed lines) and REPLACE its new side (context + added lines);
a new file is one block with an empty SEARCH. The prompt wording follows Agentless's
published prompts (``agentless/fl/localize.py``, ``agentless/repair/repair.py``).

**Loss masks depend on the stage** (``--policy``):

* ``anneal``: plain text; only the template *scaffolding* (instructions, headings, fences we
  insert) is masked — the problem, structure, file contents and the answer all carry loss.
* ``mid``: chat form ``<|user|>prompt<|end|>\\n<|assistant|>answer<|end|>``; the whole user
  turn (markers included) and the ``<|assistant|>`` header are masked, loss only on the
  assistant's answer and its closing ``<|end|>`` (the model must learn to stop).

The problem statement is the linked issue's title and body when the PR links one that is in
the input ("Fixes #12"), else the PR's own title and body; PRs with no usable statement are
dropped (``no_problem``; the report has an LLM write one — we do not ship an LLM here).

Accounting unit: one (thread, template) candidate; every thread in the input yields one unit
per template, kept or dropped (e.g. ``not_pr`` for plain issues), plus one per malformed record
and one per ignored record (``ignored_event``: GH Archive events of other types, other webhooks).
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import (
    ASSISTANT, END, USER, Pseudonymizer, SpanText, check_spans, make_id, natural_language, strip_markers,
)
from stepcrawl.sources.issues import SPILL_BYTES, Thread, iter_thread_groups, reject_items, thread_gate
from stepcrawl.sources.swebench import SwebenchIndex
from stepcrawl.steps import Drop

log = logging.getLogger(__name__)

POLICIES = ("anneal", "mid")
TEMPLATES = ("localization", "repair")
# Which span roles carry loss under each policy (the single source of truth for the masks).
POLICY_LOSS_ROLES: dict[str, frozenset[str]] = {
    "anneal": frozenset({"user", "assistant"}),  # everything except "scaffold"
    "mid": frozenset({"assistant"}),  # only the answer
}


@dataclass
class FileEdit:
    path: str
    old_path: str | None
    added_file: bool
    removed_file: bool
    hunks: list[tuple[int, list[str], list[str]]]  # (old start line, old side, new side)


def parse_diff(diff: str) -> list[FileEdit]:
    """Text file edits of a unified diff (binary files and hunk-less renames are skipped)."""
    try:
        patch = PatchSet(diff)
    except UnidiffParseError as exc:
        raise ValueError(f"unparseable diff: {exc}") from exc
    edits = []
    for pf in patch:
        if pf.is_binary_file or not len(pf):
            continue
        hunks = []
        for h in pf:
            old = [ln.value for ln in h if ln.line_type in (" ", "-")]
            new = [ln.value for ln in h if ln.line_type in (" ", "+")]
            hunks.append((h.source_start, old, new))
        src = pf.source_file[2:] if pf.source_file.startswith("a/") else pf.source_file
        edits.append(FileEdit(pf.path, src if pf.is_rename else None, pf.is_added_file, pf.is_removed_file, hunks))
    return edits


def _join(lines: list[str]) -> str:
    text = "".join(lines)
    return text if text.endswith("\n") or not text else text + "\n"


def search_replace(edits: list[FileEdit]) -> str:
    """Agentless SEARCH/REPLACE blocks, one per hunk, in a fenced block per file."""
    blocks = []
    for e in edits:
        for _, old, new in e.hunks:
            blocks.append(
                f"```python\n### {e.path}\n<<<<<<< SEARCH\n{_join(old)}=======\n{_join(new)}>>>>>>> REPLACE\n```"
            )
    return "\n".join(blocks) + "\n"


def file_context(e: FileEdit, before: dict[str, str] | None, max_chars: int) -> tuple[str, str]:
    """(content to show for a file, "full" | "hunks"): the file before the change when the
    record carries it, else the old sides of the hunks with ``...`` between them."""
    path = e.old_path or e.path
    if before and path in before:
        text = before[path]
        if len(text) <= max_chars:
            return text if text.endswith("\n") else text + "\n", "full"
    pieces = []
    for start, old, _ in e.hunks:
        pieces.append(f"# (excerpt from line {start})\n" + _join(old))
    return "...\n".join(pieces), "hunks"


def render_tree(paths: Iterable[str], root: str) -> str:
    """Agentless-style repository structure: nested folders, 4-space indents, folders first."""
    tree: dict[str, Any] = {}
    for p in sorted(set(paths)):
        node = tree
        parts = p.strip("/").split("/")
        for d in parts[:-1]:
            node = node.setdefault(d + "/", {})
        node.setdefault(parts[-1], None)
    lines = [root.rstrip("/").split("/")[-1] + "/"]

    def walk(node: dict, depth: int) -> None:
        for name in sorted(node, key=lambda n: (not n.endswith("/"), n)):
            lines.append("    " * depth + name)
            if node[name] is not None:
                walk(node[name], depth + 1)

    walk(tree, 1)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- templates
# Each template is a list of (text, role) pieces; role "scaffold" marks our own wording.
def localization_pieces(problem: str, tree: str, targets: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    prompt = [
        ("Please look through the following GitHub problem description and Repository structure and "
         "provide a list of files that one would need to edit to fix the problem.\n\n"
         "### GitHub Problem Description ###\n", "scaffold"),
        (problem, "user"),
        ("\n\n###\n\n### Repository Structure ###\n", "scaffold"),
        (tree, "user"),
        ("\n###\n\nPlease only provide the full path and return at most 5 files.\n"
         "The returned files should be separated by new lines ordered by most to least important "
         "and wrapped with ```\n", "scaffold"),
    ]
    answer = [("```\n" + "\n".join(targets[:5]) + "\n```\n", "assistant")]
    return prompt, answer


def repair_pieces(problem: str, files: list[tuple[str, str]], edits_text: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    prompt: list[tuple[str, str]] = [
        ("We are currently solving the following issue within our repository. Here is the issue text:\n"
         "--- BEGIN ISSUE ---\n", "scaffold"),
        (problem, "user"),
        ("\n--- END ISSUE ---\n\nBelow are some code segments, each from a relevant file. "
         "One or more of these files may contain bugs.\n\n--- BEGIN FILE ---\n", "scaffold"),
    ]
    for path, content in files:
        prompt.append(("```\n### ", "scaffold"))
        prompt.append((f"{path}\n{content}", "user"))
        prompt.append(("```\n", "scaffold"))
    prompt.append(
        ("--- END FILE ---\n\nPlease first localize the bug based on the issue statement, and then "
         "generate *SEARCH/REPLACE* edits to fix the issue.\n\nEvery *SEARCH/REPLACE* edit must use "
         "this format:\n1. The file path\n2. The start of search block: <<<<<<< SEARCH\n3. A contiguous "
         "chunk of lines to search for in the existing source code\n4. The dividing line: =======\n"
         "5. The lines to replace into the source code\n6. The end of the replace block: >>>>>>> REPLACE\n\n"
         "Wrap each *SEARCH/REPLACE* edit in a code block as shown in the example above.\n", "scaffold")
    )
    return prompt, [(edits_text, "assistant")]


def render(prompt: list[tuple[str, str]], answer: list[tuple[str, str]], policy: str):
    """Text and spans of one example under ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of {POLICIES}")
    st = SpanText(POLICY_LOSS_ROLES[policy])
    if policy == "anneal":
        for text, role in prompt:
            st.add(strip_markers(text) if role != "scaffold" else text, role)
        st.add("\n### Answer ###\n", "scaffold")
        for text, role in answer:
            st.add(strip_markers(text), role)
    else:
        # Chat form: the whole prompt is the user's turn (masked); the header of the answer is
        # inserted by the chat template (masked); the answer and its <|end|> carry loss.
        st.add(USER, "user")
        for text, _ in prompt:
            st.add(strip_markers(text), "user")
        st.add(END, "user")
        st.add("\n" + ASSISTANT, "scaffold")
        for text, _ in answer:
            st.add(strip_markers(text), "assistant")
        st.add(END, "assistant")
    text, spans = st.build()
    check_spans(text, spans)
    return text, spans


# --------------------------------------------------------------------------- adapter
@dataclass
class PRDialogueConfig:
    source: str = "pr_dialogue"
    policy: str = "anneal"  # anneal | mid
    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))
    min_stars: int = 10
    min_problem_chars: int = 20
    max_files: int = 5  # PRs touching more text files: drop "too_many_files"
    max_file_chars: int = 20_000  # larger "files_before" contents fall back to hunk excerpts
    max_tree_files: int = 400
    max_chars: int = 120_000  # longer examples: drop "too_long"
    require_tree: bool = False  # drop localization examples without a real repo tree
    swebench: list[str] = field(default_factory=list)
    ngram_min_overlap: int = 1
    spill_bytes: int = SPILL_BYTES  # inputs larger than this are grouped via temp partitions (by repo)
    pseudonymize: bool = True  # @mentions and e-mail addresses in the problem statement → pseudonyms


def _problem(th: Thread, by_key: dict[tuple[str, int], Thread]) -> tuple[str, int | None]:
    for num in th.linked():
        issue = by_key.get((th.repo.lower(), num))
        if issue is not None and not issue.is_pr and (issue.title or issue.body):
            return f"{issue.title.strip()}\n\n{issue.body.strip()}".strip(), num
    return f"{th.title.strip()}\n\n{th.body.strip()}".strip(), None


def _tree_paths(th: Thread, targets: list[str], cfg: PRDialogueConfig) -> tuple[list[str], str]:
    if th.repo_tree:
        paths = list(dict.fromkeys(th.repo_tree))
        if len(paths) > cfg.max_tree_files:
            # keep the folders of the targets and fill up with the rest, in order
            dirs = {posixpath.dirname(t) for t in targets}
            near = [p for p in paths if posixpath.dirname(p) in dirs]
            paths = list(dict.fromkeys(near + paths))[: cfg.max_tree_files]
        return sorted(set(paths) | set(targets)), "repo_tree"
    review_paths = [c.path for c in th.comments.values() if c.path]
    return sorted(set(targets) | set(review_paths)), "diff"


def build_examples(th: Thread, by_key: dict, cfg: PRDialogueConfig, swe: SwebenchIndex | None) -> Iterator[Document | Drop]:
    """One item per template for one thread."""
    base = {"repo": th.repo, "number": th.number, "policy": cfg.policy, "stars": th.stars}

    def drop_all(reason: str, extra: dict | None = None):
        for t in cfg.templates:
            stub = Document(id=make_id(cfg.source, th.repo.lower(), th.number, t, cfg.policy), text="",
                            source=cfg.source, kind="pull_request", meta={**base, "template": t, **(extra or {})})
            yield Drop(reason, stub)

    if not th.is_pr:
        yield from drop_all("not_pr")
        return
    if not th.diff:
        yield from drop_all("no_diff")
        return
    if th.diff_missing:  # the files API left out some patches: the edits would be partial
        yield from drop_all("incomplete_diff", {"files_without_patch": th.diff_missing[:20]})
        return
    problem, linked = _problem(th, by_key)
    gate = thread_gate(th, cfg.min_stars, swe)
    if gate is None and swe is not None:
        hit = swe.match(th.repo, [th.number] + ([linked] if linked else []), problem)
        gate = (hit[0], {"swebench_match": hit[1]}) if hit else None
    if gate:
        yield from drop_all(gate[0], gate[1])
        return
    if len(problem) < cfg.min_problem_chars:
        yield from drop_all("no_problem")
        return
    try:
        edits = parse_diff(th.diff)
    except ValueError as exc:
        yield from drop_all("bad_diff", {"error": str(exc)})
        return
    if not edits:
        yield from drop_all("no_edits")
        return
    if len(edits) > cfg.max_files:
        yield from drop_all("too_many_files")
        return
    targets = [e.old_path or e.path for e in edits if not e.added_file]
    lang, lang_score = natural_language(problem)
    # Prose only: the code (file contents, SEARCH/REPLACE edits) stays verbatim so the edits
    # still apply to the real files.
    problem = Pseudonymizer(cfg.pseudonymize).text(problem)
    for template in cfg.templates:
        meta = {**base, "template": template, "linked_issue": linked, "target_files": [e.path for e in edits]}
        doc_id = make_id(cfg.source, th.repo.lower(), th.number, template, cfg.policy)
        if template == "localization":
            if not targets:
                yield Drop("no_edits", Document(id=doc_id, text="", source=cfg.source, kind="pull_request", meta=meta))
                continue
            paths, tree_source = _tree_paths(th, targets, cfg)
            meta["tree_source"] = tree_source
            prompt, answer = localization_pieces(problem, render_tree(paths, th.repo), targets)
        else:
            contexts = [(e.old_path or e.path, *file_context(e, th.files_before, cfg.max_file_chars)) for e in edits if not e.added_file]
            meta["file_context"] = sorted({c[2] for c in contexts}) or ["none"]
            prompt, answer = repair_pieces(problem, [(p, c) for p, c, _ in contexts], search_replace(edits))
        text, spans = render(prompt, answer, cfg.policy)
        doc = Document(id=doc_id, text=text, source=cfg.source, kind="pull_request", meta=meta, spans=spans,
                       url=th.url or f"https://github.com/{th.repo}/pull/{th.number}", fetched_at=th.created_at,
                       lang=lang, lang_score=lang_score)
        if template == "localization" and cfg.require_tree and meta.get("tree_source") != "repo_tree":
            yield Drop("no_repo_tree", doc)
        elif len(text) > cfg.max_chars:
            yield Drop("too_long", doc)
        else:
            yield doc


def iter_pr_dialogue(paths: Iterable[str | Path], cfg: PRDialogueConfig, stats: dict | None = None) -> Iterator[Document | Drop | BadRecord]:
    bad_t = [t for t in cfg.templates if t not in TEMPLATES]
    if bad_t:
        raise ValueError(f"unknown template(s) {bad_t}; known: {TEMPLATES}")
    if cfg.policy not in POLICIES:
        raise ValueError(f"unknown policy {cfg.policy!r}; use one of {POLICIES}")
    # Grouped by repository (bounded memory on large inputs): a PR's linked issue ("Fixes #12")
    # is always in the same group.
    groups, bad, n_records = iter_thread_groups(paths, cfg.spill_bytes)
    yield from reject_items(bad, cfg.source, stats)
    swe = SwebenchIndex.from_jsonl(cfg.swebench, cfg.ngram_min_overlap) if cfg.swebench else None
    n_threads = 0
    for threads in groups:
        by_key = {(t.repo.lower(), t.number): t for t in threads}
        for th in threads:
            n_threads += 1
            yield from build_examples(th, by_key, cfg, swe)
    if stats is not None:
        stats.update({"records": n_records, "threads": n_threads, "swebench_tasks": swe.n_tasks if swe else 0})


__all__ = [
    "PRDialogueConfig", "iter_pr_dialogue", "build_examples", "parse_diff", "search_replace", "render",
    "render_tree", "POLICY_LOSS_ROLES", "BadRecord",
]
