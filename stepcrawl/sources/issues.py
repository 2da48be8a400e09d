"""GitHub issue and pull-request threads → one Document per thread.

Accepted record shapes (one JSON object per JSONL line, mixed freely in one file; see
:func:`parse_record` for how each is recognised):

* **GitHub REST API objects**: an issue (``/repos/{o}/{r}/issues/{n}``; a PR seen through the
  issues API carries a ``pull_request`` key) or a pull request (``/pulls/{n}``: ``head``,
  ``base``, ``merged``…). Extra fields a crawler attaches (our documented extension, since the
  REST API returns them from separate endpoints): ``comments_data`` or ``comments`` as a list
  (``/issues/{n}/comments`` objects), ``review_comments`` (``/pulls/{n}/comments``: ``path``,
  ``diff_hunk``, ``body``), ``reviews`` (``/pulls/{n}/reviews``), ``diff`` (the PR's unified
  diff, i.e. the ``application/vnd.github.diff`` media type) or ``files`` (the
  ``/pulls/{n}/files`` list, whose ``patch`` hunks are assembled into the diff), ``repo_tree``
  (list of paths or a Trees-API object) and ``files_before`` ({path: content before}).
* **Standalone comments, review comments and reviews** (one object per line, as the
  ``/issues/comments``, ``/pulls/comments`` and ``/pulls/{n}/reviews`` endpoints return them):
  grouped into their thread by ``issue_url`` / ``pull_request_url``.
* **Webhook payloads**: ``issues``, ``issue_comment``, ``pull_request``,
  ``pull_request_review``, ``pull_request_review_comment``, ``pull_request_review_thread``.
* **GH Archive events**: every type is accepted; ``IssuesEvent``, ``IssueCommentEvent``,
  ``PullRequestEvent``, ``PullRequestReviewEvent``, ``PullRequestReviewCommentEvent`` and
  ``PullRequestReviewThreadEvent`` feed threads, the others (PushEvent, WatchEvent, …) and
  webhook payloads of other kinds are counted as ``ignored_event`` (by type in the manifest's
  ``extra.ignored_events``), not as malformed.

All records are grouped by (repo, number) into threads, so events and REST objects of the same
issue merge; comments are de-duplicated by id and ordered by time. Missing fields are tolerated
(a record only needs a repo and a number, or a comment URL); a record without them, or whose
rendered fields have the wrong type (``"body": 123``), is reported by file:line and counted as
``malformed``. Logins, @mentions and e-mail addresses are pseudonymised per thread
(``user_0`` = the thread's author), as BigCode's GitHub-issues set does; ``--no-pseudonymize``
turns that off.

Accounting unit: one thread (plus one unit per malformed or ignored record).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.common import Pseudonymizer, iter_records, make_id, natural_language, strip_markers
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
    diff_missing: list[str] = field(default_factory=list)  # changed files the files API gave no patch for
    stars: int | None = None
    base_sha: str | None = None
    repo_tree: list[str] | None = None
    files_before: dict[str, str] | None = None
    sources: list[str] = field(default_factory=list)  # "file:line" of each contributing record
    has_item: bool = False  # some record carried the issue / PR object itself (not only comments)

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


# --------------------------------------------------------------------------- field validation
# Fields that end up in a document's text must be strings (or absent / null). A record whose
# rendered field has another type (``"body": 123``, ``"title": ["x"]``) is reported as malformed
# with the field named: rendering ``str(["x"])`` would put Python syntax into the corpus.
_TEXT_FIELDS = ("title", "body")
_COMMENT_TEXT_FIELDS = ("body", "path", "diff_hunk", "state")


def _check_text_fields(obj: dict, fields: tuple[str, ...], what: str) -> None:
    for key in fields:
        v = obj.get(key)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{what} field {key!r} is {type(v).__name__}, expected a string")
    user = obj.get("user")
    if user is not None and not isinstance(user, (dict, str)):
        raise ValueError(f"{what} field 'user' is {type(user).__name__}, expected a user object")
    if isinstance(user, dict) and user.get("login") is not None and not isinstance(user["login"], str):
        raise ValueError(f"{what} field 'user.login' is {type(user['login']).__name__}, expected a string")


def _check_item(item: dict) -> None:
    _check_text_fields(item, _TEXT_FIELDS, "issue/pull request")
    labels = item.get("labels")
    if isinstance(labels, list):
        for lab in labels:
            name = lab.get("name") if isinstance(lab, dict) else lab
            if name is not None and not isinstance(name, str):
                raise ValueError(f"label name is {type(name).__name__}, expected a string")
    for key in ("diff", "diff_text", "patch"):
        v = item.get(key)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"field {key!r} is {type(v).__name__}, expected the diff as a string")
    files = item.get("files")
    if files is not None:
        if not isinstance(files, list):
            raise ValueError(f"field 'files' is {type(files).__name__}, expected a list of files-API objects")
        for f in files:
            if not isinstance(f, dict) or not isinstance(f.get("filename"), str):
                raise ValueError("a 'files' entry without a string 'filename' (pulls/{n}/files shape)")
            for key in ("patch", "status", "previous_filename"):
                if f.get(key) is not None and not isinstance(f[key], str):
                    raise ValueError(f"files-API field {key!r} is {type(f[key]).__name__}, expected a string")


def _check_comment(c: Any, kind: str) -> None:
    if isinstance(c, dict):
        _check_text_fields(c, _COMMENT_TEXT_FIELDS, kind.replace("_", " "))


# --------------------------------------------------------------------------- record shapes
# GH Archive event types that carry (part of) an issue / PR thread. Every other type
# (PushEvent, WatchEvent, ForkEvent, CreateEvent, …) is accepted and counted as
# ``ignored_event`` (it is not a thread record, and not malformed either).
THREAD_EVENTS = (
    "IssuesEvent", "IssueCommentEvent", "PullRequestEvent", "PullRequestReviewEvent",
    "PullRequestReviewCommentEvent", "PullRequestReviewThreadEvent",
)
EVENT_TYPES = THREAD_EVENTS  # backwards-compatible name
_API_URL = re.compile(r"/repos/([^/]+/[^/]+)/(issues|pulls)/(\d+)(?:$|[/?#])")
_HTML_URL = re.compile(r"github\.com/([^/]+/[^/]+)/(issues|pull)/(\d+)(?:$|[/?#])")


@dataclass
class Piece:
    """What one record contributes to one thread (the result of :func:`parse_record`)."""

    repo: str
    number: int
    item: dict | None  # an issue / PR object to merge, if the record has one
    holder: dict  # where the repository's star count may be found
    comments: list[tuple[dict, str]] = field(default_factory=list)  # (object, comment|review_comment|review)
    is_pr: bool = False


@dataclass
class IgnoredRecord:
    """A well-formed record that is not part of any thread (a PushEvent, a ``push`` webhook…)."""

    path: str
    line: int | None
    kind: str  # the event type, or "webhook" for a webhook payload without issue / PR

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: ignored {self.kind}"


def _url_key(obj: dict) -> tuple[str, int, bool] | None:
    """(repo, number, is_pr) from a comment's / review's ``issue_url`` / ``pull_request_url``
    (REST API URLs), else from its ``html_url`` (``…/pull/12#pullrequestreview-80``)."""
    for key in ("pull_request_url", "issue_url"):
        url = obj.get(key)
        if isinstance(url, str) and (m := _API_URL.search(url)):
            return m.group(1), int(m.group(3)), m.group(2) == "pulls"
    url = obj.get("html_url")
    if isinstance(url, str) and (m := _HTML_URL.search(url)):
        return m.group(1), int(m.group(3)), m.group(2) == "pull"
    return None


def _comment_kind(c: dict, in_pr: bool) -> str:
    """comment | review_comment | review of a standalone object, by the fields each REST
    shape has: review comments (``/pulls/comments``) have ``diff_hunk``/``path``/
    ``pull_request_review_id``; reviews (``/pulls/{n}/reviews``) have ``state`` and
    ``submitted_at`` and a ``pull_request_url``; issue comments have neither."""
    if "diff_hunk" in c or "pull_request_review_id" in c or isinstance(c.get("path"), str):
        return "review_comment"
    if in_pr and ("submitted_at" in c or "state" in c):
        return "review"
    return "comment"


def _is_payload(obj: dict) -> bool:
    """A webhook payload (or a GH Archive event's payload): the thread object sits under
    ``issue`` / ``pull_request`` next to ``comment`` / ``review``. An issue object seen
    through the issues API also has a ``pull_request`` key, but it only holds URLs."""
    pr = obj.get("pull_request")
    pr_obj = isinstance(pr, dict) and any(k in pr for k in ("number", "title", "head", "base", "user", "body"))
    return pr_obj or isinstance(obj.get("issue"), dict) or (
        "number" not in obj and (isinstance(obj.get("comment"), dict) or isinstance(obj.get("review"), dict)))


def _parse_payload(p: dict, repo_hint: str | None, holder: dict, what: str) -> Piece:
    issue, pr = p.get("issue"), p.get("pull_request")
    item = issue if isinstance(issue, dict) else pr if isinstance(pr, dict) else None
    if item is None:
        raise ValueError(f"{what} without its issue/pull_request object")
    repo = repo_hint or _repo_of(p) or _repo_of(item)
    number = item.get("number", p.get("number"))
    if repo is None or not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"{what} without repo name or number")
    _check_item(item)
    is_pr = item is pr or "pull_request" in item
    comments: list[tuple[dict, str]] = []
    c = p.get("comment")
    if isinstance(c, dict):
        comments.append((c, "review_comment" if item is pr or "diff_hunk" in c else "comment"))
    r = p.get("review")
    if isinstance(r, dict):
        comments.append((r, "review"))
    thread = p.get("thread")  # pull_request_review_thread: {"comments": [review comments]}
    if isinstance(thread, dict):
        comments.extend((tc, "review_comment") for tc in _list(thread, "comments"))
    for obj, kind in comments:
        _check_comment(obj, kind)
    stars_holder = holder if _stars_of(holder) is not None else p
    return Piece(repo, number, item, stars_holder, comments, is_pr)


def parse_record(obj: dict) -> Piece | str:
    """What one input record is. Returns a :class:`Piece` of a thread, or the kind of a
    well-formed record that belongs to no thread (a str: the event type, or "webhook");
    raises ValueError with a reason when the record is unusable (malformed).

    Shapes, in the order they are recognised:

    1. GH Archive event ``{"type": "…Event", "repo": {"name"}, "payload": {…}}``: the thread
       types in ``THREAD_EVENTS``; every other type is ignored (not malformed).
    2. Webhook payload (``issues``, ``issue_comment``, ``pull_request``,
       ``pull_request_review``, ``pull_request_review_comment``,
       ``pull_request_review_thread``): ``{"action", "issue"|"pull_request", "comment"?,
       "review"?, "repository", "sender"}``. A payload of another webhook (``push``,
       ``star``…: a ``sender`` and nothing of a thread) is ignored as "webhook".
    3. A standalone comment, review comment or review (one line of ``/issues/comments``,
       ``/pulls/comments``, ``/pulls/{n}/reviews``): no ``number``, grouped into its thread by
       ``issue_url`` / ``pull_request_url`` (or ``html_url``).
    4. An issue / PR object (REST), with our crawler extension fields.
    """
    etype = obj.get("type")
    if isinstance(etype, str) and etype.endswith("Event") and "payload" in obj:
        if etype not in THREAD_EVENTS:
            return etype
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            raise ValueError("event without a payload object")
        return _parse_payload(payload, _repo_of(obj), obj, etype)
    if _is_payload(obj):
        return _parse_payload(obj, None, obj, "webhook payload")
    if "number" not in obj:
        key = _url_key(obj)
        if key is not None and ("body" in obj or "user" in obj or "id" in obj):
            repo, number, in_pr = key
            kind = _comment_kind(obj, in_pr)
            _check_comment(obj, kind)
            return Piece(repo, number, None, obj, [(obj, kind)], is_pr=in_pr or kind != "comment")
        if "sender" in obj and ("repository" in obj or "organization" in obj):
            return "webhook"
    repo = _repo_of(obj)
    number = obj.get("number")
    if repo is None and "number" not in obj and isinstance(obj.get("filename"), str) and "patch" in obj:
        raise ValueError("a /pulls/{n}/files entry on its own line names no pull request: "
                         "attach the list to its PR record as 'files'")
    if repo is None:
        raise ValueError("no repository (repository.full_name / repo / base.repo / repository_url)")
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"no integer 'number' (got {number!r})")
    _check_item(obj)
    # Comment objects come as ``comments_data`` (when present, even empty) or a ``comments``
    # list (in GitHub's REST issue object ``comments`` is only a count); any other value
    # holds no comments.
    key = "comments_data" if obj.get("comments_data") is not None else "comments"
    comments = [(c, "comment") for c in _list(obj, key)]
    comments += [(c, "review_comment") for c in _list(obj, "review_comments")]
    comments += [(c, "review") for c in _list(obj, "reviews")]
    for c, kind in comments:
        _check_comment(c, kind)
    return Piece(repo, number, obj, obj, comments)


# --------------------------------------------------------------------------- files API
def files_api_diff(files: list[dict]) -> tuple[str, list[str]]:
    """A unified diff in git's layout from ``/pulls/{n}/files`` objects (``filename``,
    ``status``, ``previous_filename``, ``patch`` = the hunks), and the files whose patch the
    API left out although they changed (GitHub omits ``patch`` for large diffs): those make
    the diff incomplete. Files without a patch and without changed lines (binary files,
    pure renames, mode changes) get header lines only, as git prints them without hunks.
    The API gives no file modes or blob ids, so no ``index``/``mode`` lines are invented."""
    out: list[str] = []
    missing: list[str] = []
    for f in files:
        new = f["filename"]
        status = f.get("status") or "modified"
        old = f.get("previous_filename") or new
        lines = [f"diff --git a/{old} b/{new}"]
        if status == "renamed" and old != new:
            lines += [f"rename from {old}", f"rename to {new}"]
        patch = f.get("patch")
        if patch:
            lines.append("--- /dev/null" if status == "added" else f"--- a/{old}")
            lines.append("+++ /dev/null" if status == "removed" else f"+++ b/{new}")
            lines.append(patch.rstrip("\n"))
        else:
            changes = f.get("changes")
            if isinstance(changes, int) and not isinstance(changes, bool) and changes > 0:
                missing.append(new)
        out.append("\n".join(lines) + "\n")
    return "".join(out), missing


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

    def add(self, obj: dict, where: str) -> str | None:
        """Merge one record. Returns None, or the kind of an ignored record (see
        :func:`parse_record`); raises ValueError with a reason when it is unusable."""
        piece = parse_record(obj)
        if isinstance(piece, str):
            return piece
        self.add_piece(piece, where)
        return None

    def add_piece(self, piece: Piece, where: str) -> None:
        th = self._thread(piece.repo, piece.number)
        th.sources.append(where)
        th.is_pr = th.is_pr or piece.is_pr
        if piece.item is not None:
            th.has_item = True
            self._merge_item(th, piece.item, repo_obj=piece.holder)
        elif (stars := _stars_of(piece.holder)) is not None:
            th.stars = max(stars, th.stars or 0)
        for c, kind in piece.comments:
            self._add_comment(th, c, kind)

    def _merge_item(self, th: Thread, item: dict, repo_obj: dict) -> None:
        """Fill the thread from an issue/PR object; earlier non-empty values win, except
        state/merged which the latest record updates (events arrive in time order)."""
        is_pr = "pull_request" in item or "head" in item or "base" in item or "merged" in item
        th.is_pr = th.is_pr or is_pr
        th.title = th.title or (item.get("title") or "")
        th.body = th.body or (item.get("body") or "")
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
        if stars is None and repo_obj is not item:
            stars = _stars_of(item)  # a PR's base.repo.stargazers_count
        if stars is not None:
            th.stars = max(stars, th.stars or 0)
        diff = item.get("diff") or item.get("diff_text") or item.get("patch")
        if isinstance(diff, str) and diff.strip() and not th.diff:
            th.diff = diff
            th.diff_missing = []
            th.is_pr = True
        files = item.get("files")
        if isinstance(files, list) and files and not th.diff:
            th.diff, th.diff_missing = files_api_diff(files)
            changed = item.get("changed_files")  # the PR object's count: the list may be one page only
            if isinstance(changed, int) and not isinstance(changed, bool) and changed > len(files):
                th.diff_missing.append(f"({changed - len(files)} more files not in the files list)")
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
        body = c.get("body") or ""
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


def record_repo(obj: dict) -> str | None:
    """The repository a record belongs to (lowercased), validated exactly as
    ``ThreadBuilder.add`` validates it (raises ValueError with the same reasons); None for a
    well-formed record that belongs to no thread."""
    piece = parse_record(obj)
    return None if isinstance(piece, str) else piece.repo.lower()


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
) -> tuple[Iterator[list[Thread]], list[BadRecord | IgnoredRecord], int]:
    """(groups of threads, malformed and ignored records, records read). Every thread of a repository is in
    one group; threads are in first-seen order within a group, groups in a fixed order (the
    same input always gives the same output). Inputs above ``spill_bytes`` are spilled to
    ``partitions`` temporary files (see ``SPILL_BYTES``); the groups are then produced lazily,
    one partition in memory at a time."""
    import json
    import shutil
    import tempfile
    import zlib

    paths = list(paths)
    bad: list[BadRecord | IgnoredRecord] = []
    counted: dict = {}  # iter_records stores the number of well-formed records here
    if _input_bytes(paths) <= spill_bytes:
        tb = ThreadBuilder()
        for item in iter_records(paths, counted):
            if isinstance(item, BadRecord):
                bad.append(item)
                continue
            path, lineno, obj = item
            try:
                ignored = tb.add(obj, f"{path}:{lineno}")
            except ValueError as exc:
                bad.append(BadRecord(str(path), lineno, str(exc)))
                continue
            if ignored:
                bad.append(IgnoredRecord(str(path), lineno, ignored))
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
                if repo is None:
                    bad.append(IgnoredRecord(str(path), lineno, str(parse_record(obj))))
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


def read_threads(paths: Iterable[str | Path]) -> tuple[list[Thread], list[BadRecord | IgnoredRecord], int]:
    """(threads in first-seen order, malformed and ignored records, records read) from JSONL/JSON files,
    all in memory (small inputs, tests); the adapters use ``iter_thread_groups``."""
    groups, bad, n = iter_thread_groups(paths, spill_bytes=1 << 62)
    return [th for g in groups for th in g], bad, n


# --------------------------------------------------------------------------- rendering
def render_thread(th: Thread, include_diff: bool = True, pseudonymize: bool = True) -> str:
    """The stable text layout of one thread (see docs/SOURCES.md). With ``pseudonymize``
    (default) logins become ``user_N`` (``user_0`` = the author, then commenters in order,
    then anyone else @mentioned) and e-mail addresses ``person_N@example.com``, stable within
    the thread; code (diff hunks, the diff) stays verbatim."""
    who = Pseudonymizer(pseudonymize)
    who.login(th.author)
    for c in th.sorted_comments():
        who.login(c.author)
    kind = "Pull request" if th.is_pr else "Issue"
    lines = [f"Repository: {th.repo}", f"{kind} #{th.number}: {who.text(th.title.strip())}"]
    state = th.state or "unknown"
    if th.is_pr and th.merged:
        state = "merged"
    lines.append(f"State: {state}")
    if th.labels:
        lines.append("Labels: " + ", ".join(th.labels))
    lines.append(f"Author: {who.login(th.author)}")
    parts = ["\n".join(lines), who.text(th.body.strip()) or "(no description)"]
    for c in th.sorted_comments():
        if c.kind == "review_comment":
            head = f"### Review comment by {who.login(c.author)}" + (f" on {c.path}" if c.path else "")
            block = head
            if c.diff_hunk:
                block += "\n```diff\n" + c.diff_hunk.rstrip("\n") + "\n```"
            block += "\n" + who.text(c.body.strip())
        elif c.kind == "review":
            state = f" ({c.review_state.lower()})" if c.review_state else ""
            block = f"### Review by {who.login(c.author)}{state}\n" + who.text(c.body.strip())
        else:
            block = f"### Comment by {who.login(c.author)}\n" + who.text(c.body.strip())
        parts.append(block.rstrip())
    if include_diff and th.diff:
        diff = "### Diff\n" + th.diff.rstrip("\n")
        if th.diff_missing:  # said in the text, not silently left out
            diff += "\n[no patch in the files API for: " + ", ".join(th.diff_missing) + "]"
        parts.append(diff)
    return strip_markers("\n\n".join(parts) + "\n")


def reject_items(rejects: Iterable[BadRecord | IgnoredRecord], source: str, stats: dict | None = None) -> Iterator[BadRecord | Drop]:
    """Malformed records as they are; ignored records (GH Archive events and webhook payloads
    of other kinds) as ``Drop("ignored_event")`` with a stub (so ``--keep-rejected`` lists
    them). ``stats["ignored_events"]`` counts them by kind."""
    counts: dict[str, int] = {}
    for r in rejects:
        if isinstance(r, IgnoredRecord):
            kind = r.kind if r.kind in counts or len(counts) < 100 else "(other types)"  # the names come from the data
            counts[kind] = counts.get(kind, 0) + 1
            yield Drop("ignored_event", Document(
                id=make_id(source, "ignored", r.path, r.line), text="", source=source, kind="other",
                meta={"file": r.path, "line": r.line, "event_type": r.kind}))
        else:
            yield r
    if stats is not None:
        stats["ignored_events"] = dict(sorted(counts.items()))


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
    pseudonymize: bool = True  # logins, @mentions and e-mail addresses → stable pseudonyms


def thread_meta(th: Thread) -> dict[str, Any]:
    return {
        "repo": th.repo, "number": th.number, "is_pr": th.is_pr, "state": th.state, "merged": th.merged,
        "stars": th.stars, "created_at": th.created_at, "n_comments": len(th.comments), "has_diff": bool(th.diff),
        "diff_incomplete": bool(th.diff_missing), "records": th.sources[:50],
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
    yield from reject_items(bad, cfg.source, stats)
    swe = SwebenchIndex.from_jsonl(cfg.swebench, cfg.ngram_min_overlap) if cfg.swebench else None
    for th in (t for g in groups for t in g):
        n_threads += 1
        text = render_thread(th, cfg.include_diff, cfg.pseudonymize)
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
        elif not th.has_item:
            # only standalone comments / reviews, never the issue or PR they belong to: the
            # thread's opening post is missing, so it is not rendered as if it had none
            yield Drop("no_thread_object", doc)
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
