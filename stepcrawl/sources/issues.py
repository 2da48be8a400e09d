"""GitHub issue and pull-request threads → one Document per thread.

Accepted record shapes (one JSON object per JSONL line, mixed freely in one file):

* **GitHub REST API objects**: an issue (``/repos/{o}/{r}/issues/{n}``; a PR seen through the
  issues API carries a ``pull_request`` key) or a pull request (``/pulls/{n}``: ``head``,
  ``base``, ``merged``…). Extra fields a crawler attaches (our documented extension, since the
  REST API returns them from separate endpoints): ``comments_data`` or ``comments`` as a list
  (``/issues/{n}/comments`` objects), ``review_comments`` (``/pulls/{n}/comments``: ``path``,
  ``diff_hunk``, ``body``), ``reviews`` (``/pulls/{n}/reviews``), ``diff`` (the PR's unified
  diff, i.e. the ``application/vnd.github.diff`` media type), ``repo_tree`` (list of paths or a
  Trees-API object) and ``files_before`` ({path: content before the change}).
* **GH Archive events**: ``IssuesEvent``, ``IssueCommentEvent``, ``PullRequestEvent``,
  ``PullRequestReviewCommentEvent`` (``{"type", "repo": {"name"}, "payload": {...}}``).

All records are grouped by (repo, number) into threads, so events and REST objects of the same
issue merge; comments are de-duplicated by id and ordered by time. Missing fields are tolerated
(a record only needs a repo and a number); a record without them, or of the wrong type, is
reported by file:line and counted as ``malformed``. Authors are pseudonymised per thread
(``user_0`` = the thread's author), as BigCode's GitHub-issues set does.

Accounting unit: one thread (plus one unit per malformed record).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import iter_records, make_id, natural_language, strip_markers
from stepcrawl.sources.swebench import SwebenchIndex, linked_numbers
from stepcrawl.steps import Drop

log = logging.getLogger(__name__)

EVENT_TYPES = ("IssuesEvent", "IssueCommentEvent", "PullRequestEvent", "PullRequestReviewCommentEvent")


@dataclass
class Comment:
    id: str
    author: str
    created_at: str
    body: str
    kind: str = "comment"  # comment | review_comment | review
    path: str | None = None
    diff_hunk: str | None = None
    review_state: str | None = None


@dataclass
class Thread:
    """One issue or pull request, merged from every record that mentions it."""

    repo: str
    number: int
    is_pr: bool = False
    title: str = ""
    body: str = ""
    author: str = ""
    state: str | None = None
    merged: bool | None = None
    created_at: str | None = None
    url: str | None = None
    labels: list[str] = field(default_factory=list)
    comments: dict[str, Comment] = field(default_factory=dict)
    diff: str | None = None
    stars: int | None = None
    base_sha: str | None = None
    repo_tree: list[str] | None = None
    files_before: dict[str, str] | None = None
    sources: list[str] = field(default_factory=list)  # "file:line" of each contributing record

    def sorted_comments(self) -> list[Comment]:
        return sorted(self.comments.values(), key=lambda c: (c.created_at or "", c.id))

    def linked(self) -> list[int]:
        return linked_numbers(self.title + "\n" + self.body)


# --------------------------------------------------------------------------- field helpers
def _login(user: Any) -> str:
    if isinstance(user, dict):
        return str(user.get("login") or "")
    return str(user or "")


def _is_bot(user: Any) -> bool:
    if isinstance(user, dict) and user.get("type") == "Bot":
        return True
    return _login(user).endswith("[bot]")


def _repo_of(obj: dict) -> str | None:
    """owner/name from whichever field carries it."""
    repo = obj.get("repository") or obj.get("repo")
    if isinstance(repo, dict):
        name = repo.get("full_name") or repo.get("name")
        if name and "/" in str(name):
            return str(name)
    elif isinstance(repo, str) and "/" in repo:
        return repo
    base = obj.get("base")
    if isinstance(base, dict) and isinstance(base.get("repo"), dict) and base["repo"].get("full_name"):
        return str(base["repo"]["full_name"])
    for key in ("repository_url", "url", "html_url"):
        url = obj.get(key)
        if isinstance(url, str):
            m = re.search(r"(?:api\.github\.com/repos|github\.com)/([^/]+/[^/]+?)(?:/|$)", url)
            if m:
                return m.group(1)
    return None


def _stars_of(obj: dict) -> int | None:
    for holder in (obj.get("repository"), obj.get("repo"), (obj.get("base") or {}).get("repo") if isinstance(obj.get("base"), dict) else None, obj):
        if isinstance(holder, dict):
            for key in ("stargazers_count", "stars", "watchers_count"):
                v = holder.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return int(v)
    return None


def _str(value: Any) -> str | None:
    """A string field, or None when missing or of another type (API shapes drift)."""
    return value if isinstance(value, str) and value else None


def _list(obj: dict, key: str) -> list:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def _labels(obj: dict) -> list[str]:
    out = []
    for lab in _list(obj, "labels"):
        name = lab.get("name") if isinstance(lab, dict) else lab
        if name:
            out.append(str(name))
    return out


def _tree(value: Any) -> list[str] | None:
    if isinstance(value, dict):  # Trees API: {"tree": [{"path", "type": "blob"|"tree"}]}
        value = [e.get("path") for e in _list(value, "tree") if isinstance(e, dict) and e.get("type", "blob") == "blob"]
    if isinstance(value, list):
        return [str(p) for p in value if p]
    return None


# --------------------------------------------------------------------------- merging records
class ThreadBuilder:
    """Collects records into threads keyed by (repo lowercased, number)."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, int], Thread] = {}

    def _thread(self, repo: str, number: int) -> Thread:
        key = (repo.lower(), number)
        if key not in self.threads:
            self.threads[key] = Thread(repo=repo, number=number)
        return self.threads[key]

    def add(self, obj: dict, where: str) -> None:
        """Merge one record; raises ValueError with a reason when it is unusable."""
        if isinstance(obj.get("type"), str) and obj["type"].endswith("Event") and "payload" in obj:
            return self._add_event(obj, where)
        repo = _repo_of(obj)
        number = obj.get("number")
        if repo is None:
            raise ValueError("no repository (repository.full_name / repo / base.repo / repository_url)")
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"no integer 'number' (got {number!r})")
        th = self._thread(repo, number)
        th.sources.append(where)
        self._merge_item(th, obj, repo_obj=obj)
        # Comment objects come as ``comments_data`` (when present, even empty) or a ``comments``
        # list (in GitHub's REST issue object ``comments`` is only a count); any other value
        # holds no comments.
        key = "comments_data" if obj.get("comments_data") is not None else "comments"
        for c in _list(obj, key):
            self._add_comment(th, c, "comment")
        for c in _list(obj, "review_comments"):
            self._add_comment(th, c, "review_comment")
        for c in _list(obj, "reviews"):
            self._add_comment(th, c, "review")

    def _merge_item(self, th: Thread, item: dict, repo_obj: dict) -> None:
        """Fill the thread from an issue/PR object; earlier non-empty values win, except
        state/merged which the latest record updates (events arrive in time order)."""
        is_pr = "pull_request" in item or "head" in item or "base" in item or "merged" in item
        th.is_pr = th.is_pr or is_pr
        th.title = th.title or str(item.get("title") or "")
        th.body = th.body or str(item.get("body") or "")
        th.author = th.author or _login(item.get("user"))
        th.created_at = th.created_at or _str(item.get("created_at"))
        th.url = th.url or _str(item.get("html_url"))
        if isinstance(item.get("state"), str) and item["state"]:
            th.state = item["state"]
        if item.get("merged") is not None or item.get("merged_at"):
            th.merged = bool(item.get("merged") or item.get("merged_at"))
        for lab in _labels(item):
            if lab not in th.labels:
                th.labels.append(lab)
        stars = _stars_of(repo_obj)
        if stars is not None:
            th.stars = max(stars, th.stars or 0)
        diff = item.get("diff") or item.get("diff_text") or item.get("patch")
        if isinstance(diff, str) and diff.strip() and not th.diff:
            th.diff = diff
            th.is_pr = True
        base = item.get("base")
        if isinstance(base, dict) and base.get("sha"):
            th.base_sha = th.base_sha or str(base["sha"])
        tree = _tree(item.get("repo_tree"))
        if tree:
            th.repo_tree = tree
        fb = item.get("files_before")
        if isinstance(fb, dict):
            th.files_before = {**(th.files_before or {}), **{str(k): str(v) for k, v in fb.items() if isinstance(v, str)}}

    def _add_comment(self, th: Thread, c: Any, kind: str) -> None:
        if not isinstance(c, dict):
            return
        body = str(c.get("body") or "")
        if kind != "review_comment" and not body.strip():
            return  # e.g. an approval without text
        if _is_bot(c.get("user")):
            return
        cid = str(c.get("id") or f"{kind}:{c.get('created_at')}:{hash(body)}")
        th.comments.setdefault(
            cid,
            Comment(
                id=cid,
                author=_login(c.get("user")),
                created_at=str(c.get("created_at") or c.get("submitted_at") or ""),
                body=body,
                kind=kind,
                path=_str(c.get("path")),
                diff_hunk=_str(c.get("diff_hunk")),
                review_state=_str(c.get("state")) if kind == "review" else None,
            ),
        )

    def _add_event(self, ev: dict, where: str) -> None:
        etype = ev["type"]
        if etype not in EVENT_TYPES:
            raise ValueError(f"unsupported GH Archive event type {etype!r}")
        payload = ev.get("payload")
        if not isinstance(payload, dict):
            raise ValueError("event without a payload object")
        repo = _repo_of(ev)
        item = payload.get("issue") if etype in ("IssuesEvent", "IssueCommentEvent") else payload.get("pull_request")
        if not isinstance(item, dict):
            raise ValueError(f"{etype} without its issue/pull_request object")
        repo = repo or _repo_of(item)
        number = item.get("number", payload.get("number"))
        if repo is None or not isinstance(number, int):
            raise ValueError(f"{etype} without repo name or number")
        th = self._thread(repo, number)
        th.sources.append(where)
        self._merge_item(th, item, repo_obj=ev)
        if etype == "IssueCommentEvent":
            self._add_comment(th, payload.get("comment"), "comment")
        elif etype == "PullRequestReviewCommentEvent":
            self._add_comment(th, payload.get("comment"), "review_comment")


def record_repo(obj: dict) -> str:
    """The repository a record belongs to (lowercased), validated as ``ThreadBuilder.add``
    validates it; raises ValueError with the same reasons for unusable records."""
    if isinstance(obj.get("type"), str) and obj["type"].endswith("Event") and "payload" in obj:
        if obj["type"] not in EVENT_TYPES:
            raise ValueError(f"unsupported GH Archive event type {obj['type']!r}")
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            raise ValueError("event without a payload object")
        item = payload.get("issue") if obj["type"] in ("IssuesEvent", "IssueCommentEvent") else payload.get("pull_request")
        if not isinstance(item, dict):
            raise ValueError(f"{obj['type']} without its issue/pull_request object")
        repo = _repo_of(obj) or _repo_of(item)
        if repo is None or not isinstance(item.get("number", payload.get("number")), int):
            raise ValueError(f"{obj['type']} without repo name or number")
        return repo.lower()
    repo = _repo_of(obj)
    if repo is None:
        raise ValueError("no repository (repository.full_name / repo / base.repo / repository_url)")
    number = obj.get("number")
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"no integer 'number' (got {number!r})")
    return repo.lower()


# Inputs up to this size are grouped in memory (one pass). Larger inputs are first partitioned
# by repository into temporary JSONL files, then grouped one partition at a time, so memory is
# bounded by the largest partition (≈ input / SPILL_PARTITIONS, at least one repository's
# threads) instead of the whole input. Partitioning is by *repository*, not by thread, because
# PR-Dialogue resolves "Fixes #12" against issues of the same repository.
SPILL_BYTES = 1 << 30
SPILL_PARTITIONS = 64


def _input_bytes(paths: list[str | Path]) -> int:
    return sum(Path(p).stat().st_size for p in paths if Path(p).exists())


def iter_thread_groups(
    paths: Iterable[str | Path], spill_bytes: int = SPILL_BYTES, partitions: int = SPILL_PARTITIONS
) -> tuple[Iterator[list[Thread]], list[BadRecord], int]:
    """(groups of threads, malformed records, records read). Every thread of a repository is in
    one group; threads are in first-seen order within a group, groups in a fixed order (the
    same input always gives the same output). Inputs above ``spill_bytes`` are spilled to
    ``partitions`` temporary files (see ``SPILL_BYTES``); the groups are then produced lazily,
    one partition in memory at a time."""
    import json
    import shutil
    import tempfile
    import zlib

    paths = list(paths)
    bad: list[BadRecord] = []
    counted: dict = {}  # iter_records stores the number of well-formed records here
    if _input_bytes(paths) <= spill_bytes:
        tb = ThreadBuilder()
        for item in iter_records(paths, counted):
            if isinstance(item, BadRecord):
                bad.append(item)
                continue
            path, lineno, obj = item
            try:
                tb.add(obj, f"{path}:{lineno}")
            except ValueError as exc:
                bad.append(BadRecord(str(path), lineno, str(exc)))
        return iter([list(tb.threads.values())]), bad, counted["records"]

    tmp = Path(tempfile.mkdtemp(prefix="stepcrawl-threads-"))
    try:
        files = [open(tmp / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(partitions)]
        try:
            for item in iter_records(paths, counted):
                if isinstance(item, BadRecord):
                    bad.append(item)
                    continue
                path, lineno, obj = item
                try:
                    repo = record_repo(obj)
                except ValueError as exc:
                    bad.append(BadRecord(str(path), lineno, str(exc)))
                    continue
                k = zlib.crc32(repo.encode("utf-8")) % partitions  # stable across runs
                files[k].write(json.dumps([f"{path}:{lineno}", obj], ensure_ascii=False) + "\n")
        finally:
            for fh in files:
                fh.close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def groups() -> Iterator[list[Thread]]:
        try:
            for i in range(partitions):
                tb = ThreadBuilder()
                with open(tmp / f"part-{i:03d}.jsonl", encoding="utf-8") as fh:
                    for line in fh:
                        where, obj = json.loads(line)
                        tb.add(obj, where)  # validated by record_repo: cannot raise
                if tb.threads:
                    yield list(tb.threads.values())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return groups(), bad, counted["records"]


def read_threads(paths: Iterable[str | Path]) -> tuple[list[Thread], list[BadRecord], int]:
    """(threads in first-seen order, malformed records, records read) from JSONL/JSON files,
    all in memory (small inputs, tests); the adapters use ``iter_thread_groups``."""
    groups, bad, n = iter_thread_groups(paths, spill_bytes=1 << 62)
    return [th for g in groups for th in g], bad, n


# --------------------------------------------------------------------------- rendering
class Pseudonyms:
    """Per-thread stable pseudonyms for logins (``user_0`` = the thread author)."""

    def __init__(self, author: str) -> None:
        self.names: dict[str, str] = {}
        if author:
            self(author)

    def __call__(self, login: str) -> str:
        if not login:
            return "unknown"
        if login not in self.names:
            self.names[login] = f"user_{len(self.names)}"
        return self.names[login]

    def scrub(self, text: str) -> str:
        """Replace ``@login`` mentions of known participants."""
        for login, alias in sorted(self.names.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"@{re.escape(login)}\b", f"@{alias}", text)
        return text


def render_thread(th: Thread, include_diff: bool = True) -> str:
    """The stable text layout of one thread (see docs/SOURCES.md)."""
    who = Pseudonyms(th.author)
    for c in th.sorted_comments():
        who(c.author)
    kind = "Pull request" if th.is_pr else "Issue"
    lines = [f"Repository: {th.repo}", f"{kind} #{th.number}: {th.title.strip()}"]
    state = th.state or "unknown"
    if th.is_pr and th.merged:
        state = "merged"
    lines.append(f"State: {state}")
    if th.labels:
        lines.append("Labels: " + ", ".join(th.labels))
    lines.append(f"Author: {who(th.author)}")
    parts = ["\n".join(lines), who.scrub(th.body.strip()) or "(no description)"]
    for c in th.sorted_comments():
        if c.kind == "review_comment":
            head = f"### Review comment by {who(c.author)}" + (f" on {c.path}" if c.path else "")
            block = head
            if c.diff_hunk:
                block += "\n```diff\n" + c.diff_hunk.rstrip("\n") + "\n```"
            block += "\n" + who.scrub(c.body.strip())
        elif c.kind == "review":
            state = f" ({c.review_state.lower()})" if c.review_state else ""
            block = f"### Review by {who(c.author)}{state}\n" + who.scrub(c.body.strip())
        else:
            block = f"### Comment by {who(c.author)}\n" + who.scrub(c.body.strip())
        parts.append(block.rstrip())
    if include_diff and th.diff:
        parts.append("### Diff\n" + th.diff.rstrip("\n"))
    return strip_markers("\n\n".join(parts) + "\n")


# --------------------------------------------------------------------------- adapter
@dataclass
class IssuesConfig:
    source: str = "issues"
    min_stars: int = 10  # report: repos with ≥ 10 stars; applied only when a record carries stars
    include_diff: bool = True
    max_chars: int = 200_000  # longer threads: drop reason "too_long"
    swebench: list[str] = field(default_factory=list)  # task-list JSONL files for decontamination
    ngram_min_overlap: int = 1
    spill_bytes: int = SPILL_BYTES  # inputs larger than this are grouped via temp partitions


def thread_meta(th: Thread) -> dict[str, Any]:
    return {
        "repo": th.repo, "number": th.number, "is_pr": th.is_pr, "state": th.state, "merged": th.merged,
        "stars": th.stars, "created_at": th.created_at, "n_comments": len(th.comments), "has_diff": bool(th.diff),
        "records": th.sources[:50],
    }


def thread_gate(th: Thread, min_stars: int, swe: SwebenchIndex | None) -> tuple[str, dict] | None:
    """Drop reason (and extra meta) shared by the issues and PR-Dialogue adapters."""
    if th.stars is not None and th.stars < min_stars:
        return "low_stars", {}
    if swe is not None:
        hit = swe.match(th.repo, [th.number, *th.linked()], th.title + "\n" + th.body)
        if hit:
            return hit[0], {"swebench_match": hit[1]}
    return None


def iter_issue_documents(paths: Iterable[str | Path], cfg: IssuesConfig, stats: dict | None = None) -> Iterator[Document | Drop | BadRecord]:
    groups, bad, n_records = iter_thread_groups(paths, cfg.spill_bytes)
    n_threads = 0
    yield from bad
    swe = SwebenchIndex.from_jsonl(cfg.swebench, cfg.ngram_min_overlap) if cfg.swebench else None
    for th in (t for g in groups for t in g):
        n_threads += 1
        text = render_thread(th, cfg.include_diff)
        lang, lang_score = natural_language(th.title + "\n" + th.body + "\n" + "\n".join(c.body for c in th.sorted_comments()))
        doc = Document(
            id=make_id(cfg.source, th.repo.lower(), th.number),
            text=text,
            source=cfg.source,
            kind="pull_request" if th.is_pr else "issue",
            url=th.url or f"https://github.com/{th.repo}/{'pull' if th.is_pr else 'issues'}/{th.number}",
            fetched_at=th.created_at,
            lang=lang,
            lang_score=lang_score,
            meta=thread_meta(th),
        )
        gate = thread_gate(th, cfg.min_stars, swe)
        if gate:
            yield Drop(gate[0], doc.replace(meta={**doc.meta, **gate[1]}))
        elif not (th.title.strip() or th.body.strip() or th.comments or th.diff):
            yield Drop("empty", doc)
        elif len(text) > cfg.max_chars:
            yield Drop("too_long", doc)
        else:
            yield doc
    if stats is not None:
        stats.update({"records": n_records, "threads": n_threads, "swebench_tasks": swe.n_tasks if swe else 0})
        if swe and swe.errors:
            stats["swebench_errors"] = swe.errors[:50]
