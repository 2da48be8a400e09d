"""Rebuild ``samples/github/threads.jsonl`` and ``samples/swebench_tasks.jsonl``.

The bundled GitHub sample is synthetic in its *threads* but real in its *code*: each pull
request "fixes" a small bug in a real CPython 3.11 standard-library file from this machine
(``/usr/lib/python3.11``). We take the real file as the fixed version, inject a one-line bug
(``<=`` → ``<``, ``is not None`` → ``is None``, ``and`` → ``or``, …) to make the "before"
version, and build the diff with ``difflib`` in git's format. Issues, comments, review comments
and a few GH Archive events are written in the GitHub REST API / GH Archive shapes that
``stepcrawl ingest issues`` reads. Deterministic: ``python samples/github/build_threads.py``.
"""

from __future__ import annotations

import difflib
import json
import random
import re
from pathlib import Path

STDLIB = Path("/usr/lib/python3.11")
HERE = Path(__file__).resolve().parent
REPO = "python-lite/stdlib"  # an invented repository name: the sample is not CPython's history
STARS = 1450

FILES = [
    "bisect.py", "colorsys.py", "fnmatch.py", "netrc.py", "quopri.py", "glob.py", "tabnanny.py", "string.py",
    "json/decoder.py", "shlex.py", "posixpath.py", "email/utils.py", "textwrap.py", "base64.py", "gettext.py",
    "heapq.py", "calendar.py", "fractions.py",
]
# (pattern in the real line, replacement making the buggy line, symptom sentence)
MUTATIONS = [
    (r" <= ", " < ", "gives a wrong result exactly at the boundary value (off by one)"),
    (r" >= ", " > ", "misses the case where the value equals the limit"),
    (r" is not None", " is None", "ignores the argument when it is given and crashes when it is omitted"),
    (r" and ", " or ", "accepts inputs it should reject because a condition is too loose"),
    (r"\.rstrip\(\)", ".strip()", "strips leading whitespace that must be preserved"),
    (r" - 1\b", "", "returns an index that is one too large"),
    (r" \+ 1\b", "", "returns a value that is one too small"),
]
SMALL_FILE = 9_000  # files up to this size travel with the PR as "files_before"
USERS = ["mkowalski", "ayoung-dev", "tnakamura", "priya-s", "jdoe42", "lheinz", "osei-k", "fbrunner"]


def find_mutation(text: str, rng: random.Random):
    lines = text.split("\n")
    candidates = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith(("#", "\"", "'")) or line.startswith(("def ", "class ")):
            continue
        for pat, repl, symptom in MUTATIONS:
            if re.search(pat, line) and line.startswith("    "):
                func = next((lines[j].split("def ", 1)[1].split("(")[0] for j in range(i, -1, -1) if lines[j].lstrip().startswith("def ")), None)
                if func and not func.startswith("_"):
                    candidates.append((i, pat, repl, symptom, func))
    return rng.choice(candidates) if candidates else None


def git_diff(path: str, before: str, after: str) -> str:
    body = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}", n=3))
    return f"diff --git a/{path} b/{path}\nindex 3f2a1c4..9b8e7d2 100644\n" + body


def tree_of(rel: str) -> list[str]:
    """A plausible repository tree: Lib/ files of the same package plus a few top-level files."""
    pkg = STDLIB / Path(rel).parent
    near = sorted(p.relative_to(STDLIB).as_posix() for p in pkg.glob("*.py"))[:40]
    top = sorted(p.name for p in STDLIB.glob("*.py"))[:30]
    paths = {f"Lib/{p}" for p in near} | {f"Lib/{p}" for p in top}
    paths |= {"README.rst", "LICENSE", "Makefile", "Lib/test/__init__.py", f"Lib/test/test_{Path(rel).stem}.py"}
    return sorted(paths)


def ts(day: int, hour: int) -> str:
    return f"2024-03-{day:02d}T{hour:02d}:{(day * 7 + hour) % 60:02d}:00Z"


def user(login: str, bot: bool = False) -> dict:
    return {"login": login, "type": "Bot" if bot else "User"}


def repo_obj(name: str = REPO, stars: int = STARS) -> dict:
    return {"full_name": name, "stargazers_count": stars}


def build(seed: int = 7) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    records: list[dict] = []
    tasks: list[dict] = []
    number = 100
    for k, rel in enumerate(FILES):
        after = (STDLIB / rel).read_text("utf-8")
        mut = find_mutation(after, rng)
        if mut is None:
            continue
        i, pat, repl, symptom, func = mut
        lines = after.split("\n")
        lines[i] = re.sub(pat, repl, lines[i], count=1)
        before = "\n".join(lines)
        path = f"Lib/{rel}"
        module = rel[:-3].replace("/", ".")
        diff = git_diff(path, before, after)
        reporter, author, reviewer = rng.sample(USERS, 3)
        issue_no, pr_no = number, number + 1
        number += 2 + rng.randrange(5)
        day = 1 + k
        top = module.split(".")[0]
        context = rng.choice([
            "I hit this while upgrading a service that calls `{func}` on user input ({module}).",
            "Our CI started failing after we switched from a local helper to `{func}` ({module}).",
            "While porting code to `{module}` I noticed that `{func}` disagrees with the docs.",
            "A colleague reported that `{func}` behaves differently on 3.11 than in `{module}` docs.",
        ]).format(func=func, module=module)
        issue_body = (
            f"`{module}.{func}()` {symptom} (`{func}`).\n\n{context}\n\n"
            f"Steps to reproduce:\n\n```python\nimport {top}\n{module}.{func}(...)  # an input at the edge of its range\n```\n\n"
            f"Expected: what the `{module}` docs say. Actual: `{func}` {symptom}.\n\n"
            f"Environment (`{func}`): Python 3.11, {rng.choice(['Linux x86_64', 'macOS 14 arm64', 'Windows 11', 'Alpine in Docker'])}."
        )
        issue = {
            "url": f"https://api.github.com/repos/{REPO}/issues/{issue_no}",
            "repository_url": f"https://api.github.com/repos/{REPO}",
            "html_url": f"https://github.com/{REPO}/issues/{issue_no}",
            "number": issue_no, "title": f"{module}.{func}() {symptom.split(' (')[0]}", "body": issue_body,
            "user": user(reporter), "state": "closed", "labels": [{"name": "bug"}, {"name": f"module:{module.split('.')[0]}"}],
            "created_at": ts(day, 9), "repository": repo_obj(),
            "comments_data": [
                {"id": 5000 + k * 10, "user": user(author), "created_at": ts(day, 11),
                 "body": f"Confirmed on main. The condition in `{func}` looks wrong; I'll send a fix with a test."},
                {"id": 5001 + k * 10, "user": user("stale-bot[bot]", bot=True), "created_at": ts(day, 12),
                 "body": "This issue has been automatically marked as stale."},
            ],
        }
        if k % 5 == 3:
            issue.pop("body")  # missing fields must be tolerated
            issue.pop("labels")
        hunk = diff.split("\n@@", 1)[1].split("\n@@")[0]
        pr = {
            "url": f"https://api.github.com/repos/{REPO}/pulls/{pr_no}",
            "html_url": f"https://github.com/{REPO}/pull/{pr_no}",
            "number": pr_no, "title": f"Fix {func}() in {module}", "state": "closed", "merged": True,
            "body": f"Fixes #{issue_no}.\n\nThe comparison in `{func}` was inverted/loosened in a refactor; "
                    f"this restores the documented behaviour.",
            "user": user(author), "created_at": ts(day, 14), "merged_at": ts(day + 1, 10),
            "head": {"ref": f"fix-{func}", "sha": f"{k:02d}" + "a" * 38},
            "base": {"ref": "main", "sha": f"{k:02d}" + "b" * 38, "repo": repo_obj()},
            "comments_data": [{"id": 6000 + k, "user": user(reviewer), "created_at": ts(day, 16),
                               "body": f"Thanks @{author}! Could you add a NEWS entry?"}],
            "review_comments": [{"id": 7000 + k, "user": user(reviewer), "path": path, "created_at": ts(day, 15),
                                 "diff_hunk": "@@" + hunk[:400], "body": "Good catch. Is there a test covering the boundary?"}],
            "reviews": [{"id": 8000 + k, "user": user(reviewer), "state": "APPROVED", "body": "LGTM.", "submitted_at": ts(day, 17)}],
            "diff": diff,
            "repo_tree": tree_of(rel),
        }
        if len(before) <= SMALL_FILE:
            pr["files_before"] = {path: before}
        if k % 6 == 5:
            # this pair arrives as GH Archive events instead of REST objects
            ev_repo = {"id": 4242, "name": REPO, "url": f"https://api.github.com/repos/{REPO}"}
            issue_min = {k2: issue[k2] for k2 in ("number", "title", "body", "user", "state", "created_at", "labels") if k2 in issue}
            records.append({"type": "IssuesEvent", "repo": ev_repo, "created_at": ts(day, 9),
                            "payload": {"action": "opened", "issue": {**issue_min, "state": "open"}}})
            records.append({"type": "IssueCommentEvent", "repo": ev_repo, "created_at": ts(day, 11),
                            "payload": {"action": "created", "issue": issue_min, "comment": issue["comments_data"][0]}})
            pr_min = {k2: pr[k2] for k2 in ("number", "title", "body", "user", "state", "created_at", "merged", "base", "head")}
            records.append({"type": "PullRequestEvent", "repo": ev_repo, "created_at": ts(day + 1, 10),
                            "payload": {"action": "closed", "number": pr_no, "pull_request": {**pr_min, "diff": diff, "repo_tree": pr["repo_tree"]}}})
            records.append({"type": "PullRequestReviewCommentEvent", "repo": ev_repo, "created_at": ts(day, 15),
                            "payload": {"action": "created", "pull_request": pr_min, "comment": pr["review_comments"][0]}})
        else:
            records.append(issue)
            records.append(pr)
        if k == 2:
            tasks.append({"repo": REPO, "instance_id": f"{REPO.replace('/', '__')}-{pr_no}", "base_commit": pr["base"]["sha"],
                          "problem_statement": issue_body, "version": "3.11"})
        if k == 4:
            # same problem text under another number: caught by the 13-gram check, not the id
            tasks.append({"repo": REPO, "instance_id": f"{REPO.replace('/', '__')}-99999", "base_commit": "0" * 40,
                          "problem_statement": issue_body, "version": "3.11"})
    # a low-star repository's issue: dropped by --min-stars 10
    records.append({"number": 3, "title": "Typo in README", "body": "There is a typo in the install section: 'isntall'.",
                    "user": user("newcomer"), "state": "open", "created_at": ts(20, 8),
                    "repository": repo_obj("someone/tiny-project", 3)})
    # an issue with only a title and a repo string (missing fields are fine)
    records.append({"repo": "python-lite/stdlib", "number": 999, "title": "Document the behaviour of glob() with hidden files"})
    tasks.append({"repo": "django/django", "instance_id": "django__django-11099",
                  "problem_statement": "UsernameValidator allows trailing newline in usernames."})
    return records, tasks


def main() -> None:
    records, tasks = build()
    with open(HERE / "threads.jsonl", "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        # one malformed line, so the demo shows file:line error reporting
        fh.write('{"number": 12, "title": "truncated record\n')
    with open(HERE.parent / "swebench_tasks.jsonl", "w", encoding="utf-8") as fh:
        for t in tasks:
            fh.write(json.dumps(t) + "\n")
    print(f"{len(records)} records, {len(tasks)} tasks")


if __name__ == "__main__":
    main()
