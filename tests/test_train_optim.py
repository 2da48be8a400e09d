"""model.optim (Muon with Polar Express + AdamW) and model.monitor (spikes, expert health)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from model.config import get_config
from model.monitor import Monitor, SpikeDetector, expert_health
from model.optim import MuonAdamW, build_optimizer, moonlight_scale, orthogonalize, polar_express
from model.transformer import Step35Model


@pytest.mark.parametrize("shape", [(64, 32), (32, 96), (3, 48, 16)])
def test_polar_express_orthogonalises_matrices_and_expert_banks(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    u = polar_express(g, steps=6, dtype=torch.float32)
    assert u.shape == g.shape and u.dtype == g.dtype
    sv = torch.linalg.svdvals(u)                       # batched over the expert dim
    assert sv.min() > 0.95 and sv.max() < 1.05
    # batched == one matrix at a time (3-D experts are not mixed together)
    if g.ndim == 3:
        for e in range(g.shape[0]):
            torch.testing.assert_close(u[e], polar_express(g[e], 6, torch.float32), rtol=1e-4, atol=1e-5)


def test_split_orthogonalises_each_sub_matrix_with_its_own_scale():
    g = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    u = orthogonalize(g, (32, 8), steps=6, dtype=torch.float32)
    top, bottom = u[:32], u[32:]
    torch.testing.assert_close(top, polar_express(g[:32], 6, torch.float32) * moonlight_scale((32, 16)))
    torch.testing.assert_close(bottom, polar_express(g[32:], 6, torch.float32) * moonlight_scale((8, 16)))
    assert moonlight_scale((32, 16)) == pytest.approx(0.2 * math.sqrt(32))


def test_parameter_assignment_on_the_model():
    cfg = get_config("tiny", d_model=32, n_layers=2, vocab_size=64, head_dim=8, n_heads_full=2,
                     n_heads_swa=2, n_kv_heads=1, rotary_dim_full=4, rotary_dim_swa=8, n_experts=4,
                     ep_groups=2, n_mtp=1)
    model = Step35Model(cfg)
    opt = build_optimizer(model, lr=1e-3)
    groups = {g["kind"]: dict(zip(g["names"], g.get("splits") or [None] * len(g["names"])))
              for g in opt.param_groups}
    muon, adamw = groups["muon"], groups["adamw"]
    assert "embed.weight" in adamw and "lm_head.weight" in adamw
    assert all(n in adamw for n, p in model.named_parameters() if p.ndim == 1)
    assert "layers.1.ffn.experts.w1" in muon                         # 3-D expert bank
    assert "layers.1.ffn.router.weight" in muon                      # router on Muon (CODE)
    attn = model.layers[0].attn
    assert muon["layers.0.attn.wqkv.weight"] == tuple(attn.split)     # fused q|k|v|gate split
    assert muon["layers.0.attn.wo.weight"] is None
    # state exists for every parameter from the start (fixed checkpoint structure)
    assert len(opt.state) == sum(1 for _ in model.parameters())


def test_muon_adamw_step_reduces_a_regression_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    groups = [{"params": [model[0].weight, model[2].weight], "kind": "muon"},
              {"params": [model[0].bias, model[2].bias], "kind": "adamw"}]
    opt = MuonAdamW(groups, lr=0.02, weight_decay=0.0)
    x, y = torch.randn(64, 16), torch.randn(64, 4)
    losses = []
    for _ in range(30):
        loss = (model(x) - y).pow(2).mean()
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < 0.7 * losses[0]


def test_spike_detector_flags_outliers_and_ignores_noise():
    det = SpikeDetector(alpha=0.1, k=4.0, warmup=10)
    gen = torch.Generator().manual_seed(0)
    flags = [det.update(3.0 + 0.01 * float(torch.randn(1, generator=gen))) for _ in range(50)]
    assert not any(flags)
    assert det.update(5.0) is True
    assert det.update(3.0) is False                     # a spike does not poison the EMA
    assert det.update(float("nan")) is True
    assert det.n_spikes == 2


def test_expert_health_from_routing_stats_and_monitor_outputs(tmp_path):
    stats = {"layers": {1: {"load": [0.5, 0.5, 0.0, 0.0], "out_norm_max_over_median": 2.0}},
             "dead_experts": 2}
    h = expert_health(stats)
    assert h["experts/layer1/dead"] == 2 and h["experts/dead_total"] == 2
    assert h["experts/layer1/load_max_over_mean"] == pytest.approx(2.0)
    assert h["experts/layer1/out_norm_max_over_median"] == 2.0
    assert h["routing/dead_experts"] == 2.0
    mon = Monitor(tmp_path, total_steps=3, progress=False)
    for step in (1, 2, 3):
        mon.log({"step": step, "loss": 1.0 / step, "step_tokens": 64}, stats if step == 2 else None)
    mon.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and "experts/layer1/dead" in lines[1]
    assert lines[1]["experts/layer1/load"] == [0.5, 0.5, 0.0, 0.0]      # per-expert load
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # resuming at step 2 drops the abandoned step 3
    mon = Monitor(tmp_path, progress=False, tensorboard=False)
    mon.start(2)
    mon.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("scale", [1e-4, 1e3, 1e6])
def test_fp16_polar_express_path_is_stable_for_tiny_and_huge_gradients(scale):
    """The GPU path (fp16, as the report runs it) computed on CPU: the fp32 normalisation keeps
    tiny gradients, huge ones and ones whose entries exceed fp16's range (1e6 ≫ 65504) finite,
    and the result is still orthogonal."""
    g = torch.randn(2, 96, 48, generator=torch.Generator().manual_seed(2)) * scale
    u = polar_express(g, steps=6, dtype=torch.float16)
    assert u.dtype == torch.float32 and torch.isfinite(u).all()
    sv = torch.linalg.svdvals(u)
    assert sv.min() > 0.95 and sv.max() < 1.05
