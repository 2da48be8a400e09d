"""Every GitHub record shape the thread readers accept, on real-shaped records
(samples/github/shapes/, written by samples/github/build_shapes.py in the published REST,
webhook and GH Archive shapes), with exact text assertions; pseudonymisation; wrong-typed
fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.cli import main as cli_main
from stepcrawl.document import Document
from stepcrawl.io import BadRecord, read_documents
from stepcrawl.manifest import StageManifest
from stepcrawl.sources.common import Pseudonymizer
from stepcrawl.sources.issues import IssuesConfig, files_api_diff, iter_issue_documents, parse_record, read_threads
from stepcrawl.sources.pr_dialogue import PRDialogueConfig, iter_pr_dialogue, parse_diff
from stepcrawl.steps import Drop

SHAPES = Path(__file__).resolve().parents[1] / "samples" / "github" / "shapes"
HUNK = ('```diff\n@@ -10,3 +10,5 @@ def load(path):\n     with open(path) as fh:\n         data = yaml.safe_load(fh)\n'
        '-    return Config(data["widgets"])\n+    if not data:\n```\n')


def run(path: Path, **cfg) -> tuple[dict[int, Document], list, dict]:
    stats: dict = {}
    docs, other = {}, []
    for item in iter_issue_documents([path], IssuesConfig(**cfg), stats):
        if isinstance(item, Document):
            docs[item.meta["number"]] = item
        else:
            other.append(item)
    return docs, other, stats


def test_rest_objects_on_their_own_lines_group_by_url_and_files_api_diff():
    docs, other, stats = run(SHAPES / "rest.jsonl")
    assert other == [] and stats["records"] == 8 and stats["threads"] == 2
    issue, pr = docs[12], docs[13]
    assert issue.text == (
        "Repository: octo-org/widgets\nIssue #12: Empty config file crashes the loader\nState: open\nLabels: bug\n"
        "Author: user_0\n\n"
        "Parsing an empty config file raises `KeyError: 'widgets'`.\n\n"
        "```python\n@dataclass\nclass Config:\n    widgets: list\n```\n\n"  # code: decorators untouched
        "cc @user_2, who wrote the loader. Contact me at person_0@example.com if you need the file.\n\n"
        "### Comment by user_1\nReproduced. @user_0, does it also fail with `{}`?\n\n"
        "### Comment by user_0\nYes, same error. Thanks @user_1!\n"  # @BobSmith: logins are case-insensitive
    )
    assert issue.meta["records"] == [f"{SHAPES / 'rest.jsonl'}:{i}" for i in (1, 2, 3, 4)]  # the bot's line too
    assert pr.kind == "pull_request" and pr.meta["has_diff"] and not pr.meta["diff_incomplete"]
    assert pr.text == (
        "Repository: octo-org/widgets\nPull request #13: Return an empty Config for empty files\nState: merged\n"
        "Author: user_0\n\n"
        "Fixes #12. Thanks @user_2 for the report; signed off by bob <person_0@example.com>.\n\n"
        "### Review comment by user_1 on widgets/config.py\n" + HUNK + "Could this use `data or {}` instead?\n\n"
        "### Review by user_1 (approved)\nLooks good; ping @user_3 for the release notes.\n\n"
        "### Diff\n"
        "diff --git a/widgets/config.py b/widgets/config.py\n--- a/widgets/config.py\n+++ b/widgets/config.py\n"
        "@@ -10,3 +10,5 @@ def load(path):\n     with open(path) as fh:\n         data = yaml.safe_load(fh)\n"
        "-    return Config(data[\"widgets\"])\n+    if not data:\n+        return Config([])\n+    return Config(data[\"widgets\"])\n"
        "diff --git a/tests/test_config.py b/tests/test_config.py\n--- /dev/null\n+++ b/tests/test_config.py\n"
        "@@ -0,0 +1,4 @@\n+from widgets.config import load\n+\n+def test_empty(tmp_path):\n"
        "+    assert load(tmp_path / 'empty.yml').widgets == []\n"
    )
    assert pr.meta["stars"] == 321 and pr.meta["n_comments"] == 2  # the empty review is not a comment
    # the assembled diff is a real unified diff: unidiff parses it, the new file is a new file
    th = {t.number: t for t in read_threads([SHAPES / "rest.jsonl"])[0]}
    edits = parse_diff(th[13].diff)
    assert [(e.path, e.added_file) for e in edits] == [("widgets/config.py", False), ("tests/test_config.py", True)]


def test_pr_dialogue_uses_the_files_api_diff_and_pseudonymises_the_problem():
    items = list(iter_pr_dialogue([SHAPES / "rest.jsonl"], PRDialogueConfig(policy="anneal")))
    assert sorted(i.reason for i in items if isinstance(i, Drop)) == ["not_pr", "not_pr"]
    repair = next(i for i in items if isinstance(i, Document) and i.meta["template"] == "repair")
    assert repair.meta["linked_issue"] == 12
    assert "cc @user_0, who wrote the loader. Contact me at person_0@example.com" in repair.text
    assert "alice" not in repair.text and "dave-ops" not in repair.text
    assert ("<<<<<<< SEARCH\n    with open(path) as fh:\n        data = yaml.safe_load(fh)\n    return Config(data[\"widgets\"])\n"
            "=======\n    with open(path) as fh:\n        data = yaml.safe_load(fh)\n    if not data:\n        return Config([])\n"
            "    return Config(data[\"widgets\"])\n>>>>>>> REPLACE") in repair.text


def test_each_webhook_kind_and_an_unrelated_webhook():
    kinds = [parse_record(json.loads(line)) for line in (SHAPES / "webhooks.jsonl").read_text().splitlines()]
    assert [(k.number, k.item is not None, [c[1] for c in k.comments]) for k in kinds[:5]] == [
        (20, True, []), (20, True, ["comment"]), (21, True, []), (21, True, ["review"]), (21, True, ["review_comment"])]
    assert kinds[5] == "webhook"  # a push payload: well-formed, but no thread
    docs, other, stats = run(SHAPES / "webhooks.jsonl")
    assert [(o.reason, o.doc.meta["line"]) for o in other] == [("ignored_event", 6)]
    assert stats["ignored_events"] == {"webhook": 1}
    assert docs[20].text == (
        "Repository: octo-org/widgets\nIssue #20: Docs: the loader page is missing\nState: open\nLabels: bug\n"
        "Author: user_0\n\nSee the sidebar.\n\n### Comment by user_1\nI can take this.\n")
    # the pull_request payload's PR object is the thread (not an empty one built from the wrapper)
    assert docs[21].kind == "pull_request" and docs[21].text == (
        "Repository: octo-org/widgets\nPull request #21: Add the loader page\nState: open\nAuthor: user_0\n\n"
        "Closes #20.\n\n### Review comment by user_1 on widgets/config.py\n" + HUNK + "Typo: lodaer.\n\n"
        "### Review by user_1 (changes_requested)\nOne typo, see inline.\n")


def test_gharchive_every_event_type_accepted_irrelevant_ones_counted(tmp_path):
    out = tmp_path / "issues"
    assert cli_main(["ingest", "issues", str(SHAPES / "gharchive.jsonl"), "--out", str(out), "--no-progress", "--keep-rejected"]) == 0
    m = StageManifest.read(out)
    assert m.accounting.docs_in == 2 + 4 and m.accounting.drops == {"ignored_event": 4}  # nothing malformed
    assert m.extra["ignored_events"] == {"CreateEvent": 1, "ForkEvent": 1, "PushEvent": 1, "WatchEvent": 1}
    assert m.extra["errors"] == []
    docs = {d.meta["number"]: d for d in read_documents(out)}
    assert docs[30].text == (
        "Repository: octo-org/widgets\nIssue #30: Widget colours are inverted in dark mode\nState: open\nLabels: bug\n"
        "Author: user_0\n\nScreenshot attached.\n\n### Comment by user_1\nConfirmed on Firefox too.\n")
    # PullRequestEvent + PullRequestReviewEvent + PullRequestReviewCommentEvent → one thread
    assert docs[31].text == (
        "Repository: octo-org/widgets\nPull request #31: Fix dark-mode colours\nState: merged\nAuthor: user_0\n\n"
        "Fixes #30.\n\n### Review comment by user_1 on widgets/config.py\n" + HUNK + "Nit: rename `fg`.\n\n"
        "### Review by user_1 (approved)\nShip it.\n")
    assert len(docs[31].meta["records"]) == 3


def test_review_thread_event_and_html_url_fallback():
    pr = {"number": 5, "title": "T", "user": {"login": "a"}, "head": {}, "base": {"repo": {"full_name": "o/r"}}}
    ev = {"type": "PullRequestReviewThreadEvent", "repo": {"name": "o/r"}, "payload": {
        "action": "resolved", "pull_request": pr,
        "thread": {"node_id": "PRRT_1", "comments": [{"id": 1, "user": {"login": "b"}, "path": "x.py", "diff_hunk": "@@ -1 +1 @@", "body": "ok"}]}}}
    piece = parse_record(ev)
    assert piece.repo == "o/r" and piece.number == 5 and piece.comments[0][1] == "review_comment"
    review = {"id": 9, "user": {"login": "c"}, "body": "fine", "state": "APPROVED",
              "html_url": "https://github.com/o/r/pull/5#pullrequestreview-9"}  # no pull_request_url
    piece = parse_record(review)
    assert (piece.repo, piece.number, piece.is_pr, piece.comments[0][1]) == ("o/r", 5, True, "review")


def test_files_api_missing_patch_is_said_and_pr_dialogue_drops_it(tmp_path):
    files = [
        {"filename": "a.py", "status": "modified", "changes": 2, "patch": "@@ -1 +1 @@\n-x = 1\n+x = 2"},
        {"filename": "huge.json", "status": "modified", "changes": 90000},  # GitHub left the patch out
        {"filename": "logo.png", "status": "added", "changes": 0},  # binary: no patch, no changed lines
        {"filename": "new_name.py", "previous_filename": "old_name.py", "status": "renamed", "changes": 0},
    ]
    diff, missing = files_api_diff(files)
    assert missing == ["huge.json"]
    assert diff == ("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
                    "diff --git a/huge.json b/huge.json\n"
                    "diff --git a/logo.png b/logo.png\n"
                    "diff --git a/old_name.py b/new_name.py\nrename from old_name.py\nrename to new_name.py\n")
    rec = {"number": 3, "title": "Bump", "body": "A long enough description of the change to keep it.",
           "repository": {"full_name": "o/r"}, "head": {}, "files": files, "changed_files": 5}
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    docs, _, _ = run(f)
    assert docs[3].meta["diff_incomplete"] is True
    assert docs[3].text.endswith("[no patch in the files API for: huge.json, (1 more files not in the files list)]\n")
    items = list(iter_pr_dialogue([f], PRDialogueConfig()))
    assert [i.reason for i in items] == ["incomplete_diff", "incomplete_diff"]


@pytest.mark.parametrize("record, field", [
    ({"number": 1, "repo": "o/r", "body": 123}, "'body' is int"),
    ({"number": 1, "repo": "o/r", "title": ["x"]}, "'title' is list"),
    ({"number": 1, "repo": "o/r", "comments": [{"id": 1, "body": {"text": "hi"}}]}, "'body' is dict"),
    ({"number": 1, "repo": "o/r", "labels": [{"name": 7}]}, "label name is int"),
    ({"number": 1, "repo": "o/r", "user": 5}, "'user' is int"),
    ({"number": 1, "repo": "o/r", "files": [{"filename": "a.py", "patch": 3}]}, "'patch' is int"),
    ({"issue_url": "https://api.github.com/repos/o/r/issues/1", "id": 4, "body": 5}, "'body' is int"),
    ({"type": "IssuesEvent", "repo": {"name": "o/r"}, "payload": {"issue": {"number": 1, "title": 9}}}, "'title' is int"),
    ({"sha": "ab", "filename": "a.py", "status": "modified", "patch": "@@ -1 +1 @@"}, "attach the list to its PR"),
])
def test_wrong_typed_fields_are_malformed_not_rendered(tmp_path, record, field):
    f = tmp_path / "t.jsonl"
    good = {"number": 2, "repo": "o/r", "title": "fine"}
    f.write_text(json.dumps(record) + "\n" + json.dumps(good) + "\n")
    docs, other, _ = run(f)
    assert list(docs) == [2]  # the neighbour is unaffected
    assert len(other) == 1 and isinstance(other[0], BadRecord) and field in str(other[0]) and ":1:" in str(other[0])


def test_no_pseudonymize_keeps_logins_and_addresses(tmp_path):
    docs, _, _ = run(SHAPES / "rest.jsonl", pseudonymize=False)
    assert "Author: alice-dev" in docs[12].text and "cc @dave-ops" in docs[12].text
    assert "alice@example.org" in docs[12].text and "### Comment by bobsmith" in docs[12].text
    out = tmp_path / "o"
    assert cli_main(["ingest", "issues", str(SHAPES / "rest.jsonl"), "--out", str(out), "--no-progress", "--no-pseudonymize"]) == 0
    assert any("Thanks @BobSmith!" in d.text for d in read_documents(out))


# --------------------------------------------------------------------------- Pseudonymizer
def test_pseudonymizer_mentions_emails_code_and_trailers():
    p = Pseudonymizer()
    p.login("Alice")
    text = ("Thanks @alice and @bob-x! Mail carol.w+gh@mail.example.co.uk or "
            "12345+alice@users.noreply.github.com.\n"
            "Not mentions: a@b, @org/team, `@inline`, foo@bar, email@localhost\n"
            "~~~\n@decorator\ndef f(): pass  # ping @alice\n~~~\n@alice again, and @bob-x.")
    assert p.text(text) == (
        "Thanks @user_0 and @user_1! Mail person_0@example.com or "
        "person_1@example.com.\n"
        "Not mentions: a@b, @org/team, `@inline`, foo@bar, email@localhost\n"
        "~~~\n@decorator\ndef f(): pass  # ping @alice\n~~~\n@user_0 again, and @user_1.")
    msg = ("Fix the loader (@carol)\n\nReported by dave@example.net.\n\n"
           "Signed-off-by: Ada Lovelace <ada@example.org>\n"
           "Co-authored-by: Dave Null <DAVE@example.net>\n"
           "Reviewed-by: Ada Lovelace <ada@example.org>")
    q = Pseudonymizer()
    assert q.trailers(msg) == (
        "Fix the loader (@user_0)\n\nReported by person_1@example.com.\n\n"
        "Signed-off-by: person_0 <person_0@example.com>\n"
        "Co-authored-by: person_1 <person_1@example.com>\n"  # same address as in the prose
        "Reviewed-by: person_0 <person_0@example.com>")
    assert Pseudonymizer(enabled=False).trailers(msg) == msg


_login = st.from_regex(r"[A-Za-z0-9]{1,6}(-[A-Za-z0-9]{1,5})?", fullmatch=True)
_email = st.builds(lambda a, b, c: f"{a}@{b}.{c}", st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,6}", fullmatch=True),
                   st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), st.sampled_from(["org", "com", "co.uk", "dev"]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.builds(lambda x: ("@", x), _login), st.builds(lambda x: ("mail", x), _email),
                          st.builds(lambda x: ("code", x), _login)), min_size=1, max_size=8),
       st.sampled_from([" ", ", ", "\n", " (", "! "]))
def test_pseudonymizer_leaves_no_login_or_address(tokens, sep):
    """Every @mention outside code and every address is replaced, one login keeps one alias,
    and code spans are left as they were."""
    parts = [f"@{v}" if k == "@" else v if k == "mail" else f"`@{v}`" for k, v in tokens]
    out = Pseudonymizer().text(sep.join(parts) + ".")
    pieces = out[:-1].split(sep)
    assert len(pieces) == len(parts)
    alias: dict[str, str] = {}
    for (kind, value), got in zip(tokens, pieces):
        if kind == "@":
            assert re.fullmatch(r"@user_\d+", got)
            assert alias.setdefault(value.lower(), got) == got  # stable within the text
        elif kind == "mail":
            assert re.fullmatch(r"person_\d+@example\.com", got)
        else:
            assert got == f"`@{value}`"


def test_comments_without_their_issue_are_not_a_thread(tmp_path):
    rows = [json.loads(line) for line in (SHAPES / "rest.jsonl").read_text().splitlines()]
    f = tmp_path / "orphans.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows[1:4]))  # issue #12's comments, not the issue
    docs, other, _ = run(f)
    assert docs == {} and [(o.reason, o.doc.meta["number"]) for o in other] == [("no_thread_object", 12)]


def test_swebench_task_with_wrong_typed_fields_is_reported(tmp_path):
    from stepcrawl.sources.swebench import SwebenchIndex

    tasks = tmp_path / "tasks.json"  # a .json list, as exported from a dataset viewer
    tasks.write_text(json.dumps([
        {"repo": "o/r", "instance_id": "o__r-1", "problem_statement": ["not", "text"]},
        {"repo": "o/r", "instance_id": "o__r-2", "problem_statement": "Crash on empty input"},
    ]))
    idx = SwebenchIndex.from_jsonl(tasks)
    assert idx.n_tasks == 1 and idx.ids == {("o/r", 2)}
    assert len(idx.errors) == 1 and ":1:" in idx.errors[0] and "'problem_statement' is list" in idx.errors[0]
