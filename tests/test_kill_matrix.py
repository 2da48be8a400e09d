"""The kill matrix: every long job SIGKILLed at named points, resumed as documented, compared
with an uninterrupted run.

Kills are deterministic: the job runs in a subprocess with ``STEPCRAWL_KILL_AT=POINT[:N]``
(``stepcrawl.faults.kill_point``), which SIGKILLs the process at the N-th hit of that point, so
nothing here polls for files (racy on a loaded machine). The reference and the resumed run write
to the same path (the reference is moved aside first), so paths recorded in outputs cannot differ.

After the resume, the output folder must equal the reference file by file:

* every file byte for byte, except
* JSON/JSONL files, compared as data after removing only wall-clock fields (``VOLATILE``: how long
  something took or when it happened — a resumed run took another time, nothing else), and
* ``.npz`` arrays (the cluster model), compared array by array: ``np.savez`` writes a zip whose
  member headers carry the current time;
* and no temporary file (``.tmp-*`` of ``stepcrawl.io.atomic_path``, ``.tmp-step_*`` checkpoint
  and ``.tmp-<phase>`` mix folders, ``.old-*``) is left anywhere.

``crawl`` has its own kill tests (tests/test_crawl.py, tests/test_crawl_breadth.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_extract import make_warc, real_pages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Fields that legitimately differ between an uninterrupted and a resumed run: wall-clock
# durations and timestamps (manifests, metrics.jsonl), nothing about the data.
VOLATILE = frozenset({"wall_time_s", "created_at", "stage_times_s", "wall_time_total_s", "tokens_per_s", "step_time_s"})
TEMP_PREFIXES = (".tmp-", ".old-")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def snapshot(folder: Path, special=None) -> dict[str, object]:
    """Relative path → comparable content of every file under ``folder``."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if special is not None and (v := special(rel, p)) is not None:
            out[rel] = v
        elif p.suffix == ".json":
            out[rel] = _strip(json.loads(p.read_text(encoding="utf-8")))
        elif p.suffix == ".jsonl":
            out[rel] = [_strip(json.loads(line)) for line in p.read_text(encoding="utf-8").splitlines()]
        elif p.suffix == ".npz":
            with np.load(p) as z:
                out[rel] = {k: (z[k].dtype.str, z[k].shape, z[k].tobytes()) for k in sorted(z.files)}
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_same_output(ref: Path, out: Path, special=None) -> None:
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name.startswith(TEMP_PREFIXES))
    assert not leftovers, f"temporary files left after the resumed run: {leftovers}"
    a, b = snapshot(ref, special), snapshot(out, special)
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    detail = {k: (a[k], b[k]) for k in differ if isinstance(a[k], (dict, list))}
    assert not (missing or extra or differ), (
        f"resumed output differs from the uninterrupted run: missing {missing}, extra {extra}, differ {differ}\n"
        + "\n".join(f"{k}:\n  ref {json.dumps(v[0], default=str)[:1500]}\n  got {json.dumps(v[1], default=str)[:1500]}"
                    for k, v in detail.items())
    )


def run_killed(module: str, argv: list[str], point: str, rc: int = -signal.SIGKILL) -> str:
    """``python -m module argv`` with ``STEPCRAWL_KILL_AT=point``: it must die by SIGKILL (or,
    when the point is hit in a worker process, end with ``rc``); returns its stderr."""
    env = {**os.environ, "STEPCRAWL_KILL_AT": point, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == rc, f"rc {proc.returncode}, not {rc} (killed at {point}):\n{proc.stderr[-3000:]}"
    return proc.stderr


def reference(run, out: Path) -> Path:
    """Run the uninterrupted job into ``out``, then move it aside (the killed run reuses ``out``)."""
    assert run() in (0, 1)
    ref = out.with_name(out.name + "-ref")
    out.rename(ref)
    return ref


def fresh(out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    return out


# ------------------------------------------------------------------------------------- curate


@pytest.fixture(scope="module")
def curate_job(tmp_path_factory):
    from stepcrawl.cli import main

    root = tmp_path_factory.mktemp("curate")
    crawl = root / "crawl"
    crawl.mkdir()
    pages = [p for p in real_pages() if "/py-" in p[0]]  # the five small pages
    for i in range(2):  # two work units; the same pages under other URLs (dedup keeps one)
        make_warc(crawl / f"part{i}.warc.gz", [(f"http://m{i}.test/{u.rsplit('/', 1)[1]}", body, ct) for u, body, ct in pages])
    getpass = next(body for u, body, _ in pages if u.endswith("py-getpass.html")).decode("utf-8", "replace")
    (root / "eval.jsonl").write_text(json.dumps({"question": getpass[getpass.find("getpass.getpass"):][:400]}) + "\n")
    out = root / "out"
    argv = ["curate", str(crawl), "--out", str(out), "--min-tier", "Low", "--decontam", f"mmlu={root / 'eval.jsonl'}",
            "--cluster", "--cluster-k", "2", "--keep-rejected", "--no-progress"]
    ref = reference(lambda: main(argv), out)
    return argv, out, ref


@pytest.mark.parametrize("point, shows, absent", [
    # during extract: unit 2 of 2 written, not marked done
    ("filter.unit-written:2", "_work/filter/part1.warc.gz/part-00000.parquet", "_work/filter/part1.warc.gz/_manifest.json"),
    ("dedup.planned", "_work/dedup", "_work/dedup/_manifest.json"),  # during dedup: decided, nothing written
    ("decontam.unit-written", "_work/decontam/part-00000.parquet/part-00000.parquet", "_work/decontam/_manifest.json"),
    ("cluster.model-saved", "_work/cluster/_cluster_model.npz", "_work/cluster/_manifest.json"),  # fitted, not assigned
    ("curate.published", "web/part-00000.parquet", "web/_manifest.json"),  # corpus published, its manifest not yet
])
def test_curate_killed_resumes_to_the_uninterrupted_output(curate_job, point, shows, absent):
    from stepcrawl.cli import main

    argv, out, ref = curate_job
    fresh(out)
    if not point.startswith("filter."):
        # a kill after the filter stage: start from its finished units (the reference's) so the
        # killed process goes straight to the stage under test (the first case kills the filter itself)
        shutil.copytree(ref / "_work" / "filter", out / "_work" / "filter")
    run_killed("stepcrawl", argv, point)
    assert (out / shows).exists() and not (out / absent).exists() and not (out / "web" / "_manifest.json").exists()
    assert main(argv) in (0, 1)  # documented resume: the same command again
    assert_same_output(ref, out)


def test_curate_worker_killed_is_a_refusal_and_resumes(curate_job):
    """--workers 2 and one worker SIGKILLed (the OOM killer's way): the parent refuses in one line
    (exit 2; a traceback's exit 1 would read as "done, some input dropped"), and the same command
    again ends with the single-process output."""
    from stepcrawl.cli import main

    argv, out, ref = curate_job
    fresh(out)
    err = run_killed("stepcrawl", [*argv, "--workers", "2"], "filter.unit-written", rc=2)
    lines = [x for x in err.splitlines() if x.startswith("stepcrawl curate: error:")]
    assert len(lines) == 1 and "worker died" in lines[0] and "Traceback" not in err
    assert main([*argv, "--workers", "2"]) in (0, 1)
    assert_same_output(ref, out)


# ------------------------------------------------------------------------------------- ingest


def _git(repo: Path, *args: str, date: str | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.org",
           "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.org"}
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@pytest.fixture(scope="module")
def ingest_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    for i in range(8):  # 8 commits, each adding a module: 8 code files, 8 commit documents
        (repo / f"mod{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x * {j}\n\n" for j in range(5 + i)))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"Add module {i}", date=f"2024-01-{i + 1:02d}T10:00:00+00:00")
    return root, repo


INGEST = {  # kind → (arguments before --out, kill point)
    "code": (lambda repo: ["ingest", "code", str(repo)], "ingest.record:5"),
    "git": (lambda repo: ["ingest", "git", str(repo)], "ingest.record:5"),
    "issues": (lambda repo: ["ingest", "issues", str(ROOT / "samples" / "github" / "threads.jsonl"),
                             "--swebench", str(ROOT / "samples" / "swebench_tasks.jsonl")], "ingest.record:9"),
    "pr-dialogue": (lambda repo: ["ingest", "pr-dialogue", str(ROOT / "samples" / "github" / "threads.jsonl")], "ingest.record:9"),
    "tool-use": (lambda repo: ["ingest", "tool-use", str(ROOT / "samples" / "traces" / "tool_use.jsonl")], "ingest.record:9"),
    "reasoning": (lambda repo: ["ingest", "reasoning", str(ROOT / "samples" / "traces" / "reasoning.jsonl")], "ingest.record:9"),
}


@pytest.mark.parametrize("kind", sorted(INGEST))
def test_ingest_killed_resumes_to_the_uninterrupted_output(ingest_inputs, kind):
    from stepcrawl.cli import main

    root, repo = ingest_inputs
    make, point = INGEST[kind]
    out = fresh(root / f"out-{kind}")
    argv = [*make(repo), "--out", str(out), "--shard-docs", "2", "--keep-rejected", "--no-progress"]
    ref = reference(lambda: main(argv), out)
    run_killed("stepcrawl", argv, point)
    assert list(out.glob("part-*.parquet")) and not (out / "_manifest.json").exists()  # shards of a half run
    assert main([*argv, "--resume"]) in (0, 1)
    assert_same_output(ref, out)


# ------------------------------------------------------------------------------------- tokenize


@pytest.fixture(scope="module")
def token_inputs(tmp_path_factory):
    from stepcrawl.document import Document
    from stepcrawl.io import write_documents
    from tokenizer.train import TokenizerConfig, train_tokenizer

    root = tmp_path_factory.mktemp("tokenize")
    rng = np.random.default_rng(0)
    words = np.array("the quick brown fox jumps over lazy dog packages versions install build test".split())
    for k in range(3):  # three input files: three work units
        docs = [Document(id=f"{k}-{i}", text=" ".join(rng.choice(words, 40)), tier=("High", "Medium")[i % 2], lang="en")
                for i in range(30)]
        write_documents(root / "corpus" / "web" / f"part-{k:05d}.parquet", docs)
    train_tokenizer([root / "corpus"], root / "tok", TokenizerConfig(vocab_size=600, threads=1))
    return root


@pytest.mark.parametrize("split, point", [
    (False, "tokenize.shard-written:2"),  # between shards: shard 2's files in place, no .done.json
    (False, "tokenize.document:45"),      # mid-shard: shard 2 half encoded, its files under temp names
    (True, "tokenize.document:45"),       # the same with --split-tiers (one shard per tier)
], ids=["between-shards", "mid-shard", "split-tiers-mid-shard"])
def test_tokenize_killed_resumes_to_the_uninterrupted_output(token_inputs, split, point):
    from stepcrawl.cli import main

    root = token_inputs
    out = fresh(root / f"tokens-{split}-{point.replace(':', '-')}")
    argv = ["tokenize", str(root / "corpus"), "--tokenizer", str(root / "tok"), "--out", str(out), "--workers", "1",
            "--no-progress", *(["--split-tiers"] if split else [])]
    ref = reference(lambda: main(argv), out)
    run_killed("stepcrawl", argv, point)
    assert not list(out.rglob("manifest.json"))
    assert main(argv) == 0  # documented resume: the same command again
    assert_same_output(ref, out)


def test_tokenize_worker_killed_is_a_refusal_and_resumes(token_inputs):
    from stepcrawl.cli import main

    root = token_inputs
    out = fresh(root / "tokens-workers")
    argv = ["tokenize", str(root / "corpus"), "--tokenizer", str(root / "tok"), "--out", str(out), "--no-progress"]
    ref = reference(lambda: main([*argv, "--workers", "1"]), out)
    err = run_killed("stepcrawl", [*argv, "--workers", "2"], "tokenize.document:20", rc=2)
    assert "worker died" in err and "Traceback" not in err
    assert main([*argv, "--workers", "2"]) == 0
    assert_same_output(ref, out)


# ------------------------------------------------------------------------------------- build-mix

MIX_YAML = """
name: kill
attention_block: 64
sources: {web: {}, code: {}}
max_epochs: {web: 3, code: 3}
stages:
  - name: s
    phases:
      - name: a
        tokens: 4k
        seq_len: 128
        mixture: {web: 0.7, code: 0.3}
        schedule: {global_batch: 4, lr: {shape: constant, peak: 1.0e-3}}
      - name: b
        tokens: 2k
        seq_len: 256
        mixture: {web: 0.5, code: 0.5}
        schedule: {global_batch: 4, lr: {shape: constant, peak: 1.0e-3}}
"""


@pytest.mark.parametrize("point", ["build-mix.phase-packed:1", "build-mix.phase-packed:2"])
def test_build_mix_killed_resumes_to_the_uninterrupted_output(tmp_path, point):
    from curricula.synthetic import write_source
    from stepcrawl.cli import main

    write_source(tmp_path / "tokens", "web", 60, seed=3, min_len=50, max_len=150, docs_per_shard=20)
    write_source(tmp_path / "tokens", "code", 40, seed=4, min_len=50, max_len=150, docs_per_shard=20)
    (tmp_path / "cur.yaml").write_text(MIX_YAML)
    out = tmp_path / "mix"
    argv = ["build-mix", "--curriculum", str(tmp_path / "cur.yaml"), "--stage", "s", "--tokens", str(tmp_path / "tokens"),
            "--out", str(out), "--quiet"]
    ref = reference(lambda: main(argv), out)
    run_killed("stepcrawl", argv, point)
    assert list(out.glob(".tmp-*")) and not (out / "manifest.json").exists()
    assert main(argv) == 0  # documented resume: the same command again
    assert_same_output(ref, out)


# ------------------------------------------------------------------------------------- train

TRAIN_YAML = """\
name: kill
tokenizer: {vocab_size: 256}
attention_block: 32
sources: {web: {}}
stages:
  - name: pre
    phases:
      - name: short
        tokens: 768           # 24 sequences of 32: 6 steps of 4
        seq_len: 32
        mixture: {web: 1.0}
        schedule: {global_batch: 4, lr: {shape: warmup_cosine, peak: 0.01, end: 0.002, warmup: 2}, mtp_weight: 0.3}
      - name: long
        tokens: 512           # 8 sequences of 64: 2 steps of 4
        seq_len: 64
        mixture: {web: 1.0}
        schedule: {global_batch: 4, lr: {shape: constant, peak: 0.004}, rope_theta_full: 1.0e6, router_frozen: true}
"""
TINY = ["--set", "vocab_size=256", "--set", "d_model=16", "--set", "n_layers=1", "--set", "head_dim=8",
        "--set", "n_heads_full=2", "--set", "n_heads_swa=2", "--set", "n_kv_heads=1", "--set", "rotary_dim_full=4",
        "--set", "rotary_dim_swa=8", "--set", "window=16", "--set", "n_experts=2", "--set", "top_k=1",
        "--set", "ep_groups=1", "--set", "expert_hidden=16", "--set", "shared_hidden=16", "--set", "dense_hidden=32",
        "--set", "n_mtp=1", "--set", "mtp_hidden=32"]


@pytest.fixture(scope="module")
def train_job(tmp_path_factory):
    from model.train import main
    from trainer_bridge.synthetic import SyntheticPhase, write_synthetic_mix

    root = tmp_path_factory.mktemp("train")
    (root / "cur.yaml").write_text(TRAIN_YAML)
    write_synthetic_mix(root / "mix", [SyntheticPhase("short", 32, 24), SyntheticPhase("long", 64, 8)],
                        vocab_size=256, seed=1, stage="pre", curriculum="kill")
    out = root / "run"
    argv = ["--curriculum", str(root / "cur.yaml"), "--mix", str(root / "mix"), "--out", str(out), "--model", "tiny", *TINY,
            "--no-progress", "--no-tensorboard", "--threads", "1", "--micro-batch-tokens", "128", "--checkpoint-every", "4",
            "--keep", "2"]
    ref = reference(lambda: main(argv), out)
    return argv, out, ref


def _train_special(rel: str, path: Path):
    name = path.name
    if rel == "config.json":  # the command's arguments: the resumed run was given --resume
        d = json.loads(path.read_text())
        d["args"].pop("resume")
        return d
    if name == ".metadata":  # DCP's metadata: its storage_meta.save_id is a fresh uuid per save
        import pickle

        with open(path, "rb") as fh:
            m = pickle.load(fh)
        m.storage_meta.save_id = None
        return repr(vars(m))
    if name.startswith("checksums_rank"):  # so is the sha256 of .metadata listed there
        d = json.loads(path.read_text())
        d.pop(".metadata", None)
        return d
    return None


@pytest.mark.parametrize("point, resumes_from", [
    ("train.mid-step:3", None),                       # step 3, before any checkpoint: --resume starts afresh
    ("train.mid-step:6", "step_00000004"),           # step 6: gradients computed, not applied
    ("checkpoint.files-written:2", "step_00000004"),  # saving step 8: files written, no COMPLETE
    ("train.phase-switch", "step_00000004"),          # first step of phase "long" (step 7)
])
def test_train_killed_resumes_bit_for_bit(train_job, point, resumes_from):
    from model.checkpoint import latest_checkpoint
    from model.train import main

    argv, out, ref = train_job
    fresh(out)
    run_killed("model.train", argv, point)
    latest = latest_checkpoint(out)
    assert (latest.name if latest else None) == resumes_from
    assert main([*argv, "--resume"]) == 0
    assert_same_output(ref, out, _train_special)


# ------------------------------------------------------------------------------------- the hook


def test_kill_point_names_and_counts():
    from stepcrawl.faults import _parse

    assert _parse(None) == (None, 0) and _parse("") == (None, 0)
    assert _parse("tokenize.document") == ("tokenize.document", 1)
    assert _parse("ingest.record:9") == ("ingest.record", 9)
    assert _parse("odd:name") == ("odd:name", 1)  # a suffix that is not a count is part of the name


def test_kill_point_fires_at_the_nth_hit_only(tmp_path):
    code = ("from stepcrawl.faults import kill_point\n"
            "for i in range(1, 6):\n"
            "    kill_point('other'); kill_point('here'); print(i, flush=True)\n")
    env = {**os.environ, "STEPCRAWL_KILL_AT": "here:3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.split() == ["1", "2"]
