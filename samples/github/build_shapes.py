"""Write ``samples/github/shapes/*.jsonl``: one small, real-shaped example of every GitHub
record shape ``stepcrawl ingest issues`` / ``pr-dialogue`` read, used by the tests with exact
text assertions (tests/test_sources_github_shapes.py).

The records are our own (repository ``octo-org/widgets``, invented people and text), written in
the published shapes: GitHub REST API objects (issues, pulls, ``/issues/comments``,
``/pulls/comments``, ``/pulls/{n}/reviews``, ``/pulls/{n}/files``), webhook payloads
(``issues``, ``issue_comment``, ``pull_request``, ``pull_request_review``,
``pull_request_review_comment``, and a ``push`` payload that is no thread), and GH Archive
events (the thread types plus PushEvent, WatchEvent, ForkEvent, CreateEvent). Fields we do not
read (``node_id``, ``_links``, ``reactions``…) are kept so the readers are tested against the
noise real payloads carry. Deterministic: ``python samples/github/build_shapes.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "shapes"
OWNER, NAME = "octo-org", "widgets"
REPO = f"{OWNER}/{NAME}"
API = f"https://api.github.com/repos/{REPO}"
WEB = f"https://github.com/{REPO}"


def user(login: str, uid: int, kind: str = "User") -> dict:
    return {
        "login": login, "id": uid, "node_id": f"MDQ6VXNlcj{uid}", "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "", "url": f"https://api.github.com/users/{login}", "html_url": f"https://github.com/{login}",
        "type": kind, "site_admin": False,
    }


def repository(stars: int = 321) -> dict:
    return {
        "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": NAME, "full_name": REPO, "private": False,
        "owner": user(OWNER, 9919, "Organization"), "html_url": WEB, "url": API, "fork": False,
        "stargazers_count": stars, "watchers_count": stars, "forks_count": 12, "default_branch": "main",
    }


ALICE, BOB, CAROL, DEPBOT = user("alice-dev", 101), user("bobsmith", 102), user("CarolW", 103), user("dependabot[bot]", 49699333, "Bot")

ISSUE_BODY = (
    "Parsing an empty config file raises `KeyError: 'widgets'`.\n\n"
    "```python\n@dataclass\nclass Config:\n    widgets: list\n```\n\n"
    "cc @dave-ops, who wrote the loader. Contact me at alice@example.org if you need the file."
)


def issue_obj(number: int = 12) -> dict:
    return {
        "url": f"{API}/issues/{number}", "repository_url": API, "labels_url": f"{API}/issues/{number}/labels{{/name}}",
        "comments_url": f"{API}/issues/{number}/comments", "html_url": f"{WEB}/issues/{number}", "id": 1000 + number,
        "node_id": "I_kwDOABCD", "number": number, "title": "Empty config file crashes the loader", "user": ALICE,
        "labels": [{"id": 1, "node_id": "LA_1", "url": f"{API}/labels/bug", "name": "bug", "color": "d73a4a", "default": True}],
        "state": "open", "locked": False, "assignee": None, "assignees": [], "milestone": None, "comments": 2,
        "created_at": "2024-03-01T09:00:00Z", "updated_at": "2024-03-02T10:00:00Z", "closed_at": None,
        "author_association": "CONTRIBUTOR", "body": ISSUE_BODY,
        "reactions": {"url": f"{API}/issues/{number}/reactions", "total_count": 0, "+1": 0},
    }


def issue_comment(cid: int, number: int, who: dict, body: str, at: str) -> dict:
    return {
        "url": f"{API}/issues/comments/{cid}", "html_url": f"{WEB}/issues/{number}#issuecomment-{cid}",
        "issue_url": f"{API}/issues/{number}", "id": cid, "node_id": f"IC_{cid}", "user": who,
        "created_at": at, "updated_at": at, "author_association": "MEMBER", "body": body,
        "reactions": {"url": f"{API}/issues/comments/{cid}/reactions", "total_count": 0},
    }


PATCH_LOADER = "@@ -10,3 +10,5 @@ def load(path):\n     with open(path) as fh:\n         data = yaml.safe_load(fh)\n-    return Config(data[\"widgets\"])\n+    if not data:\n+        return Config([])\n+    return Config(data[\"widgets\"])\n"
PATCH_TEST = "@@ -0,0 +1,4 @@\n+from widgets.config import load\n+\n+def test_empty(tmp_path):\n+    assert load(tmp_path / 'empty.yml').widgets == []\n"


def pull_obj(number: int = 13, with_files: bool = True) -> dict:
    pr = {
        "url": f"{API}/pulls/{number}", "id": 2000 + number, "node_id": "PR_kwDOABCD", "html_url": f"{WEB}/pull/{number}",
        "diff_url": f"{WEB}/pull/{number}.diff", "patch_url": f"{WEB}/pull/{number}.patch", "issue_url": f"{API}/issues/{number}",
        "number": number, "state": "closed", "locked": False, "title": "Return an empty Config for empty files",
        "user": BOB, "body": "Fixes #12. Thanks @alice-dev for the report; signed off by bob <bob@widgets.example>.",
        "created_at": "2024-03-02T11:00:00Z", "updated_at": "2024-03-03T12:00:00Z", "closed_at": "2024-03-03T12:00:00Z",
        "merged_at": "2024-03-03T12:00:00Z", "merge_commit_sha": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
        "labels": [], "draft": False,
        "head": {"label": "bobsmith:fix-empty", "ref": "fix-empty", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "user": BOB},
        "base": {"label": f"{OWNER}:main", "ref": "main", "sha": "9049f1265b7d61be4a8904a9a27120d2064dab3b", "user": user(OWNER, 9919, "Organization"),
                 "repo": repository()},
        "author_association": "MEMBER", "merged": True, "comments": 1, "review_comments": 1, "commits": 1,
        "additions": 6, "deletions": 1, "changed_files": 2,
    }
    if with_files:  # our crawler's extension: the /pulls/{n}/files list attached to the PR
        pr["files"] = [
            {"sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": "widgets/config.py", "status": "modified",
             "additions": 2, "deletions": 1, "changes": 3, "blob_url": f"{WEB}/blob/6dcb09b/widgets/config.py",
             "raw_url": f"{WEB}/raw/6dcb09b/widgets/config.py", "contents_url": f"{API}/contents/widgets/config.py?ref=6dcb09b",
             "patch": PATCH_LOADER},
            {"sha": "aacd538c8e72b8c175046e27cc8f907076331402", "filename": "tests/test_config.py", "status": "added",
             "additions": 4, "deletions": 0, "changes": 4, "blob_url": f"{WEB}/blob/6dcb09b/tests/test_config.py",
             "raw_url": f"{WEB}/raw/6dcb09b/tests/test_config.py", "contents_url": f"{API}/contents/tests/test_config.py?ref=6dcb09b",
             "patch": PATCH_TEST},
        ]
    return pr


def review_comment(cid: int, number: int, who: dict, body: str, at: str) -> dict:
    return {
        "url": f"{API}/pulls/comments/{cid}", "pull_request_review_id": 42, "id": cid, "node_id": f"PRRC_{cid}",
        "diff_hunk": "@@ -10,3 +10,5 @@ def load(path):\n     with open(path) as fh:\n         data = yaml.safe_load(fh)\n-    return Config(data[\"widgets\"])\n+    if not data:",
        "path": "widgets/config.py", "position": 4, "original_position": 4, "commit_id": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        "original_commit_id": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "user": who, "body": body,
        "created_at": at, "updated_at": at, "html_url": f"{WEB}/pull/{number}#discussion_r{cid}",
        "pull_request_url": f"{API}/pulls/{number}", "author_association": "MEMBER",
        "_links": {"self": {"href": f"{API}/pulls/comments/{cid}"}, "html": {"href": f"{WEB}/pull/{number}#discussion_r{cid}"},
                   "pull_request": {"href": f"{API}/pulls/{number}"}},
        "start_line": None, "original_start_line": None, "start_side": None, "line": 13, "original_line": 13, "side": "RIGHT",
    }


def review(rid: int, number: int, who: dict, state: str, body: str, at: str) -> dict:
    return {
        "id": rid, "node_id": f"PRR_{rid}", "user": who, "body": body, "state": state,
        "html_url": f"{WEB}/pull/{number}#pullrequestreview-{rid}", "pull_request_url": f"{API}/pulls/{number}",
        "_links": {"html": {"href": f"{WEB}/pull/{number}#pullrequestreview-{rid}"}, "pull_request": {"href": f"{API}/pulls/{number}"}},
        "submitted_at": at, "commit_id": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "author_association": "MEMBER",
    }


def rest_records() -> list[dict]:
    """REST objects, each on its own line: comments and reviews find their thread by URL."""
    return [
        issue_obj(),
        issue_comment(501, 12, BOB, "Reproduced. @alice-dev, does it also fail with `{}`?", "2024-03-01T12:00:00Z"),
        issue_comment(502, 12, DEPBOT, "Bumps pyyaml from 6.0 to 6.0.1.", "2024-03-01T13:00:00Z"),  # a bot: dropped
        issue_comment(503, 12, ALICE, "Yes, same error. Thanks @BobSmith!", "2024-03-01T14:00:00Z"),
        pull_obj(),
        review_comment(601, 13, CAROL, "Could this use `data or {}` instead?", "2024-03-02T15:00:00Z"),
        review(42, 13, CAROL, "APPROVED", "Looks good; ping @eve-sec for the release notes.", "2024-03-02T16:00:00Z"),
        review(43, 13, BOB, "COMMENTED", "", "2024-03-02T16:30:00Z"),  # an empty review: dropped
    ]


def webhook_records() -> list[dict]:
    """One payload of each thread webhook, as delivered (X-GitHub-Event is a header, so not in
    the body), plus a ``push`` payload, which belongs to no thread."""
    issue = issue_obj(20) | {"title": "Docs: the loader page is missing", "body": "See the sidebar.", "comments": 0}
    pr = pull_obj(21, with_files=False) | {"title": "Add the loader page", "body": "Closes #20.", "state": "open",
                                            "merged": False, "merged_at": None, "closed_at": None}
    sender = {"sender": BOB}
    rc = review_comment(701, 21, CAROL, "Typo: lodaer.", "2024-04-01T11:00:00Z")
    return [
        {"action": "opened", "issue": issue, "repository": repository(), **sender},
        {"action": "created", "issue": issue, "comment": issue_comment(702, 20, BOB, "I can take this.", "2024-04-01T09:30:00Z"),
         "repository": repository(), **sender},
        {"action": "opened", "number": 21, "pull_request": pr, "repository": repository(), **sender},
        {"action": "submitted", "review": review(77, 21, CAROL, "changes_requested", "One typo, see inline.", "2024-04-01T11:01:00Z"),
         "pull_request": pr, "repository": repository(), "sender": CAROL},
        {"action": "created", "comment": rc, "pull_request": pr, "repository": repository(), "sender": CAROL},
        {"ref": "refs/heads/main", "before": "0" * 40, "after": "1" * 40, "repository": repository(), "pusher": {"name": "bobsmith"},
         "sender": BOB, "created": False, "deleted": False, "forced": False, "commits": []},
    ]


def gharchive_records() -> list[dict]:
    """GH Archive events (``{id, type, actor, repo, payload, public, created_at}``): the thread
    types and four of the many others, which must be counted, not reported as malformed."""
    actor = {"id": 102, "login": "bobsmith", "display_login": "bobsmith", "gravatar_id": "", "url": "https://api.github.com/users/bobsmith",
             "avatar_url": "https://avatars.githubusercontent.com/u/102?"}
    repo = {"id": 1296269, "name": REPO, "url": API}
    issue = issue_obj(30) | {"title": "Widget colours are inverted in dark mode", "body": "Screenshot attached.", "comments": 1}
    pr = pull_obj(31, with_files=False) | {"title": "Fix dark-mode colours", "body": "Fixes #30."}

    def ev(i: int, etype: str, payload: dict, at: str) -> dict:
        return {"id": str(26000000000 + i), "type": etype, "actor": actor, "repo": repo, "payload": payload, "public": True, "created_at": at}

    return [
        ev(1, "IssuesEvent", {"action": "opened", "issue": issue}, "2024-05-01T08:00:00Z"),
        ev(2, "PushEvent", {"repository_id": 1296269, "push_id": 1, "size": 1, "ref": "refs/heads/main", "head": "1" * 40, "before": "0" * 40, "commits": []}, "2024-05-01T08:05:00Z"),
        ev(3, "IssueCommentEvent", {"action": "created", "issue": issue, "comment": issue_comment(801, 30, BOB, "Confirmed on Firefox too.", "2024-05-01T09:00:00Z")}, "2024-05-01T09:00:00Z"),
        ev(4, "WatchEvent", {"action": "started"}, "2024-05-01T09:10:00Z"),
        ev(5, "PullRequestEvent", {"action": "closed", "number": 31, "pull_request": pr}, "2024-05-02T08:00:00Z"),
        ev(6, "PullRequestReviewEvent", {"action": "created", "review": review(91, 31, CAROL, "approved", "Ship it.", "2024-05-01T20:00:00Z"), "pull_request": pr}, "2024-05-01T20:00:00Z"),
        ev(7, "PullRequestReviewCommentEvent", {"action": "created", "comment": review_comment(901, 31, CAROL, "Nit: rename `fg`.", "2024-05-01T19:00:00Z"), "pull_request": pr}, "2024-05-01T19:00:00Z"),
        ev(8, "ForkEvent", {"forkee": {"id": 7, "full_name": "someone/widgets"}}, "2024-05-02T09:00:00Z"),
        ev(9, "CreateEvent", {"ref": "v1.2.0", "ref_type": "tag", "master_branch": "main", "description": None, "pusher_type": "user"}, "2024-05-02T10:00:00Z"),
    ]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, rows in (("rest.jsonl", rest_records()), ("webhooks.jsonl", webhook_records()), ("gharchive.jsonl", gharchive_records())):
        with open(OUT / name, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{OUT / name}: {len(rows)} records")


if __name__ == "__main__":
    main()
