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
* **Vendored** paths (the same rule as ``ingest code``: node_modules, vendor, pip's
  ``_vendor``, ``requests/packages/urllib3``…): their file sections are dropped from the diff
  (one note line says how many), a commit that touches only vendored files is dropped
  (reason ``vendored``); both are counted in the manifest (``extra.vendored``).
* **Generated** paths (lock files, minified assets, source maps, protobuf output): header
  kept, body replaced by a note.
* **Revisions** are validated (``git rev-parse --verify``) and passed after
  ``--end-of-options``, so a ``--rev`` value can never act as a git option.
* **Pseudonymisation** (default on): e-mail addresses, @mentions and the people in trailers
  (``Signed-off-by``, ``Co-authored-by``, …) of the message get stable pseudonyms.
* **Large** diffs: a file's diff is cut after ``max_file_diff_lines`` lines; once a commit's
  diff passes ``max_diff_chars`` the remaining files keep only their header lines.
Author e-mails are not put into documents (PII); the author name is kept in ``meta`` only.
The diff itself is code and stays verbatim.
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
from stepcrawl.sources.code import is_vendored, repo_name
from stepcrawl.sources.common import Pseudonymizer, make_id
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
    pseudonymize: bool = True  # e-mails, @mentions and trailer identities in messages → pseudonyms


def is_generated_path(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name in GENERATED_NAMES or name.endswith(_GENERATED_SUFFIXES)


def is_vendored_path(path: str) -> bool:
    """Vendored (third-party) or generated: either way, not the project's own change."""
    return is_vendored(path) or is_generated_path(path)


# Revision options ``--rev`` may name; any other value starting with "-" is refused.
REV_OPTIONS = frozenset({"--all", "--branches", "--tags", "--remotes"})


def rev_args(repo: Path, rev: str) -> list[str]:
    """The argv tail that makes ``git log`` walk ``rev`` safely: an allowed option as is, or
    ``--end-of-options REV`` after checking every endpoint of a range (``A..B``, ``A...B``,
    ``^A``) with ``git rev-parse --verify``. Raises ValueError for anything else, so a value
    such as ``--output=FILE`` never reaches git as an option."""
    if rev in REV_OPTIONS:
        return [rev]
    if not rev or rev.startswith("-"):
        raise ValueError(f"--rev {rev!r} is not a revision (allowed options: {', '.join(sorted(REV_OPTIONS))})")
    for end in (e.lstrip("^") for e in re.split(r"\.\.\.?", rev)):
        if not end:
            continue  # "A.." = "A..HEAD"
        if end.startswith("-"):
            raise ValueError(f"--rev {rev!r}: {end!r} is not a revision")
        res = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "--end-of-options", end + "^{commit}"],
            capture_output=True, text=True,
        )
        if res.returncode != 0:
            raise ValueError(f"--rev {rev!r}: unknown revision {end!r} in {repo} (or the repository has no commits)")
    return ["--end-of-options", rev]


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
        if is_vendored(info["path"]) or is_vendored(info.get("old_path") or info["path"]):
            info["vendored"] = True
            info["omitted_chars"] = len(section)
            files.append(info)
            continue  # a vendored section is dropped whole (counted, noted once below)
        if not decodable:
            note = "[binary or non-UTF-8 diff omitted]"
        elif is_generated_path(info["path"]):
            note = "[diff of generated file omitted]"
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
    n_vendored = sum(1 for f in files if f.get("vendored"))
    if n_vendored:
        out.append(f"[diffs of {n_vendored} vendored file{'s' if n_vendored > 1 else ''} omitted]\n")
    return "".join(out), files, trimmed_any


def _git_log(repo: Path, cfg: GitConfig, mark: str) -> subprocess.Popen:
    fmt = f"%n{mark}%H%x1f%P%x1f%aI%x1f%an%x1f%cI%n%B{mark}END"
    cmd = [
        # the repository's own config must not run programs: no fsmonitor hook, no signature
        # verification (gpg.program), no external diff or textconv (below)
        "git", "-C", str(repo), "-c", "core.quotepath=off", "-c", "core.fsmonitor=false", "-c", "log.showSignature=false", "log",
        "-p", "--stat=120,100", "-M", "--no-color", "--no-ext-diff", "--no-textconv",
        "--diff-merges=first-parent", f"--format={fmt}",
    ]
    if cfg.max_commits:
        cmd.append(f"--max-count={int(cfg.max_commits)}")
    cmd += rev_args(repo, cfg.rev) + ["--"]  # "--": nothing after the revision is a path or option
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
    message = Pseudonymizer(cfg.pseudonymize).trailers(message_b.decode("utf-8", "replace").strip("\n"))
    rest = rec[end + len(mark) + 3 :].lstrip(b"\n")
    if rest.startswith(b"---\n"):
        rest = rest[4:]
    rest = rest.rstrip(b"\n") + b"\n"  # the blank line git puts before the next record
    stat_b, _ = _split_sections(rest)
    stat = stat_b.decode("utf-8", "replace").strip("\n")
    diff, files, trimmed = render_diff(rest, cfg)
    merge = len(parents) > 1
    n_vendored = sum(1 for f in files if f.get("vendored"))
    meta = {
        "repo": repo, "commit": sha, "parents": parents, "author_date": author_date, "commit_date": commit_date,
        "author": author, "merge": merge, "files": files, "trimmed": trimmed, "vendored_files": n_vendored,
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
    if files and n_vendored == len(files):
        return Drop("vendored", doc)  # only third-party code changed (e.g. "Update urllib3 to 1.26")
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
    vendored = {"sections": 0, "chars": 0, "commits_dropped": 0}
    try:
        assert proc.stdout is not None
        for rec in _records(proc.stdout, mark.encode()):
            n += 1
            item = commit_document(rec, mark.encode(), repo, cfg)
            doc = item.doc if isinstance(item, Drop) else item
            if isinstance(doc, Document):
                for f in doc.meta.get("files") or ():
                    if f.get("vendored"):
                        vendored["sections"] += 1
                        vendored["chars"] += f.get("omitted_chars", 0)
                vendored["commits_dropped"] += isinstance(item, Drop) and item.reason == "vendored"
            yield item
    finally:
        if proc.stdout:
            proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        rc = proc.wait()
    if rc != 0 and not (rc < 0 or "SIGPIPE" in err):
        raise RuntimeError(f"git log failed in {root} (exit {rc}): {err.strip()}")
    if stats is not None:
        stats.update({"repo": repo, "commits": n, "rev": cfg.rev, "git": _git_version(), "vendored": vendored})


def _git_version() -> str:
    try:
        return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:  # pragma: no cover
        return "unknown"


__all__ = ["GitConfig", "iter_commits", "commit_document", "render_diff", "is_vendored_path", "rev_args"]
