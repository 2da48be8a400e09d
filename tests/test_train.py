"""The `train` command end to end on tiny sizes: schedules across phases, exact resume,
2-process FSDP2 equivalence (gloo on CPU), errors before compute, dry-run, checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import latest_checkpoint, list_checkpoints
from model.train import main
from trainer_bridge.synthetic import SyntheticPhase, write_synthetic_mix

REPO = Path(__file__).resolve().parents[1]

CURRICULUM = """\
name: unit
tokenizer: {vocab_size: 256}
attention_block: 32
sources: {web: {}}
stages:
  - name: pre
    phases:
      - name: short
        tokens: 1536          # 48 sequences of 32
        seq_len: 32
        mixture: {web: 1.0}
        schedule:
          global_batch: {steps: [{at: 0, batch: 4}, {at: 512, batch: 8}]}
          lr: {shape: warmup_cosine, peak: 0.01, end: 0.002, warmup: 2}
          mtp_weight: 0.3
          bias_update_rate: 0.01
          ep_loss_coef: 0.001
      - name: long
        tokens: 1024          # 16 sequences of 64
        seq_len: 64
        mixture: {web: 1.0}
        schedule:
          global_batch: 4
          lr: {shape: constant, peak: 0.004}
          rope_theta_full: 1.0e6
          mtp_weight: 0.1
          meta_loss_mask: {after: 2048}
          router_frozen: true
"""

TINY = ["--set", "vocab_size=256", "--set", "d_model=32", "--set", "n_layers=2",
        "--set", "head_dim=8", "--set", "n_heads_full=2", "--set", "n_heads_swa=2",
        "--set", "n_kv_heads=1", "--set", "rotary_dim_full=4", "--set", "rotary_dim_swa=8",
        "--set", "window=16", "--set", "n_experts=4", "--set", "top_k=2", "--set", "ep_groups=2",
        "--set", "expert_hidden=32", "--set", "shared_hidden=32", "--set", "dense_hidden=64",
        "--set", "n_mtp=1", "--set", "mtp_hidden=64"]
QUIET = ["--no-progress", "--no-tensorboard", "--threads", "1", "--micro-batch-tokens", "128"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    (root / "cur.yaml").write_text(CURRICULUM)
    write_synthetic_mix(root / "mix", [SyntheticPhase("short", 32, 48), SyntheticPhase("long", 64, 16)],
                        vocab_size=256, seed=1, stage="pre", curriculum="unit")
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--curriculum", str(root / "cur.yaml"), "--mix", str(root / "mix"), "--out", str(out),
            *TINY, *QUIET, *extra]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(setup):
    out = setup / "full"
    assert main(_args(setup, out, "--checkpoint-every", "5", "--keep", "2", "--routing-every", "4")) == 0
    return out


def test_schedule_applied_across_phases(full_run):
    m = _metrics(full_run)
    assert [r["step"] for r in m] == list(range(1, 13))
    # 'short': 16 sequences at batch 4 (4 steps), then batch 8 (4 steps); 'long': 4 steps of 4
    assert [r["batch"] for r in m] == [4] * 4 + [8] * 4 + [4] * 4
    assert [r["seq_len"] for r in m] == [32] * 8 + [64] * 4
    assert [r["phase"] for r in m] == ["pre/short"] * 8 + ["pre/long"] * 4
    assert m[0]["lr"] == pytest.approx(0.005) and m[1]["lr"] == pytest.approx(0.01)
    assert m[7]["lr"] == pytest.approx(0.002) and all(r["lr"] == pytest.approx(0.004) for r in m[8:])
    assert [r["mtp_weight"] for r in m] == [0.3] * 8 + [0.1] * 4
    assert [r["rope_theta_full"] for r in m] == [1e4] * 8 + [1e6] * 4
    assert [r["router_frozen"] for r in m] == [False] * 8 + [True] * 4
    assert [r["bias_update_rate"] for r in m] == [0.01] * 8 + [0.0] * 4
    # the meta mask switches on after 2048 tokens of the run = 512 tokens into 'long'
    assert [r["meta_masked"] for r in m] == [False] * 10 + [True] * 2
    assert m[-1]["tokens"] == 48 * 32 + 16 * 64
    assert all(r["grad_norm"] > 0 and r["loss"] > 0 for r in m)
    assert any(k.startswith("experts/layer1/") for k in m[3])   # routing stats every 4 steps
    assert m[-1]["loss"] < m[0]["loss"]


def test_checkpoints_are_pruned_and_complete(full_run):
    cks = list_checkpoints(full_run)
    assert [c.name for c in cks] == ["step_00000010", "step_00000012"]  # keep 2 of 5, 10, 12
    assert all((c / "COMPLETE").is_file() and (c / "trainer_state.json").is_file() for c in cks)
    # a crash while saving leaves a .tmp folder and maybe an incomplete one: both are ignored
    (full_run / "checkpoints" / ".tmp-step_00000013").mkdir()
    (full_run / "checkpoints" / "step_00000014").mkdir()
    assert latest_checkpoint(full_run).name == "step_00000012"
    shutil.rmtree(full_run / "checkpoints" / "step_00000014")


def test_resume_is_bit_for_bit(setup, full_run):
    out = setup / "resumed"
    assert main(_args(setup, out, "--max-steps", "6", "--checkpoint-every", "0")) == 0
    assert latest_checkpoint(out).name == "step_00000006"
    assert main(_args(setup, out, "--resume", "--checkpoint-every", "0")) == 0
    a, b = _metrics(full_run), _metrics(out)
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [(r["loss"], r["grad_norm"]) for r in a] == [(r["loss"], r["grad_norm"]) for r in b]


def test_mtp_heads_cloned_once_at_the_phase_switch_and_not_on_resume(setup):
    """--mtp-depths pre/long=2: MTP-2 is cloned from MTP-1 when phase "long" starts (step 9) and
    trains from then on; a run resumed after the switch continues it without cloning again."""
    mtp = ["--set", "n_mtp=2", "--mtp-depths", "pre/long=2", "--max-steps", "10"]
    one = setup / "mtp_one"
    assert main(_args(setup, one, *mtp, "--checkpoint-every", "0")) == 0
    two = setup / "mtp_two"
    assert main(_args(setup, two, *mtp[:-1], "9", "--checkpoint-every", "0")) == 0
    st = json.loads((latest_checkpoint(two) / "trainer_state.json").read_text())
    assert st["mtp_depths"] == 2
    assert main(_args(setup, two, *mtp, "--resume", "--checkpoint-every", "0")) == 0
    a, b = _metrics(one), _metrics(two)
    assert [r["mtp_depths"] for r in a] == [1] * 8 + [2] * 2
    # total_loss includes the MTP loss: a second clone would reset MTP-2 and change step 10
    assert [(r["total_loss"], r["mtp_loss"]) for r in a] == [(r["total_loss"], r["mtp_loss"]) for r in b]


def test_refuses_to_overwrite_a_run_without_resume(setup, full_run, capsys):
    assert main(_args(setup, full_run)) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_match_one(setup, tmp_path):
    """FSDP2 over 2 gloo processes on CPU == 1 process with the same global batch.

    Same micro-batch composition too (64 tokens: 1 process accumulates 2 micro-batches, each of
    2 processes runs one): the EP-balance loss is computed per forward, so it is not additive
    over different splits of a batch (PAPER §4.1.3 prefers global-batch balancing for that
    reason); everything else is, and the runs agree to float round-off."""
    common = _args(setup, tmp_path / "x", "--max-steps", "10", "--checkpoint-every", "0",
                   "--micro-batch-tokens", "64", "--ep-balance", "micro",
                   # 2 MTP heads, each its own FSDP unit; MTP-2 is cloned from MTP-1 at the
                   # switch to phase "long" (under FSDP2: shard-by-shard copy)
                   "--set", "n_mtp=2", "--mtp-depths", "pre/long=2")[4:]
    mix = ["--curriculum", str(setup / "cur.yaml"), "--mix", str(setup / "mix")]
    one = tmp_path / "one"
    assert main(mix + ["--out", str(one)] + common[2:]) == 0
    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "model.train", *mix, "--out", str(two), *common[2:],
           "--activation-checkpointing"]   # recomputation must not change the numbers
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _metrics(one), _metrics(two)
    assert len(a) == len(b) == 10 and b[-1]["phase"] == "pre/long"   # seq_len switch, frozen router
    assert [r["mtp_depths"] for r in b] == [1] * 8 + [2] * 2
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4, abs=1e-6)
    # the sharded (2-rank) DCP checkpoint resumes in a single process (resharding on load)
    assert main(mix + ["--out", str(two), "--resume"] + common[2:] + ["--max-steps", "11"]) == 0
    assert _metrics(two)[-1]["step"] == 11


@pytest.mark.slow
def test_global_batch_balance_loss_is_shared_across_ranks(setup, tmp_path):
    """--ep-balance global: the load fractions f of the EP-group loss are those of the whole
    global batch, all-reduced over data-parallel ranks.  1 process running the 4-sequence batch
    as one micro-batch and 2 processes running 2 sequences each then compute the same loss,
    gradient and (rank-averaged) balance loss; with per-rank f (``micro``) the balance loss of
    2 ranks would differ from the 1-process one."""
    mix = ["--curriculum", str(setup / "cur.yaml"), "--mix", str(setup / "mix")]
    common = _args(setup, tmp_path / "x", "--max-steps", "4", "--checkpoint-every", "0",
                   "--global-batch", "4", "--mtp-depths", "0", "--ep-balance", "global")[6:]
    one = tmp_path / "one"
    assert main(mix + ["--out", str(one), "--micro-batch-tokens", "128"] + common) == 0
    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "model.train", *mix, "--out", str(two), *common, "--micro-batch-tokens", "64"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _metrics(one), _metrics(two)
    assert len(a) == len(b) == 4 and all(r["micro_batch"] == 4 for r in a)
    assert all(r["micro_batch"] == 2 for r in b)
    for x, y in zip(a, b):
        assert y["aux_loss"] == pytest.approx(x["aux_loss"], rel=1e-6)
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------------
# errors before any compute
# ------------------------------------------------------------------------------------------
def _fails_fast(argv, capsys, match: str) -> None:
    t0 = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert time.perf_counter() - t0 < 10


def test_bad_curriculum_is_reported_before_compute(setup, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CURRICULUM.replace("mixture: {web: 1.0}\n        schedule:\n          global_batch: 4",
                                      "mixture: {web: 0.5}\n        schedule:\n          global_batch: 4"))
    out = tmp_path / "run"
    _fails_fast(["--curriculum", str(bad), "--mix", str(setup / "mix"), "--out", str(out), *TINY],
                capsys, "phase 'long': mixture: weights sum to 0.5")
    assert not out.exists()


def test_missing_mix_and_shards_are_reported(setup, tmp_path, capsys):
    out = tmp_path / "run"
    _fails_fast(_args(setup, out)[:2] + ["--mix", str(tmp_path / "nope"), "--out", str(out), *TINY],
                capsys, "mix folder not found")
    broken = tmp_path / "broken"
    shutil.copytree(setup / "mix", broken)
    (broken / "long" / "tokens.bin").unlink()
    _fails_fast(_args(setup, out)[:2] + ["--mix", str(broken), "--out", str(out), *TINY],
                capsys, "long/tokens.bin")
    assert not out.exists()


def test_mix_curriculum_and_model_mismatches(setup, tmp_path, capsys):
    out = tmp_path / "run"
    other = tmp_path / "seq"
    write_synthetic_mix(other, [SyntheticPhase("short", 64, 8), SyntheticPhase("long", 64, 4)],
                        vocab_size=256, stage="pre", curriculum="unit")
    _fails_fast(_args(setup, out)[:2] + ["--mix", str(other), "--out", str(out), *TINY],
                capsys, "mix seq_len 64 != curriculum seq_len 32")
    wrong_stage = tmp_path / "stage"
    write_synthetic_mix(wrong_stage, [SyntheticPhase("short", 32, 4)], vocab_size=256, stage="mid",
                        curriculum="unit")
    _fails_fast(_args(setup, out)[:2] + ["--mix", str(wrong_stage), "--out", str(out), *TINY],
                capsys, "stage 'mid' is not in curriculum 'unit'")
    _fails_fast(_args(setup, out) + ["--set", "vocab_size=128"], capsys,
                "tokenizer vocab_size 256 > model vocab_size 128")
    _fails_fast(_args(setup, out) + ["--mtp-depths", "long=3"], capsys,
                "--mtp-depths 'long=3': 3 outside 0..n_mtp=1")
    assert not out.exists()


def test_dry_run_full_curriculum(capsys, tmp_path):
    t0 = time.perf_counter()
    assert main(["--curriculum", "full", "--model", "full", "--dry-run", "--gpus-total", "4096",
                 "--ep", "8", "--pp", "8", "--out", str(tmp_path / "never"),
                 "--mtp-depths", "mid/mid2=3"]) == 0
    out = capsys.readouterr().out
    mid2 = next(line for line in out.splitlines() if line.startswith("mid/mid2"))
    assert "0.1×3" in mid2 and "131072" in mid2        # the final MTP phase: 3 depths
    assert "pretrain/" in out and "mid/" in out and "optimizer steps" in out and "= stage mid" in out
    assert "PP8" in out and "EP8" in out and "per GPU:" in out
    assert "196.9" in out or "197.8" in out          # the report's 196B/198B parameters
    assert not (tmp_path / "never").exists()
    assert time.perf_counter() - t0 < 60


def test_memory_plan_arithmetic_by_hand():
    """16 GPUs = PP2 x DP8, EP2 (expert-DP 4): dense parameters split over PP, experts over PP x EP;
    bf16 params (2 B), fp32 grads (4 B); master+Muon 8 B / master+AdamW 12 B over (expert-)DP."""
    from model.train import memory_plan

    counts = {"total": 1000, "expert": 800, "dense_matrix": 150, "adamw": 50}
    m = memory_plan(counts, gpus=16, ep=2, pp=2)
    assert (m["dp"], m["edp"]) == (8, 4)
    assert m["params"] == (100 + 200) * 2 and m["grads"] == (100 + 200) * 4
    assert m["optimizer"] == pytest.approx(75 * 8 / 8 + 25 * 12 / 8 + 200 * 8 / 4)
    assert m["total"] == pytest.approx(600 + 1200 + 512.5)


def test_scaled_and_partial_mixes_and_vocab_from_mix(setup, tmp_path):
    """A mix built with --scale walks the curriculum's schedule compressed; a mix holding only
    some phases of a stage trains those; --vocab-from-mix sizes the embedding from the mix."""
    from curricula import load_curriculum
    from model.train import build_run_phases
    from trainer_bridge.mix import open_mix

    cur = load_curriculum(setup / "cur.yaml")
    half = tmp_path / "half"
    write_synthetic_mix(half, [SyntheticPhase("short", 32, 24)], vocab_size=320, stage="pre",
                        curriculum="unit")
    man = json.loads((half / "manifest.json").read_text())
    man["scale"] = "1/2"
    (half / "manifest.json").write_text(json.dumps(man))
    (rp,) = build_run_phases(cur, [open_mix(half)])
    assert rp.key == "pre/short" and rp.scale == 2.0
    # the ramp switches at 512 curriculum tokens = 256 materialised tokens = 8 sequences
    assert [rp.plan.global_batch(t) for t in (0, 224, 256)] == [4, 4, 8]
    assert rp.plan.steps == 2 + 2          # 8 sequences at 4, then 16 at 8

    out = tmp_path / "run"
    argv = ["--curriculum", str(setup / "cur.yaml"), "--mix", str(half), "--out", str(out),
            *TINY[2:], *QUIET, "--vocab-from-mix", "--checkpoint-every", "0"]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["model"]["vocab_size"] == 320
    assert [r["phase"] for r in _metrics(out)] == ["pre/short"] * 4


def test_a_failed_save_leaves_the_previous_checkpoint_usable(tmp_path):
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.distributed import DistInfo
    from model.optim import build_optimizer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = build_optimizer(net, lr=0.01)
    info = DistInfo()
    save_checkpoint(tmp_path, 1, net, opt, {"step": 1}, info)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    # the tensors are written, then the trainer state cannot be serialised: the save dies
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 2, net, opt, {"step": 2, "bad": object()}, info)
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    assert list((tmp_path / "checkpoints").glob(".tmp-step_00000002"))     # debris, ignored
    st = load_checkpoint(latest_checkpoint(tmp_path), net, opt, info)
    assert st == {"step": 1}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    save_checkpoint(tmp_path, 3, net, opt, {"step": 3}, info, keep=1)    # cleans the debris
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000003"]
