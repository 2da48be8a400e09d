"""The model API the trainer relies on (model → model.train contract), on the tiny config."""

from __future__ import annotations

import pytest
import torch

from model.config import FULL, SWA, ModelConfig, get_config, layout
from model.transformer import ModelOutput, Step35Model


def _batch(cfg, B=2, T=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    labels = x.roll(-1, dims=1)
    labels[:, -1] = -100
    docs = torch.zeros(B, T, dtype=torch.long)
    docs[:, T // 3:] = 1
    return x, labels, docs


def test_named_configs_and_layout():
    for name in ("tiny", "small", "proxy", "full"):
        cfg = get_config(name)
        assert len(cfg.layer_types) == cfg.n_layers and cfg.layer_types[0] == FULL
    full = get_config("full")
    assert full.layer_types == (FULL,) + (SWA, SWA, SWA, FULL) * 11
    assert sum(t == FULL for t in full.layer_types) == 12 and full.n_moe_layers == 42
    assert get_config("tiny", vocab_size=777).vocab_size == 777
    assert layout(5, "S1F1") == (FULL, SWA, FULL, SWA, FULL)
    with pytest.raises(ValueError, match="unknown model config"):
        get_config("huge")
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(n_heads_full=5, n_kv_heads=2)
    assert ModelConfig.from_dict(full.to_dict()) == full


def test_forward_contract_and_loss_composition():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = Step35Model(cfg)
    x, labels, docs = _batch(cfg)
    out = model(x, labels=labels, document_ids=docs, mtp_weight=0.3)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 96, cfg.vocab_size)
    # an untrained model predicts ~uniformly
    assert abs(out.lm_loss.item() - torch.log(torch.tensor(float(cfg.vocab_size))).item()) < 0.5
    expect = out.lm_loss + 0.3 * out.mtp_loss + cfg.ep_loss_coef * out.aux_loss
    torch.testing.assert_close(out.loss, expect)
    # no labels → no loss; mtp_weight 0 → heads skipped
    out2 = model(x)
    assert out2.loss is None and out2.logits.shape == out.logits.shape
    out3 = model(x, labels=labels, document_ids=docs)
    assert out3.mtp_loss is None
    model.set_ep_loss_coef(0.0)
    out4 = model(x, labels=labels, document_ids=docs)
    torch.testing.assert_close(out4.loss, out4.lm_loss)


def test_controls_rope_freeze_bias_stats():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = Step35Model(cfg)
    x, labels, docs = _batch(cfg)
    base = model(x).logits
    model.set_rope_theta(1e6, 1e4)
    assert not torch.allclose(model(x).logits, base)  # full-layer θ changed the output
    model.set_rope_theta(1e4, 1e4)
    torch.testing.assert_close(model(x).logits, base)
    model.train()
    model(x, labels=labels)
    model.update_router_bias(0.01)
    biases = [m.router_bias.clone() for m in model.moe_layers()]
    assert any(b.abs().sum() > 0 for b in biases)
    stats = model.routing_stats()
    assert set(stats["layers"]) == {i for i in range(cfg.n_layers) if cfg.is_moe(i)}
    layer = next(iter(stats["layers"].values()))
    assert len(layer["load"]) == cfg.n_experts and abs(sum(layer["load"]) - 1) < 1e-5
    model.freeze_router(True)
    model(x, labels=labels)
    model.update_router_bias(0.01)
    for m, b in zip(model.moe_layers(), biases):
        assert torch.equal(m.router_bias, b) and not m.router.weight.requires_grad
    model.to(torch.bfloat16)  # balancing buffers stay fp32 (1e-3 steps survive)
    assert all(m.router_bias.dtype == torch.float32 for m in model.moe_layers())


def test_bf16_autocast_forward_backward():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = Step35Model(cfg)
    x, labels, docs = _batch(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, labels=labels, document_ids=docs, mtp_weight=0.3)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith(("mtp.1.", "mtp.2.")))


def test_meta_build_then_materialise_matches_a_plain_build():
    cfg = get_config("tiny")
    with torch.device("meta"):
        model = Step35Model(cfg)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    torch.manual_seed(3)
    model.init_weights()
    plain = Step35Model(cfg)
    torch.manual_seed(3)
    plain.init_weights()  # same seed, same draws: the meta path initialises exactly like a plain build
    for (n, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)
    assert all(m.stat_load.sum() == 0 for m in model.moe_layers())
