"""Zero-centred RMSNorm, MTP heads and losses, gradient flow, and a tiny model that overfits."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from model.config import get_config
from model.mtp import mtp_targets, shift_left
from model.norm import ZeroCenteredRMSNorm
from model.transformer import Step35Model


def test_zero_centred_rmsnorm_by_hand():
    norm = ZeroCenteredRMSNorm(2, eps=1e-5)
    assert norm.weight.tolist() == [0.0, 0.0]  # init 0 → scale 1
    x = torch.tensor([[3.0, 4.0]])
    rms = math.sqrt((9 + 16) / 2 + 1e-5)
    torch.testing.assert_close(norm(x), torch.tensor([[3 / rms, 4 / rms]]))
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, -0.5]))  # scale (1 + w) = [2, 0.5]
    torch.testing.assert_close(norm(x), torch.tensor([[6 / rms, 2 / rms]]))
    # computed in fp32, returned in the input dtype
    xb = torch.tensor([[3.0, 4.0]], dtype=torch.bfloat16)
    assert norm(xb).dtype == torch.bfloat16
    torch.testing.assert_close(norm(xb).float(), torch.tensor([[6 / rms, 2 / rms]]), atol=2e-2, rtol=0)


def test_mtp_targets_shift_and_respect_documents():
    labels = torch.tensor([[10, 11, 12, 13, 14]])
    docs = torch.tensor([[0, 0, 0, 1, 1]])
    assert mtp_targets(labels, 1, docs).tolist() == [[11, 12, -100, 14, -100]]
    assert mtp_targets(labels, 2, docs).tolist() == [[12, -100, -100, -100, -100]]
    assert mtp_targets(labels, 1, None).tolist() == [[11, 12, 13, 14, -100]]
    assert shift_left(labels, 2, 0).tolist() == [[12, 13, 14, 0, 0]]


def _data(cfg, B=2, T=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g)
    docs = torch.zeros(B, T, dtype=torch.long)
    docs[:, 20:] = 1
    return x[:, :-1], x[:, 1:].clone(), docs


def test_mtp_loss_matches_hand_chain_and_weights():
    torch.manual_seed(0)
    cfg = get_config("tiny", mtp_active_depths=2, mtp_loss_weights=(1.0, 0.5, 0.25))
    model = Step35Model(cfg).eval()
    x, labels, docs = _data(cfg)
    out = model(x, labels=labels, document_ids=docs, mtp_weight=0.3)
    assert len(out.mtp_losses) == 2
    # recompute by hand: backbone hidden state captured before the final norm
    hidden = {}
    model.norm.register_forward_hook(lambda m, i, o: hidden.update(h=i[0]))
    model(x, document_ids=docs)
    from model.attention import RopeCache, build_masks, positions_from_documents

    rope = RopeCache(positions_from_documents(docs))
    masks = build_masks("sdpa", 2, 48, cfg.window, docs, torch.device("cpu"))
    h, losses = hidden["h"], []
    for k in (1, 2):
        head = model.mtp[k - 1]
        # released order: [enorm(embedding of x_{t+k}) ; hnorm(h)], then the head's own output layer
        inp = head.proj(torch.cat([head.e_norm(model.embed(shift_left(x, k, 0))), head.h_norm(h)], -1))
        h, _ = head.block(inp, rope, masks, "sdpa")
        logits = head.output(head.out_norm(h))
        tgt = mtp_targets(labels, k, docs)
        losses.append(F.cross_entropy(logits.reshape(-1, cfg.vocab_size), tgt.reshape(-1), ignore_index=-100))
    torch.testing.assert_close(out.mtp_losses[0], losses[0])
    torch.testing.assert_close(out.mtp_losses[1], losses[1])
    torch.testing.assert_close(out.mtp_loss, (losses[0] + 0.5 * losses[1]) / 1.5)


def test_gradients_reach_every_learning_parameter_and_not_the_frozen_router():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = Step35Model(cfg).train()
    with torch.no_grad():  # zero-init norms give zero grads to nothing, but make the test strict
        for m in model.modules():
            if isinstance(m, ZeroCenteredRMSNorm):
                m.weight.normal_(0, 0.1)
    x, labels, docs = _data(cfg, T=64)
    out = model(x, labels=labels, document_ids=docs, mtp_weight=0.3)
    out.loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("mtp.1.", "mtp.2.")):
            assert p.grad is None, f"{name}: inactive MTP depth got a gradient"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient"
    for moe in model.moe_layers():  # every expert that got a token learns
        routed = moe.stat_load > 0
        assert (moe.experts.w1.grad.flatten(1).abs().sum(1) > 0).eq(routed).all()
    # all three depths train after cloning; the frozen router learns nothing
    model.zero_grad(set_to_none=True)
    model.clone_mtp_heads()
    torch.testing.assert_close(model.mtp[2].proj.weight, model.mtp[0].proj.weight)
    model.set_mtp_active_depths(3)
    model.freeze_router(True)
    out = model(x, labels=labels, document_ids=docs, mtp_weight=0.3)
    assert len(out.mtp_losses) == 3
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("mtp.2."))
    for moe in model.moe_layers():
        assert moe.router.weight.grad is None


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = Step35Model(cfg).train()
    x, labels, docs = _data(cfg)
    model(x, labels=labels, document_ids=docs, mtp_weight=0.3).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    loads = [m.bias_load.clone() for m in model.moe_layers()]
    model.zero_grad(set_to_none=True)
    model.set_activation_checkpointing(True)
    model(x, labels=labels, document_ids=docs, mtp_weight=0.3).loss.backward()
    for n, g in ref.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, msg=n)
    for m, l0 in zip(model.moe_layers(), loads):  # recomputation did not double-count loads
        torch.testing.assert_close(m.bias_load, 2 * l0)


def test_tiny_model_overfits_a_small_batch_on_cpu():
    torch.manual_seed(0)
    cfg = get_config("tiny", vocab_size=512)
    model = Step35Model(cfg).train()
    x, labels, docs = _data(cfg, B=2, T=64, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    start = time.perf_counter()
    losses = []
    for _ in range(40):  # stops as soon as the loss is a quarter of its start (~20 steps)
        out = model(x, labels=labels, document_ids=docs, mtp_weight=0.3)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.update_router_bias(1e-3)
        losses.append(out.lm_loss.item())
        if losses[-1] < 0.25 * losses[0]:
            break
    elapsed = time.perf_counter() - start
    assert losses[0] > math.log(512) - 0.5
    assert losses[-1] < 0.25 * losses[0], losses[::5]
    assert elapsed < 90, elapsed  # a few seconds on an idle laptop core; generous for shared CI
