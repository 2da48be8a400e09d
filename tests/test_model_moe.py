"""MoE routing against hand-checked cases: sigmoid top-k, unbiased combine weights, shared
expert, routed scaling, EP-group balance loss, loss-free bias update, clipping, freezing,
grouped-matmul backends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.moe import MoE, RoutingInfo, grouped_mm, swiglu


def _moe(**kw) -> MoE:
    cfg = ModelConfig(d_model=4, n_layers=2, n_dense_layers=1, n_experts=4, top_k=2, ep_groups=2,
                      expert_hidden=3, shared_hidden=3, routed_scaling=2.0, head_dim=4, n_heads_full=2,
                      n_heads_swa=2, n_kv_heads=1, rotary_dim_full=2, rotary_dim_swa=4, **kw)
    torch.manual_seed(0)
    moe = MoE(cfg, layer=1)
    for p in moe.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[:, 0] = torch.tensor([2.0, 1.0, 0.0, -1.0])  # logits = x0 · this
    return moe


def _expert(moe, e, x):
    ex = moe.experts
    return swiglu(x @ ex.w1[e].T, x @ ex.w3[e].T, ex.limit) @ ex.w2[e].T


def test_topk_selection_and_combine_weights_by_hand():
    moe = _moe()
    x = torch.tensor([[1.0, 0.3, -0.2, 0.5]])
    s = torch.sigmoid(torch.tensor([2.0, 1.0, 0.0, -1.0]))
    y, info = moe(x)
    w0, w1 = 2.0 * s[0] / (s[0] + s[1]), 2.0 * s[1] / (s[0] + s[1])  # experts 0 and 1, scaled ×2
    expect = moe.shared(x) + w0 * _expert(moe, 0, x) + w1 * _expert(moe, 1, x)
    torch.testing.assert_close(y, expect)
    assert info.counts.tolist() == [1, 1, 0, 0]
    # the bias moves selection to expert 2, but its weight comes from the *unbiased* score
    with torch.no_grad():
        moe.router_bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
    y2, info2 = moe(x)
    w2, w0b = 2.0 * s[2] / (s[2] + s[0]), 2.0 * s[0] / (s[2] + s[0])
    torch.testing.assert_close(y2, moe.shared(x) + w2 * _expert(moe, 2, x) + w0b * _expert(moe, 0, x))
    assert info2.counts.tolist() == [1, 0, 1, 0]
    # SteptronOss variant: weights from the biased scores
    moe.bias_in_weights = True
    y3, _ = moe(x)
    b = s + torch.tensor([0.0, 0.0, 5.0, 0.0])
    torch.testing.assert_close(y3, moe.shared(x) + 2 * b[2] / (b[2] + b[0]) * _expert(moe, 2, x)
                               + 2 * b[0] / (b[2] + b[0]) * _expert(moe, 0, x))


def test_bias_is_not_in_the_gradient_path():
    moe = _moe()
    with torch.no_grad():
        moe.router_bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
    assert "router_bias" not in dict(moe.named_parameters())
    x = torch.randn(6, 4)
    y, _ = moe(x)
    y.pow(2).sum().backward()
    g = moe.router.weight.grad.clone()
    # same selection, weights recomputed by hand from the unbiased scores: identical gradient
    moe.zero_grad()
    s = torch.sigmoid(x @ moe.router.weight.T)
    sel = (s.detach() + moe.router_bias).topk(2, dim=-1).indices
    w = s.gather(1, sel)
    w = w / w.sum(-1, keepdim=True) * 2.0
    y_hand = moe.shared(x) + sum(w[:, j:j + 1] * torch.stack([_expert(moe, int(e), x[t:t + 1])[0]
                                                               for t, e in enumerate(sel[:, j])]) for j in range(2))
    torch.testing.assert_close(y_hand, y.detach())
    y_hand.pow(2).sum().backward()
    torch.testing.assert_close(moe.router.weight.grad, g)


def test_ep_group_balance_loss_by_hand():
    moe = _moe()
    moe.top_k = 1
    # p_t normalised: [.25,.25,.25,.25] and [.75,.25,0,0] → p_e = [.5,.25,.125,.125]
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 0.0, 0.0]])
    counts = torch.tensor([2, 0, 0, 0])  # both tokens to expert 0 → f = [1,0,0,0]
    # groups {0,1}, {2,3}: f_g = [1, 0], p_g = [.75, .25] → L = 2 · (1·.75) = 1.5
    torch.testing.assert_close(moe.ep_balance_loss(scores, counts), torch.tensor(1.5))
    # perfectly balanced routing and uniform probabilities → 1
    torch.testing.assert_close(moe.ep_balance_loss(torch.ones(4, 4), torch.tensor([1, 1, 1, 1])), torch.tensor(1.0))
    # and its gradient reaches the router weight
    moe.top_k = 2
    _, info = moe(torch.randn(8, 4))
    info.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_loss_free_bias_update_sign_rule_and_accumulation():
    moe = _moe()
    moe.train()
    for counts in ([2, 1, 0, 0], [1, 0, 0, 0]):  # accumulated loads [3,1,0,0], mean 1
        moe.record(RoutingInfo(torch.tensor(0.0), torch.tensor(counts), torch.zeros(4)))
    moe.update_bias(0.01)
    torch.testing.assert_close(moe.router_bias, torch.tensor([-0.01, 0.0, 0.01, 0.01]))
    assert moe.bias_load.sum() == 0  # reset after the update
    moe.freeze(True)
    moe.record(RoutingInfo(torch.tensor(0.0), torch.tensor([4, 0, 0, 0]), torch.zeros(4)))
    moe.update_bias(0.01)
    torch.testing.assert_close(moe.router_bias, torch.tensor([-0.01, 0.0, 0.01, 0.01]))
    assert not moe.router.weight.requires_grad


def test_bias_update_changes_selection():
    moe = _moe()
    moe.train()
    x = torch.randn(32, 4).abs()  # x0 > 0 → experts 0 and 1 always win without bias
    _, info = moe(x)
    assert info.counts.tolist()[2:] == [0, 0]
    for _ in range(40):
        _, info = moe(x)
        moe.record(info)
        moe.update_bias(0.2)
    _, info = moe(x)
    assert info.counts[2:].sum() > 0  # under-loaded experts now get tokens


def test_swiglu_clipping_by_hand():
    gate = torch.tensor([10.0, -3.0, 1.0])
    up = torch.tensor([-20.0, 5.0, 2.0])
    out = swiglu(gate, up, 7.0)
    expect = torch.stack([torch.tensor(7.0) * -7.0, F.silu(torch.tensor(-3.0)) * 5.0, F.silu(torch.tensor(1.0)) * 2.0])
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(swiglu(gate, up, None), F.silu(gate) * up)


def test_grouped_matmul_backends_agree_with_a_loop():
    torch.manual_seed(1)
    E, N, d, h = 5, 23, 8, 12  # 16-byte aligned rows, as torch._grouped_mm needs
    counts = torch.tensor([4, 0, 9, 3, 7])
    x = torch.randn(N, d, requires_grad=True)
    w = torch.randn(E, h, d, requires_grad=True)
    starts = [0] + counts.cumsum(0).tolist()
    ref = torch.cat([x[starts[e]:starts[e + 1]] @ w[e].T for e in range(E)])
    gx, gw = torch.autograd.grad(ref.pow(2).sum(), (x, w))
    for backend in ("grouped_mm", "bmm"):
        out = grouped_mm(x, w, counts, backend)
        torch.testing.assert_close(out, ref)
        # the .sum() terms send an expanded (stride-0) gradient, which _grouped_mm alone rejects
        ox, ow = torch.autograd.grad(out.sum() + out.pow(2).sum() - out.sum(), (x, w))
        torch.testing.assert_close(ox, gx)
        torch.testing.assert_close(ow, gw)


def test_routing_stats_dead_experts_and_norm_ratios():
    moe = _moe()
    with torch.no_grad():
        moe.router_bias.copy_(torch.tensor([0.0, 0.0, 0.0, -10.0]))  # expert 3 never chosen
    for _ in range(3):
        _, info = moe(torch.randn(16, 4))
        moe.record(info)
    st = moe.stats()
    assert st["dead_experts"] == 1 and st["load"][3] == 0 and abs(sum(st["load"]) - 1) < 1e-6
    assert st["tokens"] == 48
    assert st["out_norm_max_over_median"] >= 1 >= st["out_norm_min_over_median"] > 0
    assert moe.stats()["dead_experts"] == 4  # window was reset


def test_global_balance_window_accumulates_micro_batches():
    """set_balance_scope("global"): micro-batch i's EP-group loss uses the load fractions of
    micro-batches 1..i of the step (with its own p), until reset_balance_window()."""
    from model.config import get_config
    from model.transformer import Step35Model

    torch.manual_seed(0)
    cfg = get_config("tiny", vocab_size=64)
    model = Step35Model(cfg).train()
    model.set_balance_scope("global")
    seen: list = []
    for m in model.moe_layers():
        m.register_forward_hook(lambda mod, inp, out: seen.append((mod, out[1])))
    x = torch.randint(0, 64, (4, 24))
    aux_a = model(x[:2]).aux_loss
    info_a = list(seen)
    seen.clear()
    aux_b = model(x[2:]).aux_loss
    info_b = list(seen)

    def expect(infos, extra=None):
        tot = 0.0
        for i, (moe, info) in enumerate(infos):
            c = info.counts + (extra[i][1].counts if extra else 0)
            tot = tot + moe.group_loss(c.double() / c.sum(), info.probs)
        return tot

    torch.testing.assert_close(aux_a, expect(info_a))
    torch.testing.assert_close(aux_b, expect(info_b, info_a))
    # the second micro-batch does not see its own loads alone: that would be the micro loss
    assert not torch.allclose(aux_b, torch.stack([i.aux_loss for _, i in info_b]).sum())
    for (moe, ia), (_, ib) in zip(info_a, info_b):
        assert torch.equal(moe.balance_counts, ia.counts + ib.counts)
    model.reset_balance_window()
    assert all(int(m.balance_counts.sum()) == 0 for m in model.moe_layers())
    # evaluation (no grad) is always per batch, and never touches the window
    seen.clear()
    with torch.no_grad():
        aux_eval = model(x[2:]).aux_loss
    torch.testing.assert_close(aux_eval, torch.stack([i.aux_loss for _, i in seen]).sum())
    assert all(int(m.balance_counts.sum()) == 0 for m in model.moe_layers())
    with pytest.raises(ValueError, match="micro|global"):
        model.set_balance_scope("batch")
