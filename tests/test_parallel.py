"""Parallel layouts (model/parallel): the layout arithmetic and its errors before compute,
expert-parallel dispatch edge cases against the unsharded MoE (2 gloo processes), ``--ep 2``
training against 1 process, and checkpoints resumed under another layout.

Multi-process tests run on CPU with gloo, one thread per process, fixed seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from model.config import ModelConfig, get_config
from model.parallel.layout import LayoutError, ParallelLayout, resolve_layout, stage_layers, validate_layout
from model.train import main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_train import QUIET, TINY, _args, setup  # noqa: E402,F401  (the same tiny curriculum, model, mix fixture)


# ------------------------------------------------------------------------------------------
# layout arithmetic and errors
# ------------------------------------------------------------------------------------------
def test_layout_resolution_and_mesh_arithmetic():
    lay = resolve_layout(4096, ep=8, pp=8)
    assert (lay.dp, lay.edp, lay.cp, lay.world) == (512, 64, 1, 4096)
    lay = resolve_layout(16, dp=4, ep=2, pp=2, cp=2)
    assert (lay.dp, lay.edp, lay.world) == (4, 2, 16)
    assert resolve_layout(1) == ParallelLayout()
    # uneven stages: the ends (embedding / head + MTP) get fewer blocks
    assert [len(r) for r in stage_layers(45, 8)] == [5, 6, 6, 6, 6, 6, 5, 5]
    assert [len(r) for r in stage_layers(5, 2)] == [3, 2]
    assert sum(len(r) for r in stage_layers(45, 8)) == 45


@pytest.mark.parametrize("kw, world, match", [
    (dict(dp=2, pp=2), 6, "= 4 ranks, but the world size is 6"),
    (dict(pp=4), 6, "not divisible by pp·cp·tp"),
    (dict(dp=4, ep=3), 4, "--ep 3 must divide --dp 4"),
    (dict(dp=0, ep=-1), 4, "must be ≥ 1"),
])
def test_bad_layouts(kw, world, match):
    with pytest.raises(LayoutError, match=match):
        resolve_layout(world, **kw)


def test_layout_against_model_and_curriculum():
    cfg = get_config("tiny")  # 8 experts, 5 layers
    with pytest.raises(LayoutError, match="8 experts per MoE layer, not divisible by 3"):
        validate_layout(ParallelLayout(dp=3, ep=3), cfg)
    with pytest.raises(LayoutError, match="more pipeline stages than the model's 5 layers"):
        validate_layout(ParallelLayout(pp=6), cfg)
    with pytest.raises(LayoutError, match="--cp 3: does not divide the curriculum's seq_len 32"):
        validate_layout(ParallelLayout(cp=3), cfg, [32, 64])
    validate_layout(ParallelLayout(dp=8, ep=8, pp=5, cp=2), cfg, [32, 64])


@pytest.mark.parametrize("world, flags, match", [
    ("6", ["--pp", "3"], "more pipeline stages than the model's 2 layers"),
    ("3", ["--ep", "3"], "4 experts per MoE layer, not divisible by 3"),
    ("4", ["--dp", "2", "--ep", "2"], "= 2 ranks, but the world size is 4"),
    ("3", ["--cp", "3"], "--cp 3: does not divide the curriculum's seq_len 32"),
    ("2", ["--tp", "2"], "--tp 2: tensor parallelism is dry-run arithmetic only"),
])
def test_train_rejects_bad_layouts_before_any_process_group(setup, tmp_path, monkeypatch, capsys,
                                                            world, flags, match):
    """WORLD_SIZE as torchrun would set it: the error comes before init_process_group (which
    would block waiting for the other ranks) and before the model exists."""
    monkeypatch.setenv("WORLD_SIZE", world)
    out = tmp_path / "run"
    assert main(_args(setup, out, *flags)) == 2
    err = capsys.readouterr().err
    assert "parallel layout" in err and match in err, err
    assert not out.exists()
    assert not torch.distributed.is_initialized()


def test_dry_run_uses_the_same_layout_flags(capsys, tmp_path):
    assert main(["--curriculum", "full", "--model", "full", "--dry-run", "--gpus-total", "4096",
                 "--ep", "8", "--pp", "8", "--cp", "2", "--out", str(tmp_path / "never")]) == 0
    out = capsys.readouterr().out
    assert "PP8 x TP1 x DP256 x CP2 (EP8 inside DP, expert-DP 32)" in out
    assert "this trainer" in out
    assert main(["--curriculum", "full", "--model", "full", "--dry-run", "--gpus-total", "4096",
                 "--ep", "7"]) == 2
    assert "--ep 7 must divide --dp 512" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# expert-parallel dispatch, 2 processes, against the unsharded MoE
# ------------------------------------------------------------------------------------------
def _dispatch_worker(rank: int, world: int, init: str, result_dir: str) -> None:
    import torch.distributed as dist

    from model.moe import MoE
    from model.parallel.expert import apply_expert_parallel, reduce_expert_grads

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    cfg = ModelConfig(d_model=8, n_layers=2, n_dense_layers=1, n_experts=4, top_k=2, ep_groups=2,
                      expert_hidden=8, shared_hidden=8, routed_scaling=2.0, head_dim=4, n_heads_full=2,
                      n_heads_swa=2, n_kv_heads=1, rotary_dim_full=2, rotary_dim_swa=4)
    out = {}
    cases = {
        # experts 2, 3 (rank 1's) never chosen: rank 1 receives zero tokens
        "all_to_rank0": torch.tensor([0.0, 0.0, -9.0, -9.0]),
        # expert 1 never chosen: rank 0 receives zero tokens for one of its experts
        "idle_expert": torch.tensor([0.0, -9.0, 0.0, 0.0]),
        "free": torch.zeros(4),
    }
    for case, bias in cases.items():
        torch.manual_seed(0)
        ref = MoE(cfg, layer=1)
        for p in ref.parameters():
            torch.nn.init.normal_(p, 0, 0.5)
        ref.router_bias.copy_(bias)
        ep = MoE(cfg, layer=1)
        ep.load_state_dict(ref.state_dict())
        holder = torch.nn.Module()
        holder.moe = ep
        apply_expert_parallel(holder, None, 2, rank)
        g = torch.Generator().manual_seed(100 + rank)   # each rank its own tokens
        x = torch.randn(2, 5 + 2 * rank, 8, generator=g)
        y_ref, info_ref = ref(x)
        y_ep, info_ep = ep(x)
        (y_ref.square().sum() + info_ref.aux_loss).backward()
        (y_ep.square().sum() + info_ep.aux_loss).backward()
        reduce_expert_grads([ep.experts.w1, ep.experts.w3, ep.experts.w2], None, 1)
        # the reference's expert gradient on this rank's slice, summed over both ranks' tokens
        lo, hi = ep.experts.ep_range
        ref_g = torch.cat([getattr(ref.experts, n).grad.clone() for n in ("w1", "w3", "w2")], dim=1)
        dist.all_reduce(ref_g)
        ref_g = ref_g[lo:hi].flatten()
        ep_g = torch.cat([getattr(ep.experts, n).grad for n in ("w1", "w3", "w2")], dim=1).flatten()
        out[case] = {
            "y": (y_ep - y_ref).abs().max().item(),
            "counts_equal": info_ep.counts.tolist() == info_ref.counts.tolist(),
            "counts": info_ep.counts.tolist(),
            "norm": (info_ep.out_norm_sum - info_ref.out_norm_sum).abs().max().item(),
            # relative: the expert gradients here are O(1e3)
            "expert_grad": (ep_g - ref_g).abs().max().item() / ref_g.abs().max().clamp(min=1).item(),
            "router_grad": (ep.router.weight.grad - ref.router.weight.grad).abs().max().item(),
            "shared_grad": (ep.shared.w1.weight.grad - ref.shared.w1.weight.grad).abs().max().item(),
            "received": ep.expert_dispatch.take_received(),
        }
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_expert_parallel_dispatch_matches_the_unsharded_moe(tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    mp.spawn(_dispatch_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in res:
        for case, v in r.items():
            assert v["counts_equal"], (case, v)
            for k in ("y", "norm", "expert_grad", "router_grad", "shared_grad"):
                assert v[k] < 1e-5, (case, k, v[k])
    # the edge cases really happened
    assert res[1]["all_to_rank0"]["received"] == 0          # rank 1: nothing to compute
    assert res[0]["all_to_rank0"]["received"] == 2 * (10 + 14)   # every (token, expert) pair
    assert all(r["idle_expert"]["counts"][1] == 0 for r in res)
    assert res[0]["free"]["received"] + res[1]["free"]["received"] == 2 * (10 + 14)


# ------------------------------------------------------------------------------------------
# --ep 2 end to end against one process, and resume across layouts
# ------------------------------------------------------------------------------------------
def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _torchrun(n: int, argv: list[str], timeout: int = 280) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "-m", "model.train", *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ep2_matches_one_process_and_resumes_across_layouts(setup, tmp_path):
    """12 steps of the unit curriculum: a batch ramp and a phase switch (seq_len 32 → 64,
    RoPE θ change, router frozen in the second phase so no bias updates and no balance loss
    there; bias updates at rate 0.01 in the first).  Same micro-batch composition on both sides
    (2 sequences per forward) with the per-forward balance loss, so everything is additive and
    the runs agree to float round-off.  Then: the EP checkpoint (experts stored as global
    tensors) resumes in one process, and a 1-process checkpoint resumes under --ep 2, each
    continuing the uninterrupted curve."""
    common = ["--checkpoint-every", "0", "--ep-balance", "micro", "--micro-batch-tokens", "64",
              "--routing-every", "4"]
    one = tmp_path / "one"
    assert main(_args(setup, one, *common)) == 0
    ep2 = tmp_path / "ep2"
    _torchrun(2, _args(setup, ep2, *common, "--ep", "2", "--max-steps", "6"))
    # layout change ep2 → one process, mid-phase
    assert main(_args(setup, ep2, *common, "--resume")) == 0
    # layout change one process → ep2, just before the phase switch
    one6 = tmp_path / "one6"
    assert main(_args(setup, one6, *common, "--max-steps", "8")) == 0
    _torchrun(2, _args(setup, one6, *common, "--ep", "2", "--resume"))

    a, b, c = _metrics(one), _metrics(ep2), _metrics(one6)
    assert [r["step"] for r in b] == [r["step"] for r in c] == list(range(1, 13))
    assert [r["phase"] for r in b] == ["pre/short"] * 8 + ["pre/long"] * 4
    assert [r["router_frozen"] for r in b] == [False] * 8 + [True] * 4
    for x, y, z in zip(a, b, c):
        for other in (y, z):
            assert other["loss"] == pytest.approx(x["loss"], rel=2e-5, abs=1e-6), (x["step"], x["loss"], other["loss"])
            assert other["aux_loss"] == pytest.approx(x["aux_loss"], rel=1e-4)
    # EP-rank load metric on the EP steps (1..6 of ep2, 9..12 of one6), none on 1-process steps
    assert all("ep/max_over_mean" in r and r["ep/max_over_mean"] >= 1.0 for r in b[:6] + c[8:])
    assert not any("ep/max_over_mean" in r for r in a)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pp2_matches_one_process_and_resumes_in_one(setup, tmp_path):
    """--pp 2 (1F1B, torch.distributed.pipelining; stage 0 = embedding + block 0, stage 1 =
    block 1 + norm + LM head + MTP) over the same 12 steps: micro-batches 2 sequences, the
    schedule rebuilt when the batch ramps (2 → 4 micro-batches) and when seq_len switches; the
    balance loss of stage 0's MoE layer reaches the loss through the activation gradient.  The
    pipelined checkpoint (each stage saves its own layers under their whole-model names) then
    resumes in one process (pp2 → pp1)."""
    common = ["--checkpoint-every", "0", "--ep-balance", "micro", "--micro-batch-tokens", "64"]
    one = tmp_path / "one"
    assert main(_args(setup, one, *common)) == 0
    pp2 = tmp_path / "pp2"
    _torchrun(2, _args(setup, pp2, *common, "--pp", "2", "--max-steps", "10"))
    assert main(_args(setup, pp2, *common, "--resume")) == 0
    a, b = _metrics(one), _metrics(pp2)
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [r["grad_accum"] for r in b] == [2] * 4 + [4] * 4 + [4] * 4
    for x, y in zip(a, b):
        for k in ("loss", "mtp_loss", "total_loss"):
            assert y[k] == pytest.approx(x[k], rel=2e-5, abs=1e-6), (x["step"], k, x[k], y[k])
        assert y["aux_loss"] == pytest.approx(x["aux_loss"], rel=1e-4)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dp2_x_ep2_on_four_processes_resumes_as_dp4(setup, tmp_path):
    """--dp 4 --ep 2 (two expert-DP replicas of two EP ranks: expert grads summed over the
    replicas) == 1 process, and its checkpoint resumes under plain --dp 4 (FSDP2 over 4 ranks,
    every expert on every rank) mid-phase, continuing the same curve.  One sequence per forward
    on both sides."""
    common = ["--checkpoint-every", "0", "--ep-balance", "micro", "--micro-batch-tokens", "32"]
    one = tmp_path / "one"
    assert main(_args(setup, one, *common)) == 0
    run = tmp_path / "dpep"
    _torchrun(4, _args(setup, run, *common, "--dp", "4", "--ep", "2", "--max-steps", "6"), timeout=600)
    _torchrun(4, _args(setup, run, *common, "--dp", "4", "--resume"), timeout=600)
    a, b = _metrics(one), _metrics(run)
    assert [r["step"] for r in b] == list(range(1, 13))
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=2e-5, abs=1e-6), (x["step"], x["loss"], y["loss"])
    assert all("ep/max_over_mean" in r for r in b[:6]) and not any("ep/max_over_mean" in r for r in b[6:])


ONE_MICRO_BATCH = ["--checkpoint-every", "0", "--micro-batch-tokens", "256"]  # whole batch per forward


@pytest.fixture(scope="module")
def one_micro_batch_run(setup):
    """The 1-process reference with one micro-batch per step (shared by the CP tests)."""
    out = setup / "one_mb"
    assert main(_args(setup, out, *ONE_MICRO_BATCH)) == 0
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cp2_matches_one_process(setup, one_micro_batch_run, tmp_path):
    """--cp 2: each rank holds half of every sequence (K/V all-gathered, masks of the chunk's
    queries against the whole sequence: causal, window, documents; positions from the whole
    sequence; MTP inputs and targets shifted across the chunk boundary).  One micro-batch per
    step on both sides and the global balance loss, so the EP-group loss is exact too; each MTP
    depth's loss is weighted by the rank's share of that depth's global targets."""
    cp2 = tmp_path / "cp2"
    _torchrun(2, _args(setup, cp2, *ONE_MICRO_BATCH, "--cp", "2"))
    a, b = _metrics(one_micro_batch_run), _metrics(cp2)
    assert [r["step"] for r in b] == list(range(1, 13)) and b[-1]["seq_len"] == 64
    for x, y in zip(a, b):
        for k in ("loss", "mtp_loss"):
            assert y[k] == pytest.approx(x[k], rel=2e-5, abs=1e-6), (x["step"], k, x[k], y[k])
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
    for x, y in zip(a[:8], b[:8]):   # trained router: the balance loss is in the loss, global f
        assert y["aux_loss"] == pytest.approx(x["aux_loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pp2_x_cp2_on_four_processes_matches_one_process_and_resumes_in_one(setup, tmp_path):
    """--pp 2 --cp 2 (4 processes): each pipeline stage's attention is context-parallel over its
    CP pair and the stages exchange only their CP rank's chunk ``[B, T/2, d]`` of the hidden
    state (and of the MTP embeddings).  Same 12 steps as the other layouts (batch ramp → 4
    micro-batches in 1F1B, phase switch to seq_len 64, RoPE θ change, bias updates, frozen
    router), 2 sequences per micro-batch and the global balance loss (counts all-reduced over
    each stage's DP × CP ranks, so the EP-group loss is exact too).  Its checkpoint, saved at
    step 10, resumes in one process (pp2 × cp2 → 1)."""
    common = ["--checkpoint-every", "0", "--micro-batch-tokens", "64"]
    one = tmp_path / "one"
    assert main(_args(setup, one, *common)) == 0
    run = tmp_path / "ppcp"
    _torchrun(4, _args(setup, run, *common, "--pp", "2", "--cp", "2", "--max-steps", "10"))
    assert main(_args(setup, run, *common, "--resume")) == 0
    a, b = _metrics(one), _metrics(run)
    assert [r["step"] for r in b] == list(range(1, 13)) and b[-1]["seq_len"] == 64
    assert [r["grad_accum"] for r in b] == [2] * 4 + [4] * 8
    for x, y in zip(a, b):
        for k in ("loss", "mtp_loss", "total_loss"):
            assert y[k] == pytest.approx(x[k], rel=2e-5, abs=1e-6), (x["step"], k, x[k], y[k])
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
    for x, y in zip(a[:8], b[:8]):   # trained router: the balance loss is in the loss, global f
        assert y["aux_loss"] == pytest.approx(x["aux_loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pp2_dp2_ep2_cp2_on_eight_processes_matches_one_process(setup, one_micro_batch_run, tmp_path):
    """Every dimension at once (8 processes, mesh pp2 × edp1 × ep2 × cp2): two pipeline
    stages, each with its experts split over an EP pair that reads different sequences, each of
    those sequences split over a CP pair.  One micro-batch per rank per step and the global
    balance loss (counts over each stage's DP × CP ranks), so the 1-process reference with one
    micro-batch per step is matched exactly, phase switch included."""
    run = tmp_path / "all"
    _torchrun(8, _args(setup, run, *ONE_MICRO_BATCH, "--pp", "2", "--dp", "2", "--ep", "2", "--cp", "2"),
              timeout=500)
    a, b = _metrics(one_micro_batch_run), _metrics(run)
    assert [r["step"] for r in b] == list(range(1, 13)) and b[-1]["seq_len"] == 64
    for x, y in zip(a, b):
        for k in ("loss", "mtp_loss", "total_loss"):
            assert y[k] == pytest.approx(x[k], rel=2e-5, abs=1e-6), (x["step"], k, x[k], y[k])
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
    for x, y in zip(a[:8], b[:8]):
        assert y["aux_loss"] == pytest.approx(x["aux_loss"], rel=1e-5)
    assert all(r["ep/max_over_mean"] >= 1.0 for r in b)


def test_context_parallel_masks_match_the_reference_mask():
    """The chunk masks are the rows of the whole-sequence mask (causal ∧ window ∧ document)."""
    from model.attention import reference_mask
    from model.config import FULL, SWA
    from model.parallel.context import ContextParallel

    docs = torch.tensor([[0] * 5 + [1] * 9 + [2] * 2, [0] * 16])
    for window in (3, 9):
        for rank in range(4):
            cp = ContextParallel(None, 4, rank)
            m = cp.build_masks(2, 16, window, docs, "cpu")
            rows = slice(rank * 4, rank * 4 + 4)
            assert torch.equal(m[FULL].mask[:, 0], reference_mask(16, None, docs)[:, rows])
            ref = reference_mask(16, window, docs)[:, rows]
            if window - 1 <= 4:   # halo of W-1 keys from the previous rank (negative = padding)
                h = window - 1
                padded = torch.cat([torch.zeros(2, 4, 16, dtype=torch.bool), ref], dim=2)
                ref = padded[:, :, 16 + rank * 4 - h: 16 + rank * 4 + 4]
                assert m[SWA].halo == h
            else:                 # window wider than a chunk: all keys
                assert m[SWA].halo == 0
            assert torch.equal(m[SWA].mask[:, 0], ref), (window, rank)
