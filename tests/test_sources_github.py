"""GitHub threads (REST shapes + GH Archive events), SWE-bench decontamination and PR-Dialogue
examples with per-policy loss masks, on real code (a stdlib module) and messy records."""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stepcrawl.cli import main as cli_main
from stepcrawl.document import Span
from stepcrawl.io import BadRecord
from stepcrawl.io import read_documents
from stepcrawl.manifest import StageManifest
from stepcrawl.sources.common import MARKERS, SpanText, check_spans
from stepcrawl.sources.issues import IssuesConfig, iter_issue_documents, read_threads
from stepcrawl.sources.pr_dialogue import PRDialogueConfig, iter_pr_dialogue, parse_diff, search_replace
from stepcrawl.sources.swebench import SwebenchIndex, parse_instance_id
from stepcrawl.steps import Drop

REPO = "acme/globby"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def git_diff(path: str, before: str, after: str) -> str:
    body = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"))
    return f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n" + body


def new_file_diff(path: str, content: str) -> str:
    body = "".join(difflib.unified_diff([], content.splitlines(True), "/dev/null", f"b/{path}"))
    return f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..3333333\n" + body


@pytest.fixture(scope="module")
def real_change():
    """A two-hunk bug fix in the real fnmatch.py plus a new test file."""
    after = Path(fnmatch.__file__).read_text("utf-8")
    before = after.replace("def filter(names, pat):", "def filter(names, pattern):", 1)
    before = before.replace("    return re.escape(pat)" if "    return re.escape(pat)" in before else "import re", "import re  # noqa", 1)
    assert before != after
    test_py = "import fnmatch\n\n\ndef test_filter():\n    assert fnmatch.filter(['a.py'], '*.py') == ['a.py']\n"
    diff = git_diff("Lib/fnmatch.py", before, after) + new_file_diff("Lib/test/test_fnmatch_new.py", test_py)
    return before, after, diff


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def rest_records(diff: str, before: str) -> list:
    issue_body = ("fnmatch.filter() has a misnamed parameter, so calling filter(names, pat=...) with a keyword "
                  "argument raises TypeError although the documentation spells the parameter pat everywhere.")
    return [
        {"number": 7, "title": "filter() keyword argument is broken", "body": issue_body,
         "user": {"login": "alice"}, "state": "open", "labels": [{"name": "bug"}],
         "repository": {"full_name": REPO, "stargazers_count": 120}, "created_at": "2024-05-01T10:00:00Z",
         "comments": [
             {"id": 1, "user": {"login": "bob"}, "body": "Confirmed, @alice. Patch incoming.", "created_at": "2024-05-01T12:00:00Z"},
             {"id": 2, "user": {"login": "ci[bot]", "type": "Bot"}, "body": "stale", "created_at": "2024-05-02T12:00:00Z"},
         ]},
        {"number": 8, "title": "Fix filter() parameter name", "body": "Fixes #7.", "user": {"login": "bob"},
         "state": "closed", "merged": True, "created_at": "2024-05-02T09:00:00Z",
         "base": {"sha": "b" * 40, "repo": {"full_name": REPO, "stargazers_count": 120}},
         "head": {"sha": "a" * 40},
         "review_comments": [{"id": 10, "user": {"login": "carol"}, "path": "Lib/fnmatch.py",
                              "diff_hunk": "@@ -1,3 +1,3 @@\n-x\n+y", "body": "nice", "created_at": "2024-05-02T10:00:00Z"}],
         "diff": diff, "files_before": {"Lib/fnmatch.py": before},
         "repo_tree": {"tree": [{"path": "Lib/fnmatch.py", "type": "blob"}, {"path": "Lib", "type": "tree"},
                                {"path": "Lib/glob.py", "type": "blob"}, {"path": "README.rst", "type": "blob"}]}},
    ]


# --------------------------------------------------------------------------- issues
def test_threads_from_rest_and_gharchive_with_malformed_lines(tmp_path, real_change):
    before, _, diff = real_change
    events = [
        {"type": "IssuesEvent", "repo": {"name": "acme/other"}, "payload": {"action": "opened", "issue": {
            "number": 3, "title": "Crash on empty input", "body": "Steps: run it.", "user": {"login": "dan"}, "state": "open",
            "created_at": "2024-06-01T00:00:00Z"}}},
        {"type": "IssueCommentEvent", "repo": {"name": "acme/other"}, "payload": {"action": "created",
            "issue": {"number": 3, "state": "closed"},
            "comment": {"id": 99, "user": {"login": "erin"}, "body": "Fixed in main.", "created_at": "2024-06-02T00:00:00Z"}}},
        {"type": "PullRequestReviewCommentEvent", "repo": {"name": "acme/other"}, "payload": {"action": "created",
            "pull_request": {"number": 4, "title": "Handle empty input"},
            "comment": {"id": 100, "user": {"login": "erin"}, "path": "x.py", "diff_hunk": "@@ -1 +1 @@\n-a\n+b", "body": "ok"}}},
        {"type": "PullRequestEvent", "repo": {"name": "acme/other"}, "payload": {"action": "closed", "number": 4,
            "pull_request": {"number": 4, "merged": True, "state": "closed", "body": "Fixes #3"}}},
    ]
    rows = rest_records(diff, before) + events + [
        "{not json",
        {"title": "no number", "repository": {"full_name": REPO}},
        {"type": "WatchEvent", "repo": {"name": REPO}, "payload": {}},
        [1, 2],
        {"number": 5, "title": "tiny", "repository": {"full_name": "x/tiny", "stargazers_count": 2}},
        {"number": 6, "repo": REPO, "title": "Only a title"},  # most fields missing: kept
        {"number": 11, "repo": REPO},  # nothing but a repo and a number: dropped as empty
    ]
    f = write_jsonl(tmp_path / "threads.jsonl", rows)
    out = tmp_path / "issues"
    # exit 1: done, but malformed input was dropped (stepcrawl.errors)
    assert cli_main(["ingest", "issues", str(f), "--out", str(out), "--no-progress", "--keep-rejected"]) == 1
    m = StageManifest.read(out)
    # a WatchEvent is well-formed but no thread: counted under its own reason, not malformed
    assert m.accounting.drops == {"malformed": 3, "ignored_event": 1, "low_stars": 1, "empty": 1}
    assert m.extra["ignored_events"] == {"WatchEvent": 1}
    errs = m.extra["errors"]
    assert [e.split(":")[1] for e in errs] == ["7", "8", "10"]  # file:line of each bad record
    assert all(e.startswith(str(f)) for e in errs)
    assert "no integer 'number'" in errs[1]
    docs = {(d.meta["repo"], d.meta["number"]): d for d in read_documents(out)}
    assert set(docs) == {(REPO, 7), (REPO, 8), ("acme/other", 3), ("acme/other", 4), (REPO, 6)}
    issue = docs[(REPO, 7)]
    assert issue.kind == "issue" and issue.source == "issues" and issue.lang == "en" and issue.lang_score > 0.5
    assert "alice" not in issue.text and "bob" not in issue.text  # pseudonymised
    assert "Author: user_0" in issue.text and "Confirmed, @user_0." in issue.text and "stale" not in issue.text
    pr = docs[(REPO, 8)]
    assert pr.kind == "pull_request" and "State: merged" in pr.text
    assert "### Review comment by user_1 on Lib/fnmatch.py" in pr.text and "### Diff\ndiff --git a/Lib/fnmatch.py" in pr.text
    assert pr.meta["stars"] == 120 and pr.url == f"https://github.com/{REPO}/pull/8"
    ev = docs[("acme/other", 3)]  # two events merged into one thread, state updated
    assert ev.meta["n_comments"] == 1 and "State: closed" in ev.text and "Fixed in main." in ev.text
    assert len(ev.meta["records"]) == 2
    pr4 = docs[("acme/other", 4)]
    assert pr4.kind == "pull_request" and "Handle empty input" in pr4.text and "Fixes #3" in pr4.text
    assert docs[(REPO, 6)].meta["stars"] is None  # unknown stars: not filtered
    assert not any(mk in d.text for d in docs.values() for mk in MARKERS)


def test_comments_merge_by_id_across_records(tmp_path):
    c = {"id": 5, "user": {"login": "x"}, "body": "same comment", "created_at": "2024-01-02T00:00:00Z"}
    rows = [
        {"number": 1, "title": "T", "repo": REPO, "comments_data": [c]},
        {"type": "IssueCommentEvent", "repo": {"name": REPO}, "payload": {"issue": {"number": 1}, "comment": c}},
    ]
    threads, bad, n = read_threads([write_jsonl(tmp_path / "a.jsonl", rows)])
    assert n == 2 and not bad and len(threads) == 1 and len(threads[0].comments) == 1


# --------------------------------------------------------------------------- SWE-bench
def test_swebench_decontam_id_link_ngram_and_short(tmp_path, real_change):
    before, _, diff = real_change
    rows = rest_records(diff, before)
    statement = rows[0]["body"]
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [
        {"repo": "other/repo", "instance_id": "other__repo-8", "problem_statement": "unrelated words only here"},
        {"repo": "x/y", "instance_id": "x__y-1", "problem_statement": "Some other text. " + statement[20:]},
        {"repo": "z/w", "instance_id": "z__w-2", "problem_statement": "Crash on empty input"},  # < 13 words
        "{bad line",
    ])
    idx = SwebenchIndex.from_jsonl(tasks)
    assert idx.n_tasks == 3 and len(idx.errors) == 1 and ":4:" in idx.errors[0]
    assert idx.match(REPO, [8], "anything") is None  # same number, other repo
    assert idx.match("Other/Repo", [8], "anything") == ("swebench:id", "other/repo#8")
    assert idx.match(REPO, [99], statement) == ("swebench:ngram", "x__y-1")
    assert idx.match("a/b", [1], "Title: Crash on empty input!") == ("swebench:ngram", "z__w-2")
    assert idx.match("a/b", [1], "Crash on empty inputs") is None
    assert parse_instance_id("astropy__astropy-12907") == ("astropy/astropy", 12907)

    f = write_jsonl(tmp_path / "t.jsonl", rows)
    docs = list(iter_issue_documents([f], IssuesConfig(swebench=[str(tasks)])))
    drops = {d.doc.meta["number"]: (d.reason, d.doc.meta["swebench_match"]) for d in docs if isinstance(d, Drop)}
    assert drops == {7: ("swebench:ngram", "x__y-1")}  # the PR itself is clean: its text is "Fixes #7."
    # linked-number match: a task on the issue number drops the PR that fixes it
    tasks2 = write_jsonl(tmp_path / "tasks2.jsonl", [{"repo": REPO, "instance_id": "acme__globby-7", "problem_statement": "x"}])
    docs = list(iter_issue_documents([f], IssuesConfig(swebench=[str(tasks2)])))
    assert sorted(d.doc.meta["number"] for d in docs if isinstance(d, Drop)) == [7, 8]


# --------------------------------------------------------------------------- PR-Dialogue
def apply_search_replace(answer: str, files: dict[str, str]) -> dict[str, str]:
    files = dict(files)
    for path, search, replace in re.findall(r"### ([^\n]+)\n<<<<<<< SEARCH\n(.*?)=======\n(.*?)>>>>>>> REPLACE", answer, re.S):
        if search == "":
            files[path] = files.get(path, "") + replace
            continue
        assert files[path].count(search) == 1, f"SEARCH block not unique in {path}"
        files[path] = files[path].replace(search, replace, 1)
    return files


def spans_of(doc):
    check_spans(doc.text, doc.spans)
    covered = [0] * len(doc.text)
    for s in doc.spans:
        for i in range(s.start, s.end):
            covered[i] += 1
    assert all(c == 1 for c in covered)  # every character in exactly one span
    return doc.spans


@pytest.mark.parametrize("policy", ["anneal", "mid"])
def test_pr_dialogue_templates_and_masks(tmp_path, real_change, policy):
    before, after, diff = real_change
    f = write_jsonl(tmp_path / "t.jsonl", rest_records(diff, before))
    out = tmp_path / policy
    assert cli_main(["ingest", "pr-dialogue", str(f), "--out", str(out), "--policy", policy, "--no-progress"]) == 0
    acc = StageManifest.read(out).accounting
    assert acc.docs_in == 4 and acc.drops == {"not_pr": 2}  # 2 threads x 2 templates
    docs = {d.meta["template"]: d for d in read_documents(out)}
    problem = rest_records(diff, before)[0]["body"]
    for tpl, doc in docs.items():
        assert doc.source == "pr_dialogue" and doc.kind == "pull_request" and doc.meta["linked_issue"] == 7
        spans = spans_of(doc)
        roles = {s.role for s in spans}
        if policy == "anneal":
            assert roles == {"scaffold", "user", "assistant"}
            assert all(s.loss == (s.role != "scaffold") for s in spans)
            assert not any(m in doc.text for m in MARKERS)
            user_text = "".join(doc.text[s.start:s.end] for s in spans if s.role == "user")
            assert problem in user_text  # the problem carries loss in the anneal
            scaffold = "".join(doc.text[s.start:s.end] for s in spans if s.role == "scaffold")
            assert "fnmatch" not in scaffold  # scaffolding is only our template wording
        else:
            assert [s.role for s in spans] == ["user", "scaffold", "assistant"]
            assert [s.loss for s in spans] == [False, False, True]
            u, sc, a = (doc.text[s.start:s.end] for s in spans)
            assert u.startswith("<|user|>") and u.endswith("<|end|>") and problem in u
            assert sc == "\n<|assistant|>" and a.endswith("<|end|>")
        answer = "".join(doc.text[s.start:s.end] for s in spans if s.role == "assistant").removesuffix("<|end|>")
        if tpl == "localization":
            assert answer == "```\nLib/fnmatch.py\n```\n"
            assert "globby/\n    Lib/\n        fnmatch.py\n        glob.py\n    README.rst\n" in doc.text and doc.meta["tree_source"] == "repo_tree"
        else:
            assert doc.meta["file_context"] == ["full"]
            assert before in doc.text  # the full file before the change is shown
            patched = apply_search_replace(answer, {"Lib/fnmatch.py": before})
            assert patched["Lib/fnmatch.py"] == after  # the edits reproduce the real fix
            assert patched["Lib/test/test_fnmatch_new.py"].startswith("import fnmatch")


def test_pr_dialogue_without_tree_or_files_and_decontam(tmp_path, real_change):
    before, after, diff = real_change
    rows = rest_records(diff, before)
    del rows[1]["files_before"], rows[1]["repo_tree"]
    rows.append({"number": 9, "title": "Refactor", "body": "Cleanup of internals, no behaviour change at all.",
                 "repository": {"full_name": REPO, "stargazers_count": 120}, "pull_request": {}})  # PR without diff
    f = write_jsonl(tmp_path / "t.jsonl", rows)
    cfg = PRDialogueConfig(policy="anneal", require_tree=True)
    items = list(iter_pr_dialogue([f], cfg))
    reasons = sorted(i.reason for i in items if isinstance(i, Drop))
    assert reasons == ["no_diff", "no_diff", "no_repo_tree", "not_pr", "not_pr"]
    repair = next(i for i in items if not isinstance(i, Drop))
    assert repair.meta["file_context"] == ["hunks"] and "# (excerpt from line" in repair.text
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"repo": REPO, "instance_id": "acme__globby-8", "problem_statement": "q"}])
    items = list(iter_pr_dialogue([f], PRDialogueConfig(swebench=[str(tasks)])))
    assert sum(1 for i in items if isinstance(i, Drop) and i.reason == "swebench:id") == 2


def test_parse_diff_and_search_replace_for_new_and_deleted_files():
    diff = new_file_diff("a.py", "x = 1\n") + (
        "diff --git a/b.py b/b.py\ndeleted file mode 100644\nindex 1..0\n--- a/b.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-y = 2\n"
        "diff --git a/c.png b/c.png\nindex 1..2 100644\nBinary files a/c.png and b/c.png differ\n"
    )
    edits = parse_diff(diff)
    assert [(e.path, e.added_file, e.removed_file) for e in edits] == [("a.py", True, False), ("b.py", False, True)]
    text = search_replace(edits)
    assert "### a.py\n<<<<<<< SEARCH\n=======\nx = 1\n>>>>>>> REPLACE" in text
    assert "### b.py\n<<<<<<< SEARCH\ny = 2\n=======\n>>>>>>> REPLACE" in text


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.sampled_from(["user", "assistant", "scaffold", "think"])), max_size=12),
       st.sets(st.sampled_from(["user", "assistant", "scaffold", "think"])))
def test_span_builder_is_an_exact_cover(pieces, loss_roles):
    sb = SpanText(frozenset(loss_roles))
    for text, role in pieces:
        sb.add(text, role)
    text, spans = sb.build()
    assert text == "".join(t for t, _ in pieces)
    check_spans(text, spans)
    for a, b in zip(spans, spans[1:]):
        assert (a.role, a.loss) != (b.role, b.loss)  # merged when equal
    for s in spans:
        assert s.loss == (s.role in loss_roles)
    # each character's role is the role of the piece it came from
    roles = "".join(r[0] * len(t) for t, r in pieces)
    assert "".join(s.role[0] * (s.end - s.start) for s in spans) == roles


def test_check_spans_rejects_gaps_and_overlaps():
    with pytest.raises(ValueError):
        check_spans("abcd", [Span(0, 2, "user", False), Span(3, 4, "assistant", True)])
    with pytest.raises(ValueError):
        check_spans("abcd", [Span(0, 3, "user", False), Span(2, 4, "assistant", True)])
    with pytest.raises(ValueError):
        check_spans("abcd", [Span(0, 3, "user", False)])


def test_bundled_github_sample_ingests(tmp_path):
    threads, tasks = SAMPLES / "github" / "threads.jsonl", SAMPLES / "swebench_tasks.jsonl"
    out = tmp_path / "prd"
    # exit 1: done, but the sample's one truncated record was dropped (stepcrawl.errors)
    assert cli_main(["ingest", "pr-dialogue", str(threads), "--out", str(out), "--policy", "mid",
                     "--swebench", str(tasks), "--no-progress"]) == 1
    acc = StageManifest.read(out).accounting
    assert acc.docs_out >= 20 and acc.drops["swebench:id"] >= 2 and acc.drops["swebench:ngram"] >= 2
    assert acc.drops["malformed"] == 1
    for d in read_documents(out):
        spans_of(d)
        assert all(s.loss == (s.role == "assistant") for s in d.spans)


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.text(max_size=12))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.sampled_from(
                                                             ["login", "type", "name", "full_name", "id", "body", "path",
                                                              "number", "stargazers_count", "tree", "state", "filename", "patch", "changes", "status",
                                                              "issue_url", "diff_hunk", "comments", "user"]), inner, max_size=4)),
                     max_leaves=8)
_KEYS = ["number", "title", "body", "user", "state", "labels", "comments", "comments_data", "review_comments", "reviews",
         "repository", "repo", "base", "head", "merged", "created_at", "html_url", "diff", "repo_tree", "files_before",
         "pull_request", "type", "payload", "issue_url", "pull_request_url", "comment", "review", "issue", "sender",
         "files", "changed_files", "action", "thread", "submitted_at"]


_record = st.builds(
    lambda base, extra: {**extra, **{k: v for k, v in base.items() if v is not ...}},
    st.fixed_dictionaries({"number": st.one_of(st.integers(1, 3), _json, st.just(...)),
                           "repo": st.sampled_from(["o/r", "O/R", 5, ...]),
                           "issue_url": st.sampled_from(["https://api.github.com/repos/o/r/issues/1",
                                                         "https://api.github.com/repos/o/r/pulls/2", ...]),
                           "type": st.sampled_from(["PushEvent", "PullRequestReviewEvent", "IssuesEvent", ...])}),
    st.dictionaries(st.sampled_from(_KEYS), _json, max_size=8),
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.lists(_record, max_size=5))
@example([{"number": 1, "repo": "o/r", "created_at": 5, "html_url": 7, "title": "x", "labels": "bug", "state": 3,
           "comments": [{"body": "b", "path": 4, "created_at": []}], "review_comments": [{"body": 1, "diff_hunk": {}}]}])
@example([{"number": 1, "repo": "o/r", "comments_data": True}])  # found by hypothesis: a non-list value
@example([{"number": 2, "repo": "o/r", "repo_tree": {"tree": 2848}}])  # found by hypothesis: a Trees-API dict whose tree is no list
@example([{"type": "WatchEvent", "repo": {"name": "o/r"}, "payload": {}},  # ignored, in both grouping modes
          {"issue_url": "https://api.github.com/repos/o/r/issues/1", "id": 3, "body": "x"},  # grouped by URL
          {"number": 1, "repo": "o/r", "files": [{"filename": "a", "patch": "@@ -1 +1 @@\n-a\n+b"}]},
          {"action": "created", "sender": {}, "repository": {"full_name": "o/r"}}])  # a webhook without a thread
def test_arbitrary_records_never_crash_the_thread_reader(tmp_path_factory, records):
    """Any JSON objects: each becomes part of a thread or a BadRecord, and every resulting
    document fits the Arrow schema (no exception escapes, nothing is lost)."""
    from stepcrawl.document import to_table

    f = tmp_path_factory.mktemp("h") / "t.jsonl"
    write_jsonl(f, records)
    items = list(iter_issue_documents([f], IssuesConfig()))
    docs = [i.doc if isinstance(i, Drop) else i for i in items if not isinstance(i, BadRecord)]
    to_table(docs)
    threads, bad, n = read_threads([f])
    assert n == len(records) and len(bad) + sum(len(t.sources) for t in threads) == len(records)

    # Spilled grouping (bounded memory) validates and groups exactly like the in-memory pass.
    from stepcrawl.sources.issues import iter_thread_groups

    groups, bad2, n2 = iter_thread_groups([f], spill_bytes=0, partitions=3)
    spilled = [t for g in groups for t in g]
    assert n2 == n and [str(b) for b in bad2] == [str(b) for b in bad]
    key = lambda t: (t.repo.lower(), t.number)  # noqa: E731
    assert sorted((key(t), t.sources) for t in spilled) == sorted((key(t), t.sources) for t in threads)


@pytest.mark.parametrize("adapter", ["issues", "pr_dialogue"])
def test_spilled_grouping_gives_the_same_documents(tmp_path, adapter):
    """Inputs above ``spill_bytes`` are partitioned by repository into temp files and grouped one
    partition at a time: same documents (a PR still finds its linked issue), same drops, and
    the temporary partitions are removed afterwards."""
    import tempfile

    threads = SAMPLES / "github" / "threads.jsonl"

    def run(spill_bytes):
        if adapter == "issues":
            items = iter_issue_documents([threads], IssuesConfig(spill_bytes=spill_bytes))
        else:
            items = iter_pr_dialogue([threads], PRDialogueConfig(policy="mid", spill_bytes=spill_bytes))
        out = []
        for i in items:
            if isinstance(i, BadRecord):
                out.append(("bad", str(i)))
            elif isinstance(i, Drop):
                out.append(("drop", i.reason, i.doc.id))
            else:
                out.append(("doc", i.id, i.text, tuple(i.spans or ()), json.dumps(i.meta, sort_keys=True)))
        return sorted(out)

    before = set(Path(tempfile.gettempdir()).glob("stepcrawl-threads-*"))
    in_memory, spilled = run(1 << 40), run(0)
    assert spilled == in_memory and sum(1 for x in in_memory if x[0] == "doc") >= 10
    assert set(Path(tempfile.gettempdir()).glob("stepcrawl-threads-*")) == before
