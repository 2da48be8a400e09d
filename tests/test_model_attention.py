"""Attention masks and backends: flex, SDPA (dense and chunked window), eager all equal a naive
per-query loop; head-wise gate; partial RoPE; positions per document."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from model.attention import (Attention, RopeCache, _chunked_window_mask, attend, build_masks,
                             positions_from_documents, reference_mask)
from model.config import FULL, SWA, get_config
from model.rope import RopeScaling, apply_rope, inv_frequencies, rope_cos_sin


def naive_attention(q, k, v, window, docs):
    """One query at a time, keys chosen by explicit rules: causal, window, same document."""
    B, H, T, D = q.shape
    rep = H // k.shape[1]
    out = torch.zeros_like(q)
    for b in range(B):
        for i in range(T):
            keys = [j for j in range(T) if j <= i and (window is None or i - j < window)
                    and (docs is None or docs[b, j] == docs[b, i])]
            for h in range(H):
                kk, vv = k[b, h // rep, keys], v[b, h // rep, keys]
                w = torch.softmax(q[b, h, i] @ kk.T / math.sqrt(D), dim=-1)
                out[b, h, i] = w @ vv
    return out


def _qkv(B=2, H=4, Hkv=2, T=40, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, Hkv, T, D, generator=g),
            torch.randn(B, Hkv, T, D, generator=g))


def _docs(B, T):
    docs = torch.zeros(B, T, dtype=torch.long)
    docs[0, 13:] = 1
    docs[0, 29:] = 2
    if B > 1:
        docs[1, 5:] = 7
    return docs


@pytest.mark.parametrize("use_docs", [False, True])
def test_every_backend_equals_naive_reference(use_docs):
    B, T, W = 2, 40, 6  # T > 2W so the SDPA window path is the chunked one
    q, k, v = _qkv(B=B, T=T)
    docs = _docs(B, T) if use_docs else None
    ref = {FULL: naive_attention(q, k, v, None, docs), SWA: naive_attention(q, k, v, W, docs)}
    for backend in ("eager", "sdpa", "flex"):
        masks = build_masks(backend, B, T, W, docs, torch.device("cpu"))
        for kind in (FULL, SWA):
            out = attend(q, k, v, masks[kind], backend)
            torch.testing.assert_close(out, ref[kind], atol=1e-5, rtol=1e-5, msg=f"{backend}/{kind}")


@pytest.mark.parametrize("chunk", [None, 2, 3, 5])
def test_chunked_window_handles_ragged_tail_chunk_sizes_and_grad(chunk):
    B, T, W = 2, 37, 5  # 37 is a multiple of no chunk size
    q, k, v = _qkv(B=B, T=T, seed=3)
    q.requires_grad_(True)
    docs = _docs(B, T)
    masks = build_masks("sdpa", B, T, W, docs, torch.device("cpu"))
    assert type(masks[SWA]).__name__ == "ChunkedMask"
    mask = masks[SWA] if chunk is None else _chunked_window_mask(B, T, W, docs, torch.device("cpu"), chunk)
    out = attend(q, k, v, mask, "sdpa")
    ref = naive_attention(q.detach(), k, v, W, docs)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_reference_mask_rules():
    docs = torch.tensor([[0, 0, 0, 1, 1, 1]])
    m = reference_mask(6, 2, docs)[0]
    expect = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0],
                           [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expect)


def test_positions_restart_per_document():
    docs = torch.tensor([[4, 4, 4, 9, 9, 2, 2, 2, 2]])
    assert positions_from_documents(docs).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]


def test_headwise_gate_scales_each_head_output():
    torch.manual_seed(0)
    cfg = get_config("tiny", rotary_dim_full=0)
    attn = Attention(cfg, FULL)
    x = torch.randn(1, 5, cfg.d_model)
    rope = RopeCache(torch.arange(5)[None])
    masks = build_masks("eager", 1, 5, cfg.window, None, torch.device("cpu"))
    H, D = attn.n_heads, attn.head_dim
    q_dim, kv_dim = H * D, cfg.n_kv_heads * D
    with torch.no_grad():  # all gate logits 0
        attn.wqkv.weight[q_dim + 2 * kv_dim:].zero_()
    gated_half = attn(x, rope, masks[FULL], "eager")
    attn.gated = False
    ungated = attn(x, rope, masks[FULL], "eager")
    # sigmoid(0) = 0.5 on every head, and wo is linear → exactly half
    torch.testing.assert_close(gated_half, 0.5 * ungated)
    # gate of a single head off: that head's contribution disappears from wo's input
    attn.gated = True
    with torch.no_grad():
        attn.wqkv.weight[q_dim + 2 * kv_dim, 0] = -1e3  # inputs ≥ 0.1 → logit ≤ -100 on head 0
    captured = {}
    attn.wo.register_forward_hook(lambda m, i, o: captured.update(inp=i[0]))
    attn(x.abs() + 0.1, rope, masks[FULL], "eager")
    assert captured["inp"][..., :D].abs().max() < 1e-6  # head 0 silenced
    assert captured["inp"][..., D:].abs().max() > 1e-3  # the others pass at sigmoid(0) = 0.5


def test_partial_rope_rotates_only_leading_dims_and_preserves_norm():
    x = torch.randn(1, 2, 7, 16)
    cos, sin = rope_cos_sin(torch.arange(7)[None] + 3, 8, 1e4)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y[..., 8:], x[..., 8:])
    torch.testing.assert_close(y[..., :8].norm(dim=-1), x[..., :8].norm(dim=-1))
    # relative: <R(p)q, R(p+d)k> depends only on d
    q, k = torch.randn(16), torch.randn(16)

    def dot(p, d):
        c, s = rope_cos_sin(torch.tensor([[p, p + d]]), 16, 1e4)
        rq = apply_rope(q.view(1, 1, 1, 16).expand(1, 1, 2, 16), c, s)
        return (rq[0, 0, 0] @ apply_rope(k.view(1, 1, 1, 16).expand(1, 1, 2, 16), c, s)[0, 0, 1]).item()

    assert abs(dot(0, 5) - dot(11, 5)) < 1e-4


def test_yarn_interpolates_low_frequencies_only():
    base, s1 = inv_frequencies(64, 5e6)
    yarn, s2 = inv_frequencies(64, 5e6, RopeScaling("yarn", 2.0, 131072))
    assert s1 == 1.0 and abs(s2 - (0.1 * math.log(2) + 1)) < 1e-9
    assert torch.allclose(yarn[0], base[0])  # highest frequency kept
    assert torch.allclose(yarn[-1], base[-1] / 2)  # lowest interpolated by the factor


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 48), W=st.integers(1, 12), cuts=st.lists(st.integers(1, 47), max_size=4),
       chunk=st.one_of(st.none(), st.integers(1, 12)))
def test_sdpa_and_flex_equal_eager_for_any_packing(T, W, cuts, chunk):
    """Property: for any length, window, chunk and document cut points, every path agrees."""
    q, k, v = _qkv(B=1, H=2, Hkv=1, T=T, D=4, seed=T * 31 + W)
    docs = torch.zeros(1, T, dtype=torch.long)
    for c in cuts:
        docs[0, c:] += 1
    ref = build_masks("eager", 1, T, W, docs, torch.device("cpu"))
    sdpa = build_masks("sdpa", 1, T, W, docs, torch.device("cpu"))
    swa = sdpa[SWA] if chunk is None else _chunked_window_mask(1, T, W, docs, torch.device("cpu"), chunk)
    for kind, mask in ((FULL, sdpa[FULL]), (SWA, swa)):
        expect = attend(q, k, v, ref[kind], "eager")
        torch.testing.assert_close(attend(q, k, v, mask, "sdpa"), expect, atol=1e-5, rtol=1e-5)
    flex = build_masks("flex", 1, T, W, docs, torch.device("cpu"))
    torch.testing.assert_close(attend(q, k, v, flex[SWA], "flex"), attend(q, k, v, ref[SWA], "eager"),
                               atol=1e-5, rtol=1e-5)


def test_yarn_changes_full_layers_only():
    from model.transformer import Step35Model

    torch.manual_seed(0)
    model = Step35Model(get_config("tiny"))
    model.set_yarn(2.0, original_max_position=32)
    kinds = {m.layer_type: m.rope_scaling.factor for m in model.modules() if isinstance(m, Attention)}
    assert kinds == {FULL: 2.0, SWA: 1.0}
    assert {m.rope_scaling.kind for m in model.modules() if isinstance(m, Attention) and m.layer_type == FULL} == {"yarn"}


def test_whole_model_forward_is_the_same_on_every_backend():
    from model.attention import resolve_backend
    from model.transformer import Step35Model

    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"  # flex has no CPU backward
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = Step35Model(cfg).eval()
    T = 150  # > 2W: the SDPA window path is the chunked one
    x = torch.randint(0, cfg.vocab_size, (2, T))
    docs = (torch.arange(T) // 47).expand(2, T).clone()
    docs[1] = (torch.arange(T) >= 100).long()
    logits = {}
    with torch.no_grad():
        for backend in ("eager", "sdpa", "flex"):
            model.cfg.attn_backend = backend
            logits[backend] = model(x, document_ids=docs).logits
    torch.testing.assert_close(logits["sdpa"], logits["eager"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(logits["flex"], logits["eager"], atol=2e-5, rtol=1e-4)

    model.train()
    with pytest.raises(RuntimeError, match="no backward off CUDA"):
        model(x, labels=x)
