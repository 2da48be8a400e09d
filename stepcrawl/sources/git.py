"""A local repository's history → one Document per commit (message, author date, diff).

We call the real ``git`` binary once (``git log -p --stat -M --diff-merges=first-parent``) and
stream its output, rather than one ``git show`` per commit (a process per commit is ~100x
slower on large histories) or a Python git reimplementation (pygit2/dulwich diff rename
detection and output differ from git's).

Documented rules (see docs/SOURCES.md):
* **Merges** are diffed against their *first parent* (what the merge brought into the branch);
  ``meta.merge`` is true and the text says so.
* **Renames** are detected (``-M``, git's 50% similarity) and shown both in the ``--stat``
  block (``old => new``) and the diff headers (``rename from`` / ``rename to``).
* **Binary** files: git prints one ``Binary files … differ`` line; a section that is not valid
  UTF-8 is treated as binary too (header kept, body replaced by a note).
* **Vendored / generated** paths (vendored dirs, lock files, minified assets, source maps):
  header kept, body replaced by a note.
* **Large** diffs: a file's diff is cut after ``max_file_diff_lines`` lines; once a commit's
  diff passes ``max_diff_chars`` the remaining files keep only their header lines.
Author e-mails are not put into documents (PII); the author name is kept in ``meta`` only.
"""

from __future__ import annotations

import logging
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from stepcrawl.document import Document
from stepcrawl.io import BadRecord
from stepcrawl.sources.code import VENDORED_DIRS, repo_name
from stepcrawl.sources.common import make_id
from stepcrawl.steps import Drop

log = logging.getLogger(__name__)

# Lock files and build artefacts: their diffs are machine-written and huge.
GENERATED_NAMES = frozenset({
    "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "Cargo.lock", "poetry.lock", "Pipfile.lock",
    "composer.lock", "Gemfile.lock", "go.sum", "uv.lock", "pdm.lock", "bun.lockb",
})
_GENERATED_SUFFIXES = (".min.js", ".min.css", ".js.map", ".css.map", ".pb.go", "_pb2.py")


@dataclass
class GitConfig:
    source: str = "commits"
    repo: str | None = None  # default: origin remote, else folder name
    rev: str = "HEAD"  # what to walk (any `git log` revision range, e.g. "--all" or "v1.0..main")
    max_commits: int = 0  # 0 = all
    max_file_diff_lines: int = 400
    max_diff_chars: int = 100_000
    skip_merges: bool = False  # True: drop merge commits (reason "merge") instead of first-parent diff


def is_vendored_path(path: str) -> bool:
    parts = path.split("/")
    name = parts[-1]
    return (
        any(p in VENDORED_DIRS for p in parts[:-1])
        or name in GENERATED_NAMES
        or name.endswith(_GENERATED_SUFFIXES)
    )


def _split_sections(patch: bytes) -> tuple[bytes, list[bytes]]:
    """(stat block, [one bytes chunk per ``diff --git`` file section])."""
    pieces = re.split(rb"(?m)^(?=diff --git )", patch)
    return pieces[0], [p for p in pieces[1:] if p]


def _file_info(section: str) -> dict:
    """Path, status, counts of one file section (unidiff parses git's extended headers)."""
    try:
        pf = PatchSet(section)[0]
    except (UnidiffParseError, IndexError):
        first = section.split("\n", 1)[0]
        m = re.match(r"diff --git a/(.*) b/(.*)$", first)
        path = m.group(2) if m else first
        return {"path": path, "status": "M", "added": 0, "removed": 0, "binary": False}
    status = "A" if pf.is_added_file else "D" if pf.is_removed_file else "R" if pf.is_rename else "M"
    info = {"path": pf.path, "status": status, "added": pf.added, "removed": pf.removed, "binary": pf.is_binary_file}
    if pf.is_rename:
        info["old_path"] = pf.source_file[2:] if pf.source_file.startswith("a/") else pf.source_file
    return info


def _header_lines(section: str) -> str:
    """The git header of a file section: everything before the first hunk / binary line."""
    out = []
    for line in section.split("\n"):
        if line.startswith(("@@", "Binary files", "GIT binary patch")):
            break
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def render_diff(patch: bytes, cfg: GitConfig) -> tuple[str, list[dict], bool]:
    """(diff text after the trimming rules, per-file info, trimmed?) for one commit."""
    _, sections = _split_sections(patch)
    out: list[str] = []
    files: list[dict] = []
    total = 0
    trimmed_any = False
    for raw in sections:
        try:
            section = raw.decode("utf-8")
            decodable = True
        except UnicodeDecodeError:
            section = raw.decode("utf-8", errors="replace")
            decodable = False
        info = _file_info(section)
        if not decodable:
            info["binary"] = True
        note = None
        if not decodable:
            note = "[binary or non-UTF-8 diff omitted]"
        elif is_vendored_path(info["path"]):
            note = "[diff of vendored/generated file omitted]"
        elif total > cfg.max_diff_chars:
            note = "[diff omitted: commit diff size limit reached]"
        if note is not None:
            text = _header_lines(section) + note + "\n"
            info["trimmed"] = True
            trimmed_any = True
        else:
            lines = section.split("\n")
            if section.endswith("\n"):
                lines = lines[:-1]
            if len(lines) > cfg.max_file_diff_lines:
                extra = len(lines) - cfg.max_file_diff_lines
                lines = lines[: cfg.max_file_diff_lines] + [f"[... {extra} more lines of this file's diff trimmed ...]"]
                info["trimmed"] = True
                trimmed_any = True
            text = "\n".join(lines) + "\n"
        total += len(text)
        out.append(text)
        files.append(info)
    return "".join(out), files, trimmed_any


def _git_log(repo: Path, cfg: GitConfig, mark: str) -> subprocess.Popen:
    fmt = f"%n{mark}%H%x1f%P%x1f%aI%x1f%an%x1f%cI%n%B{mark}END"
    cmd = [
        "git", "-C", str(repo), "-c", "core.quotepath=off", "log", cfg.rev,
        "-p", "--stat=120,100", "-M", "--no-color", "--no-ext-diff", "--no-textconv",
        "--diff-merges=first-parent", f"--format={fmt}",
    ]
    if cfg.max_commits:
        cmd.insert(6, f"--max-count={cfg.max_commits}")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _records(stream, mark: bytes) -> Iterator[bytes]:
    """Split git's output stream on our per-run nonce marker without reading it all."""
    buf = b""
    for chunk in iter(lambda: stream.read(1 << 16), b""):
        buf += chunk
        while True:
            i = buf.find(mark, 1)
            # the marker must start a line, and must not be the END marker of the same record
            while i != -1 and (buf[i - 1 : i] != b"\n" or buf[i + len(mark) : i + len(mark) + 3] == b"END"):
                i = buf.find(mark, i + 1)
            if i == -1 or i + len(mark) + 3 > len(buf):
                break  # no complete record yet (or cannot yet tell a start from an END marker)
            rec, buf = buf[:i], buf[i:]
            if rec.strip():
                yield rec
    if buf.strip():
        yield buf


def commit_document(rec: bytes, mark: bytes, repo: str, cfg: GitConfig) -> Document | Drop | BadRecord:
    """Parse one ``git log`` record (header, message, stat, patch) into a Document."""
    start = rec.find(mark)
    end = rec.find(mark + b"END")
    if start == -1 or end == -1:
        return BadRecord(f"git log of {repo}", None, "unparseable git log record")
    header, _, message_b = rec[start + len(mark) : end].partition(b"\n")
    fields = header.decode("utf-8", "replace").split("\x1f")
    if len(fields) != 5:
        return BadRecord(f"git log of {repo}", None, f"unexpected header {header[:80]!r}")
    sha, parents_s, author_date, author, commit_date = fields
    parents = parents_s.split()
    message = message_b.decode("utf-8", "replace").strip("\n")
    rest = rec[end + len(mark) + 3 :].lstrip(b"\n")
    if rest.startswith(b"---\n"):
        rest = rest[4:]
    rest = rest.rstrip(b"\n") + b"\n"  # the blank line git puts before the next record
    stat_b, _ = _split_sections(rest)
    stat = stat_b.decode("utf-8", "replace").strip("\n")
    diff, files, trimmed = render_diff(rest, cfg)
    merge = len(parents) > 1
    meta = {
        "repo": repo, "commit": sha, "parents": parents, "author_date": author_date, "commit_date": commit_date,
        "author": author, "merge": merge, "files": files, "trimmed": trimmed,
    }
    head = [f"commit {sha}", f"Date: {author_date}"]
    if merge:
        head.append(f"Merge: {' '.join(p[:12] for p in parents)} (diff against first parent)")
    text = "\n".join(head) + "\n\n" + message + "\n"
    if stat:
        text += "\n" + stat + "\n"
    if diff:
        text += "\n" + diff
    doc = Document(id=make_id(cfg.source, repo, sha), text=text, source=cfg.source, kind="commit", meta=meta, fetched_at=commit_date)
    if merge and cfg.skip_merges:
        return Drop("merge", doc)
    if not message.strip() and not diff:
        return Drop("empty", doc)
    return doc


def iter_commits(repo_path: str | Path, cfg: GitConfig, stats: dict | None = None) -> Iterator[Document | Drop | BadRecord]:
    """One item per commit reachable from ``cfg.rev`` (newest first, as ``git log``)."""
    root = Path(repo_path)
    check = subprocess.run(["git", "-C", str(root), "rev-parse", "--git-dir"], capture_output=True, text=True)
    if check.returncode != 0:
        raise ValueError(f"not a git repository: {root} ({check.stderr.strip()})")
    repo = cfg.repo or repo_name(root)
    mark = f"@@stepcrawl-{uuid.uuid4().hex}@@"
    proc = _git_log(root, cfg, mark)
    n = 0
    try:
        assert proc.stdout is not None
        for rec in _records(proc.stdout, mark.encode()):
            n += 1
            yield commit_document(rec, mark.encode(), repo, cfg)
    finally:
        if proc.stdout:
            proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        rc = proc.wait()
    if rc != 0 and not (rc < 0 or "SIGPIPE" in err):
        raise RuntimeError(f"git log failed in {root} (exit {rc}): {err.strip()}")
    if stats is not None:
        stats.update({"repo": repo, "commits": n, "rev": cfg.rev, "git": _git_version()})


def _git_version() -> str:
    try:
        return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:  # pragma: no cover
        return "unknown"


__all__ = ["GitConfig", "iter_commits", "commit_document", "render_diff", "is_vendored_path"]
