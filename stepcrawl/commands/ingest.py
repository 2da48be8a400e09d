"""``stepcrawl ingest code|git|issues|pr-dialogue|tool-use|reasoning``: source adapters → corpus.

Every subcommand writes ``OUT/part-*.parquet`` + ``OUT/_manifest.json`` (accounting: in = out +
Σ drops), optionally ``OUT/rejected/`` (``--keep-rejected``), and prints a one-line summary.
Malformed input records are reported by file:line and counted, never fatal.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stepcrawl.sources import DEFAULT_SOURCES
from stepcrawl.sources.common import input_files, inputs_hash, parse_roles, write_stage

log = logging.getLogger(__name__)

_EPILOG = """\
examples:
  stepcrawl ingest code . --out data/corpus/code
  stepcrawl ingest git . --out data/corpus/commits --max-commits 500
  stepcrawl ingest issues samples/github/threads.jsonl --out data/corpus/issues \\
      --swebench samples/swebench_tasks.jsonl
  stepcrawl ingest pr-dialogue samples/github/threads.jsonl --policy mid --out data/corpus/pr_dialogue
  stepcrawl ingest tool-use samples/traces/tool_use.jsonl --out data/corpus/tool_use
  stepcrawl ingest reasoning samples/traces/reasoning.jsonl --out data/corpus/reasoning
"""


def _common(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (one corpus source)")
    p.add_argument("--source", default=DEFAULT_SOURCES[kind], help=f"source name written to documents (default: {DEFAULT_SOURCES[kind]})")
    p.add_argument("--keep-rejected", action="store_true", help="also write dropped documents to OUT/rejected/ with their drop reason")
    p.add_argument("--shard-docs", type=int, default=10_000, help="documents per Parquet shard")
    p.add_argument("--resume", action="store_true", help="skip when OUT already holds a finished run with the same config and input")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sub(sub, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help_, description=help_, epilog=f"example:\n  {example}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


class _ListFormats(argparse.Action):
    """``--list-formats``: print the formats the kind reads and exit (like ``--help``, so the
    required inputs and ``--out`` are not needed)."""

    def __init__(self, option_strings, dest, kind: str = "", **kwargs):
        self.kind = kind
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from stepcrawl.sources.formats import list_formats

        print(list_formats(self.kind))
        parser.exit(0)


def _trace_formats(p: argparse.ArgumentParser, kind: str) -> None:
    from stepcrawl.sources.formats import formats_for

    names = [f.name for f in formats_for(kind)]
    p.add_argument("--format", choices=names, default=None, metavar="NAME",
                   help=f"force one input format instead of detecting it per record ({', '.join(names)})")
    p.add_argument("--list-formats", action=_ListFormats, kind=kind, help="list the input formats and exit")


def register(subparsers) -> None:
    ingest = subparsers.add_parser(
        "ingest",
        help="turn code, git history, GitHub threads and traces into corpus documents",
        description="Source adapters: each writes OUT/part-*.parquet + _manifest.json in the common Document schema.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ingest.add_subparsers(dest="ingest_kind", metavar="KIND")
    ingest.set_defaults(func=lambda args: (ingest.print_help(), 2)[1])

    p = _sub(sub, "code", "a source tree or git checkout → one document per file (OpenCoder-style rule hits)",
             "stepcrawl ingest code . --out data/corpus/code --max-hits 6")
    p.add_argument("src", type=Path, help="folder or git checkout")
    p.add_argument("--repo", help="repository name for meta (default: origin remote, else folder name)")
    p.add_argument("--max-hits", type=int, default=6, help="keep files violating at most this many rules (report: hit0-6)")
    p.add_argument("--max-bytes", type=int, default=1_000_000, help="larger files are dropped as too_large")
    p.add_argument("--languages", default="", help="comma-separated languages to keep (default: all known)")
    p.add_argument("--no-git-files", action="store_true", help="walk the folder instead of `git ls-files` in a checkout")
    _common(p, "code")
    p.set_defaults(func=run_code)

    p = _sub(sub, "git", "a local repository's history → one document per commit (real `git log`)",
             "stepcrawl ingest git . --out data/corpus/commits")
    p.add_argument("repo_path", type=Path, help="a git repository (working tree or bare)")
    p.add_argument("--repo", help="repository name for meta")
    p.add_argument("--rev", default="HEAD", help="revision (range) to walk, as for `git log` (default HEAD)")
    p.add_argument("--max-commits", type=int, default=0, help="newest N commits only (0 = all)")
    p.add_argument("--max-file-diff-lines", type=int, default=400, help="cut a file's diff after this many lines")
    p.add_argument("--max-diff-chars", type=int, default=100_000, help="after this many diff characters, files keep only headers")
    p.add_argument("--skip-merges", action="store_true", help="drop merge commits instead of diffing against the first parent")
    p.add_argument("--no-pseudonymize", action="store_true",
                   help="keep e-mail addresses, @mentions and trailer names (Signed-off-by, …) in messages verbatim")
    _common(p, "git")
    p.set_defaults(func=run_git)

    for kind, help_, example in (
        ("issues", "GitHub REST / GH Archive issue and PR records → one document per thread",
         "stepcrawl ingest issues threads.jsonl --out data/corpus/issues --min-stars 10 --swebench tasks.jsonl"),
        ("pr-dialogue", "PR threads with diffs → Agentless localization / repair examples with loss spans",
         "stepcrawl ingest pr-dialogue threads.jsonl --policy mid --out data/corpus/pr_dialogue"),
    ):
        p = _sub(sub, kind, help_, example)
        p.add_argument("inputs", nargs="+", type=Path, help="JSONL/JSON files or folders")
        p.add_argument("--min-stars", type=int, default=10, help="drop repos with fewer stars (only when records carry stars)")
        p.add_argument("--swebench", action="append", default=[], help="SWE-bench-style task list JSONL to decontaminate against (repeatable)")
        p.add_argument("--ngram-min-overlap", type=int, default=1, help="shared 13-grams with a task problem statement that make a match")
        p.add_argument("--no-pseudonymize", action="store_true",
                       help="keep logins, @mentions and e-mail addresses verbatim (default: stable pseudonyms per document)")
        if kind == "issues":
            p.add_argument("--no-diff", action="store_true", help="leave PR diffs out of the thread text")
            p.add_argument("--max-chars", type=int, default=200_000)
            p.set_defaults(func=run_issues)
        else:
            p.add_argument("--policy", choices=("anneal", "mid"), default="anneal",
                           help="anneal: only scaffolding masked; mid: chat form, user prompt masked")
            p.add_argument("--templates", default="localization,repair", help="which templates to emit")
            p.add_argument("--require-tree", action="store_true", help="drop localization examples without a repo_tree")
            p.add_argument("--max-files", type=int, default=5, help="drop PRs editing more text files")
            p.add_argument("--max-chars", type=int, default=120_000)
            p.set_defaults(func=run_pr_dialogue)
        _common(p, kind)

    p = _sub(sub, "tool-use", "agent trajectories (OpenAI, ShareGPT, Anthropic, SWE-agent, OpenHands, … detected per record) → documents with role markers and loss spans",
             "stepcrawl ingest tool-use traces.jsonl --out data/corpus/tool_use --loss-roles assistant,tool_call")
    p.add_argument("inputs", nargs="+", type=Path, help="JSONL / JSON / .traj files (also .gz, .zst) or folders")
    p.add_argument("--loss-roles", default="assistant,think,tool_call",
                   help="roles whose spans carry loss (of system,user,assistant,think,tool_call,tool_result,scaffold)")
    p.add_argument("--no-tools", action="store_true", help="do not render tool schemas into the system turn")
    p.add_argument("--max-chars", type=int, default=400_000)
    _trace_formats(p, "tool-use")
    _common(p, "tool-use")
    p.set_defaults(func=run_tool_use)

    p = _sub(sub, "reasoning", "reasoning records (R1 <think>, reasoning_content, OpenR1 generations, problem/reasoning/answer fields) → <|think|> documents with spans",
             "stepcrawl ingest reasoning traces.jsonl --out data/corpus/reasoning --reasoning-field cot")
    p.add_argument("inputs", nargs="+", type=Path, help="JSONL / JSON / .traj files (also .gz, .zst) or folders")
    p.add_argument("--problem-field", help="field (dotted path) with the problem")
    p.add_argument("--reasoning-field", help="field with the reasoning")
    p.add_argument("--answer-field", help="field with the answer")
    p.add_argument("--loss-roles", default="think,assistant", help="roles whose spans carry loss")
    p.add_argument("--allow-missing-reasoning", action="store_true", help="keep records without reasoning")
    p.add_argument("--max-chars", type=int, default=200_000)
    p.add_argument("--generation", default="first-correct",
                   help="OpenR1 'generations' lists: first-correct (default), first, all (one document each) or an index")
    _trace_formats(p, "reasoning")
    _common(p, "reasoning")
    p.set_defaults(func=run_reasoning)


# --------------------------------------------------------------------------- runners
def _finish(args, stage: str, items, cfg, input_id: str | None, stats: dict) -> int:
    try:
        res = write_stage(
            items, args.out, stage, cfg, input_id=input_id, keep_rejected=args.keep_rejected,
            shard_docs=args.shard_docs, force=not args.resume, progress=not args.no_progress, extra=stats,
        )
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        print(f"stepcrawl ingest: error: {exc}", file=sys.stderr)
        return 2  # refused (stepcrawl.errors)
    m = res.manifest
    acc = m.accounting
    if res.skipped:
        print(f"{stage}: {args.out} is up to date ({acc.docs_out} documents); nothing to do")
        return 0
    drops = ", ".join(f"{k}={v}" for k, v in sorted(acc.drops.items())) or "none"
    print(f"{stage}: {acc.docs_in} in, {acc.docs_out} kept ({acc.chars_out:,} chars), drops: {drops} -> {args.out}")
    if res.errors:  # each one was already logged with its file:line as it was met
        print(f"  {len(res.errors)} malformed or rejected record(s); listed in {args.out}/_manifest.json (extra.errors)", file=sys.stderr)
        return 1  # done, but malformed input was dropped (stepcrawl.errors)
    return 0


def _files(args) -> tuple[list[Path], str] | None:
    try:
        files = input_files(args.inputs)
    except FileNotFoundError as exc:
        print(f"stepcrawl ingest: error: {exc}", file=sys.stderr)
        return None
    return files, inputs_hash(files)


def run_code(args) -> int:
    from stepcrawl.sources.code import CodeConfig, iter_code

    cfg = CodeConfig(source=args.source, repo=args.repo, max_hits=args.max_hits, max_bytes=args.max_bytes,
                     languages=[x for x in args.languages.split(",") if x], git_files=not args.no_git_files)
    stats: dict = {"src": str(args.src)}
    rc = _finish(args, "ingest-code", iter_code(args.src, cfg, stats), cfg, _tree_id(args.src), stats)
    if str(stats.get("file_listing", "")).startswith("walk:"):  # e.g. a folder the enclosing checkout ignores
        print(f"  files listed by {stats['file_listing']}", file=sys.stderr)
    if stats.get("undecodable_names"):
        print(f"  {len(stats['undecodable_names'])} file name(s) not valid UTF-8, skipped (undecodable_name); "
              f"listed in {args.out}/_manifest.json (extra.undecodable_names)", file=sys.stderr)
    return rc


def run_git(args) -> int:
    from stepcrawl.sources.git import GitConfig, iter_commits

    cfg = GitConfig(source=args.source, repo=args.repo, rev=args.rev, max_commits=args.max_commits,
                    max_file_diff_lines=args.max_file_diff_lines, max_diff_chars=args.max_diff_chars,
                    skip_merges=args.skip_merges, pseudonymize=not args.no_pseudonymize)
    stats: dict = {"src": str(args.repo_path)}
    return _finish(args, "ingest-git", iter_commits(args.repo_path, cfg, stats), cfg, _head_id(args.repo_path, args.rev), stats)


def _run_inputs(args, stage: str, make_config, iterate) -> int:
    """The runners that read JSON/JSONL inputs (issues, PR dialogue, traces): resolve the
    inputs, build the adapter config with ``make_config()`` and write the stage.

    A ``ValueError`` from ``make_config`` is a bad option value (an unknown ``--loss-roles``
    name): reported as a usage error (exit 2) before anything is written."""
    got = _files(args)
    if got is None:
        return 2
    files, hid = got
    try:
        cfg = make_config()
    except ValueError as exc:
        print(f"stepcrawl ingest: error: {exc}", file=sys.stderr)
        return 2
    stats: dict = {"inputs": [str(f) for f in files]}
    return _finish(args, stage, iterate(files, cfg, stats), cfg, hid, stats)


def _loss_roles(args) -> list[str]:
    """``--loss-roles`` as a sorted list (sorted: the config hash must not depend on the order
    the roles were typed in); unknown role names raise ValueError."""
    return sorted(parse_roles(args.loss_roles))


def run_issues(args) -> int:
    from stepcrawl.sources.issues import IssuesConfig, iter_issue_documents

    return _run_inputs(args, "ingest-issues", lambda: IssuesConfig(
        source=args.source, min_stars=args.min_stars, include_diff=not args.no_diff, max_chars=args.max_chars,
        swebench=[str(s) for s in args.swebench], ngram_min_overlap=args.ngram_min_overlap,
        pseudonymize=not args.no_pseudonymize,
    ), iter_issue_documents)


def run_pr_dialogue(args) -> int:
    from stepcrawl.sources.pr_dialogue import PRDialogueConfig, iter_pr_dialogue

    return _run_inputs(args, "ingest-pr-dialogue", lambda: PRDialogueConfig(
        source=args.source, policy=args.policy, templates=[t for t in args.templates.split(",") if t],
        min_stars=args.min_stars, max_files=args.max_files, max_chars=args.max_chars,
        require_tree=args.require_tree, swebench=[str(s) for s in args.swebench],
        ngram_min_overlap=args.ngram_min_overlap, pseudonymize=not args.no_pseudonymize,
    ), iter_pr_dialogue)


def run_tool_use(args) -> int:
    from stepcrawl.sources.tool_use import ToolUseConfig, iter_tool_use

    return _run_inputs(args, "ingest-tool-use", lambda: ToolUseConfig(
        source=args.source, loss_roles=_loss_roles(args), max_chars=args.max_chars, render_tools=not args.no_tools,
        format=args.format,
    ), iter_tool_use)


def run_reasoning(args) -> int:
    from stepcrawl.sources.reasoning import ReasoningConfig, iter_reasoning

    return _run_inputs(args, "ingest-reasoning", lambda: ReasoningConfig(
        source=args.source, problem_field=args.problem_field, reasoning_field=args.reasoning_field,
        answer_field=args.answer_field, loss_roles=_loss_roles(args),
        allow_missing_reasoning=args.allow_missing_reasoning, max_chars=args.max_chars,
        format=args.format, generation=_generation(args.generation),
    ), iter_reasoning)


def _generation(value: str) -> str:
    """``--generation``: checked here so a typo is a usage error (exit 2), not a crash later."""
    if value in ("first-correct", "first", "all") or value.lstrip("-").isdigit():
        return value
    raise ValueError(f"--generation must be first-correct, first, all or an index, not {value!r}")


def _head_id(path: Path, rev: str) -> str | None:
    """Input identity of a git source: the commit(s) the revision resolves to. The revision is
    user input: it is validated like ``git log``'s (``rev_args``), never passed as an option."""
    import hashlib
    import subprocess

    from stepcrawl.sources.git import rev_args

    try:
        args = rev_args(path, rev)
    except ValueError:
        return None  # the adapter reports the bad revision
    res = subprocess.run(["git", "-C", str(path), "rev-parse", *args], capture_output=True, text=True)
    if res.returncode != 0:
        return None
    lines = res.stdout.split()
    if len(lines) == 1:
        return lines[0][:16]
    return hashlib.sha256(" ".join(lines).encode()).hexdigest()[:16] if lines else None


def _tree_id(path: Path) -> str | None:
    """Input identity of a code tree: HEAD plus a hash of `git status` (dirty trees differ);
    None outside git (a plain folder is always re-ingested). ``core.fsmonitor=false``: the
    tree is someone else's, and its config must not make `git status` run a program."""
    import hashlib
    import subprocess

    head = _head_id(path, "HEAD")
    if head is None:
        return None
    status = subprocess.run(["git", "-C", str(path), "-c", "core.fsmonitor=false", "status", "--porcelain", "-uall"], capture_output=True).stdout
    return f"{head}-{hashlib.sha256(status).hexdigest()[:8]}"


__all__ = ["register"]
