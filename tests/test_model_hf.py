"""The released Step 3.5 layout in and out (``model/hf.py``), checked against transformers.

transformers ≥ 5.2x implements the Step 3.5 text decoder (``models/step3p7``, text model_type
``step3p5``) and its conversion rules between its own module names and the released checkpoint
names.  So the outside reference here is transformers' own classes *and* its own save/load:
``Step3p7ForConditionalGeneration.save_pretrained`` writes the text weights in the released
layout (we only drop its vision tower and write the released ``config.json``), and
``from_pretrained`` reads what our ``save_pretrained`` writes.  transformers has no faithful MTP
model for this family (its generic ``MtpModel`` gives step3p7 MTP layers the full-attention
head count and no per-layer output head), so MTP is checked against transformers' own
``MtpLayer`` / ``Step3p7DecoderLayer`` built on a config of the MTP layers, the released
semantics (vLLM's ``step3p5_mtp.py``): ``eh_proj(cat[enorm(emb), hnorm(h)])``, the block, then
``shared_head.norm`` and ``shared_head.output``; depth k+1 chains the block output.

Everything runs in float32 on CPU with one thread; sequences are longer than the window,
clipping is active and router biases are non-zero.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from model.config import get_config
from model.hf import (HFFormatError, config_from_hf, config_to_hf, inspect_pretrained, load_pretrained,
                      save_pretrained, tensor_specs)
from model.mtp import shift_left
from model.transformer import Step35Model

N, M, V, W, T = 4, 2, 128, 8, 40  # backbone layers, MTP layers, vocab, window, sequence (> W)

RELEASED = {  # a tiny config.json in the released spelling (values of this family, sizes shrunk)
    "architectures": ["Step3p5ForCausalLM"], "model_type": "step3p5",
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": N, "vocab_size": V,
    "num_attention_heads": 4, "num_attention_groups": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 512, "att_impl_type": "GQA",
    "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention",
                    "sliding_attention", "sliding_attention"],
    "rope_theta": [5e6, 1e4, 1e4, 5e6, 1e4, 1e4],
    "partial_rotary_factors": [0.5, 1.0, 1.0, 0.5, 1.0, 1.0],
    "attention_other_setting": {"attention_type": "sliding_attention", "num_attention_heads": 6,
                                "num_attention_groups": 2, "head_dim": 16},
    # original length 16 < T so the llama3 scaling changes real frequencies in this test
    "rope_scaling": {"rope_type": "llama3", "factor": 2.0, "original_max_position_embeddings": 16,
                     "low_freq_factor": 1.0, "high_freq_factor": 32.0},
    "yarn_only_types": ["full_attention"], "sliding_window": W,
    "moe_layers_enum": "1,2,3", "moe_num_experts": 8, "moe_top_k": 2, "moe_intermediate_size": 16,
    "share_expert_dim": 24, "moe_router_activation": "sigmoid", "moe_router_scaling_factor": 2.5,
    "norm_expert_weight": True, "use_moe_router_bias": True, "need_fp32_gate": True,
    "use_head_wise_attn_gate": True, "num_nextn_predict_layers": M,
    # small limits: with weights of std 0.1 every listed layer really clips
    "swiglu_limits": [0.0, 0.0, 0.05, 0.04, 0.0, 0.0],
    "swiglu_limits_shared": [0.06, 0.0, 0.05, 0.04, 0.05, 0.0],
    "tie_word_embeddings": False, "initializer_range": 0.1,
}
VISION = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 56,
          "patch_size": 14, "mlp_ratio": 2.0, "max_position_embeddings": 16}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tokens(seed=0, B=2):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# transformers side
# ---------------------------------------------------------------------------------------------
def _hf():
    pytest.importorskip("transformers.models.step3p7", reason="transformers with Step 3.5 (dev extra)")
    from transformers import Step3p7Config
    from transformers.models.step3p7 import modeling_step3p7 as ms
    return Step3p7Config, ms


def _hf_composite_config(text: dict):
    Step3p7Config, _ = _hf()
    cfg = Step3p7Config(text_config=copy.deepcopy(text), vision_config=dict(VISION))
    cfg.text_config._attn_implementation = "eager"
    cfg._attn_implementation = "eager"
    return cfg


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial norms (zero-init otherwise) and router biases (zero-init otherwise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            elif name.endswith("e_score_correction_bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)


def _mtp_text_config(released: dict):
    """A Step3p7TextConfig holding only the MTP layers (their θ, rotary factors, clip limits),
    so transformers' decoder layer ``k`` is exactly MTP layer ``n + k``."""
    from transformers.models.step3p7.configuration_step3p7 import Step3p7TextConfig

    n, m = released["num_hidden_layers"], released["num_nextn_predict_layers"]
    d = copy.deepcopy(released)
    for key in ("layer_types", "rope_theta", "partial_rotary_factors", "swiglu_limits", "swiglu_limits_shared"):
        d[key] = d[key][n:n + m]
    d.update(num_hidden_layers=m, num_nextn_predict_layers=0, moe_layers_enum="")
    d.pop("rope_scaling")  # MTP layers are sliding: the released yarn_only_types excludes them
    c = Step3p7TextConfig(**d)
    c._attn_implementation = "eager"
    return c


class HFMTP(torch.nn.Module):
    """The released MTP layers from transformers' building blocks (see the module docstring)."""

    def __init__(self, released: dict):
        super().__init__()
        _, ms = _hf()
        from transformers.modeling_layers import MtpLayer

        self.cfg = _mtp_text_config(released)
        m, d, vocab = self.cfg.num_hidden_layers, self.cfg.hidden_size, self.cfg.vocab_size
        self.layers = torch.nn.ModuleList(
            MtpLayer(self.cfg, ms.Step3p7DecoderLayer, ms.Step3p7RMSNorm, k, use_post_norm=False) for k in range(m))
        self.shared_head_norm = torch.nn.ModuleList(ms.Step3p7RMSNorm(d, eps=self.cfg.rms_norm_eps) for _ in range(m))
        self.output = torch.nn.ModuleList(torch.nn.Linear(d, vocab, bias=False) for _ in range(m))
        self.rotary = ms.Step3p7RotaryEmbedding(self.cfg)
        self.n = released["num_hidden_layers"]

    def released_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for k, layer in enumerate(self.layers):
            p = f"model.layers.{self.n + k}."
            for name, t in layer.state_dict().items():
                out[p + name.replace("mtp_block.", "")] = t.clone()
            out[p + "transformer.shared_head.norm.weight"] = self.shared_head_norm[k].weight.detach().clone()
            out[p + "transformer.shared_head.output.weight"] = self.output[k].weight.detach().clone()
        return out

    def load_released(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, layer in enumerate(self.layers):
            p = f"model.layers.{self.n + k}."
            sd = {name: tensors[p + name.replace("mtp_block.", "")] for name in layer.state_dict()}
            layer.load_state_dict(sd)
            self.shared_head_norm[k].weight.data.copy_(tensors[p + "transformer.shared_head.norm.weight"])
            self.output[k].weight.data.copy_(tensors[p + "transformer.shared_head.output.weight"])

    def logits(self, embed: torch.nn.Module, x: torch.Tensor, h: torch.Tensor) -> list[torch.Tensor]:
        B, L = x.shape
        pos = torch.arange(L)[None].expand(B, L)
        i, j = torch.arange(L)[:, None], torch.arange(L)[None]
        allowed = (j <= i) & (i - j < self.cfg.sliding_window)
        mask = torch.zeros(1, 1, L, L).masked_fill(~allowed, torch.finfo(torch.float32).min)
        out = []
        for k, layer in enumerate(self.layers):
            emb = embed(shift_left(x, k + 1, 0))
            rope = self.rotary(emb, pos, "sliding_attention")
            h = layer(emb, h, position_embeddings=rope, attention_mask=mask, position_ids=pos, cache=None)
            out.append(self.output[k](self.shared_head_norm[k](h)))
        return out


def _hf_backbone_hidden(hf, x):
    """transformers' logits and the hidden state entering its final norm (what MTP-1 reads)."""
    seen = {}
    hook = hf.model.language_model.norm.register_forward_hook(lambda mod, inp, out: seen.update(h=inp[0]))
    try:
        logits = hf(input_ids=x).logits
    finally:
        hook.remove()
    return logits, seen["h"]


def _our_mtp_logits(model: Step35Model, x: torch.Tensor) -> list[torch.Tensor]:
    """Our heads' logits, chained the way ``Step35Model.forward`` chains them."""
    from model.attention import RopeCache, build_masks

    seen = {}
    hook = model.norm.register_forward_hook(lambda mod, inp, out: seen.update(h=inp[0]))
    try:
        model(x)
    finally:
        hook.remove()
    B, L = x.shape
    rope = RopeCache(torch.arange(L)[None].expand(B, L))
    masks = build_masks("sdpa", B, L, model.cfg.window, None, x.device)
    h, out = seen["h"], []
    for k, head in enumerate(model.mtp):
        h, normed, logits = head(h, model.embed(shift_left(x, k + 1, 0)), rope, masks, "sdpa")
        out.append(logits if logits is not None else model.lm_head(normed))
    return out


def _write_released(folder: Path, hf, mtp: HFMTP, config: dict, shard_size: str = "40KB") -> None:
    """transformers' own save (released names), vision tower dropped, MTP layers added, and the
    released config.json: the folder a Step 3.5 Flash download looks like."""
    from safetensors.torch import load_file, save_file

    native = folder.parent / (folder.name + "-native")
    hf.save_pretrained(native, max_shard_size=shard_size)
    index = json.loads((native / "model.safetensors.index.json").read_text())
    folder.mkdir()
    weight_map = {}
    for fname in sorted(set(index["weight_map"].values())):
        tensors = {k: v for k, v in load_file(native / fname).items()
                   if not k.startswith(("vision_model.", "vit_large_projector."))}
        if tensors:
            save_file(tensors, folder / fname, metadata={"format": "pt"})
            weight_map.update({k: fname for k in tensors})
    save_file(mtp.released_tensors(), folder / "model-mtp.safetensors", metadata={"format": "pt"})
    weight_map.update({k: "model-mtp.safetensors" for k in mtp.released_tensors()})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny random checkpoint written by transformers' native classes in the released layout."""
    _, ms = _hf()
    torch.manual_seed(0)
    hf = ms.Step3p7ForConditionalGeneration(_hf_composite_config(RELEASED)).eval()
    mtp = HFMTP(RELEASED).eval()
    _perturb(hf, 1)
    _perturb(mtp, 2)
    folder = tmp_path_factory.mktemp("released") / "step3p5-tiny"
    _write_released(folder, hf, mtp, RELEASED)
    return folder, hf, mtp


# ---------------------------------------------------------------------------------------------
# against transformers
# ---------------------------------------------------------------------------------------------
def test_released_checkpoint_loads_with_the_reference_logits(released):
    folder, hf, mtp = released
    assert len(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    assert len(list(folder.glob("*.safetensors"))) > 3  # really sharded
    model = load_pretrained(folder).eval()
    cfg = model.cfg
    # the config.json decides θ per layer, llama3 on full layers only, clip lists, heads
    assert cfg.rope_thetas == (5e6, 1e4, 1e4, 5e6, 1e4, 1e4) and cfg.rope_scaling == "llama3"
    assert cfg.n_dense_layers == 1 and cfg.n_heads_swa == 6 and cfg.n_mtp == 2 and not cfg.mtp_share_lm_head
    assert cfg.swiglu_limits_shared[0] == 0.06 and cfg.dense_limit(4) == 0.05  # dense + MTP layers
    assert all(m.router_bias.abs().max() > 0.1 for m in model.moe_layers())
    x = _tokens()
    with torch.no_grad():
        ref, h_ref = _hf_backbone_hidden(hf, x)
        ours = model(x).logits
        assert (ours - ref).abs().max() < 1e-4, (ours - ref).abs().max()
        for k, (a, b) in enumerate(zip(_our_mtp_logits(model, x), mtp.logits(hf.model.language_model.embed_tokens,
                                                                              x, h_ref))):
            assert (a - b).abs().max() < 1e-4, (k, (a - b).abs().max())


def test_clipping_rope_scaling_and_biases_matter_in_that_comparison(released):
    """Guard against a vacuous match: each released detail changes the logits here."""
    folder, _, _ = released
    model = load_pretrained(folder).eval()
    x = _tokens()
    with torch.no_grad():
        base = model(x).logits

        def differs(mutate) -> float:
            m = copy.deepcopy(model)
            mutate(m)
            return float((m(x).logits - base).abs().max())

        def no_clip(m):
            for mod in m.modules():
                if hasattr(mod, "limit"):
                    mod.limit = None

        def no_bias(m):
            for moe in m.moe_layers():
                moe.router_bias.zero_()

        assert differs(no_clip) > 1e-3
        assert differs(no_bias) > 1e-3
        assert differs(lambda m: m.set_rope_scaling("none", 1.0)) > 1e-3
        assert differs(lambda m: m.set_rope_theta(full=1e4, swa=1e4)) > 1e-3
        # and the MTP comparison would see the concat order
        mtp = _our_mtp_logits(model, x)
        flipped = copy.deepcopy(model)
        for head in flipped.mtp:
            head.embedding_first = False
        assert all((a - b).abs().max() > 1e-3 for a, b in zip(_our_mtp_logits(flipped, x), mtp))


def test_our_save_reloads_in_transformers_with_the_same_logits(released, tmp_path):
    folder, _, _ = released
    _, ms = _hf()
    from safetensors.torch import load_file

    model = load_pretrained(folder).eval()
    with torch.no_grad():  # move away from the fixture's weights so this is not a file copy
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for m in model.moe_layers():
            m.router_bias.normal_(0, 0.3)
    out = save_pretrained(model, tmp_path / "ours", max_shard_size="30KB", dtype=torch.float32)
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["model_type"] == "step3p5" and cfg_json["architectures"] == ["Step3p5ForCausalLM"]
    assert len(cfg_json["layer_types"]) == N + M and cfg_json["moe_layers_enum"] == "1,2,3"
    names = set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"])
    released_names = set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])
    assert names == released_names  # exactly the released tensor names
    # transformers reads the folder through its composite config (text decoder = our config.json)
    wrap = tmp_path / "wrapped"
    wrap.mkdir()
    for f in out.iterdir():
        if f.name != "config.json":
            os.symlink(f, wrap / f.name)
    composite = _hf_composite_config(cfg_json)
    composite.save_pretrained(wrap)
    hf, info = ms.Step3p7ForConditionalGeneration.from_pretrained(wrap, output_loading_info=True,
                                                                   attn_implementation="eager")
    hf.eval()
    assert all(k.startswith(("model.vision_model.", "model.multi_modal_projector.")) for k in info["missing_keys"])
    assert not info["mismatched_keys"]
    mtp = HFMTP(cfg_json).eval()
    tensors = {}
    for f in out.glob("*.safetensors"):
        tensors.update(load_file(f))
    mtp.load_released(tensors)
    x = _tokens(seed=3)
    with torch.no_grad():
        ref, h_ref = _hf_backbone_hidden(hf, x)
        assert (model(x).logits - ref).abs().max() < 1e-4
        for a, b in zip(_our_mtp_logits(model, x), mtp.logits(hf.model.language_model.embed_tokens, x, h_ref)):
            assert (a - b).abs().max() < 1e-4


def test_rope_scalings_match_transformers_frequencies():
    _hf()
    from transformers.models.step3p7.configuration_step3p7 import Step3p7TextConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from model.rope import RopeScaling, inv_frequencies

    for rs in ({"rope_type": "llama3", "factor": 2.0, "original_max_position_embeddings": 131072,
                "low_freq_factor": 1.0, "high_freq_factor": 32.0},
               {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
               {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 131072}):
        # (128 dims, θ 1e4, yarn ×2 at 131072 is where our YaRN's old correction-range clamp differed)
        for head_dim, prf, theta in ((16, 0.5, 5e6), (16, 1.0, 1e4), (128, 0.5, 5e6), (128, 1.0, 1e4)):
            d = dict(RELEASED, rope_scaling=rs, rope_theta=theta, partial_rotary_factors=[prf] * (N + M),
                     head_dim=head_dim, attention_other_setting=dict(RELEASED["attention_other_setting"],
                                                                     head_dim=head_dim))
            c = Step3p7TextConfig(**d)
            ref, ref_scale = ROPE_INIT_FUNCTIONS[rs["rope_type"]](c, None, layer_type="full_attention")
            ours, scale = inv_frequencies(int(head_dim * prf), theta, RopeScaling(
                rs["rope_type"], rs["factor"], rs["original_max_position_embeddings"],
                rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 32.0)))
            torch.testing.assert_close(ours.float(), ref.float(), rtol=1e-6, atol=0)
            assert abs(scale - ref_scale) < 1e-9


# ---------------------------------------------------------------------------------------------
# our side only (no transformers needed)
# ---------------------------------------------------------------------------------------------
def _tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"vocab_size": 256, "swiglu_limits": 0.5, "swiglu_limits_shared": 0.7, **kw}
    cfg = get_config("tiny", **kw)
    model = Step35Model(cfg).eval()
    with torch.no_grad():
        for m in model.moe_layers():
            m.router_bias.normal_(0, 0.1)
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _tiny_model()
    return model, save_pretrained(model, tmp_path_factory.mktemp("ours") / "hf", max_shard_size="400KB")


def test_round_trip_is_exact_and_streams_shards(saved):
    model, folder = saved
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    back = load_pretrained(folder).eval()
    assert back.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert torch.equal(back(_tokens()).logits, model(_tokens()).logits)


def test_legacy_layout_choices_export_to_the_same_function(tmp_path):
    """Our pre-release choices (MTP [h, e] order, shared LM head, dense clip from swiglu_limits)
    still build and load; exported, they become the released layout with the same outputs."""
    legacy = _tiny_model(mtp_embedding_first=False, mtp_share_lm_head=True, dense_clip_from_shared=False,
                         swiglu_limits=(0.3, 0.5, 0.5, 0.5, 0.5))
    out = save_pretrained(legacy, tmp_path / "hf")
    back = load_pretrained(out).eval()
    assert back.cfg.mtp_embedding_first and not back.cfg.mtp_share_lm_head and back.cfg.dense_clip_from_shared
    assert back.cfg.dense_limit(0) == 0.3
    x = _tokens()
    torch.testing.assert_close(back(x).logits, legacy(x).logits, rtol=0, atol=1e-6)
    for a, b in zip(_our_mtp_logits(back, x), _our_mtp_logits(legacy, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_configs_written_before_the_released_switches_keep_their_meaning():
    old = get_config("tiny").to_dict()
    for key in ("mtp_embedding_first", "mtp_share_lm_head", "dense_clip_from_shared", "rope_scaling",
                "rope_scaling_factor", "rope_scaling_original_max_position", "rope_scaling_layer_types",
                "rope_thetas", "llama3_low_freq_factor", "llama3_high_freq_factor"):
        old.pop(key)
    old.update(yarn_factor=2.0, yarn_original_max_position=4096, swiglu_limits=[None] * 5)
    from model.config import ModelConfig

    cfg = ModelConfig.from_dict(old)
    assert (cfg.mtp_embedding_first, cfg.mtp_share_lm_head, cfg.dense_clip_from_shared) == (False, True, False)
    assert (cfg.rope_scaling, cfg.rope_scaling_factor, cfg.rope_scaling_original_max_position) == ("yarn", 2.0, 4096)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_config_round_trip_and_full_defaults():
    full = get_config("full")
    assert full.rope_theta_full == 5e6 and full.rope_theta_swa == 1e4
    assert set(full.rope_thetas[:45]) == {5e6, 1e4} and full.rope_thetas[45:] == (1e4,) * 3
    hf = config_to_hf(full)
    assert len(hf["rope_theta"]) == len(hf["layer_types"]) == len(hf["swiglu_limits_shared"]) == 48
    assert hf["moe_layers_enum"].split(",")[0] == "3" and hf["partial_rotary_factors"][:2] == [0.5, 1.0]
    assert config_from_hf(hf) == full
    released = config_from_hf(dict(RELEASED))
    assert config_from_hf(config_to_hf(released)) == released


def _copy(folder: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(folder, dst)
    return dst


def _rewrite_shard(path: Path, mutate) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    mutate(tensors)
    save_file(tensors, path)


def _first_shard_with(folder: Path, name: str) -> Path:
    return folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][name]


@pytest.fixture
def no_allocation(monkeypatch):
    """Fail loudly if a weight would be allocated: bad folders must fail before that."""
    def refuse(self, *a, **k):
        raise AssertionError("weights allocated before the folder was validated")
    monkeypatch.setattr(torch.nn.Module, "to_empty", refuse)


def test_missing_tensor_is_named(saved, tmp_path, no_allocation):
    folder = _copy(saved[1], tmp_path / "c")
    name = "model.layers.2.moe.up_proj.weight"
    shard = _first_shard_with(folder, name)
    _rewrite_shard(shard, lambda t: t.pop(name))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    with pytest.raises(HFFormatError, match=r"maps model\.layers\.2\.moe\.up_proj\.weight"):
        load_pretrained(folder)
    index["weight_map"].pop(name)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HFFormatError, match=r"missing .*model\.layers\.2\.moe\.up_proj\.weight"):
        load_pretrained(folder)


def test_extra_tensor_is_named(saved, tmp_path, no_allocation):
    folder = _copy(saved[1], tmp_path / "c")
    shard = _first_shard_with(folder, "model.embed_tokens.weight")
    _rewrite_shard(shard, lambda t: t.update({"model.layers.0.mlp.gate_proj.weight_scale_inv": torch.ones(2)}))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.mlp.gate_proj.weight_scale_inv"] = shard.name
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HFFormatError, match=rf"unexpected .*weight_scale_inv \(in {shard.name}\)"):
        load_pretrained(folder)


def test_wrong_shape_names_tensor_and_file(saved, tmp_path, no_allocation):
    folder = _copy(saved[1], tmp_path / "c")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["moe_intermediate_size"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFFormatError, match=r"model-\d+-of-\d+\.safetensors: tensor model\.layers\.1\.moe\."
                                            r"gate_proj\.weight has shape \[8, 64, 96\], config\.json implies \[8, 32, 96\]"):
        load_pretrained(folder)


def test_other_architecture_and_truncated_shard(saved, tmp_path, no_allocation):
    folder = _copy(saved[1], tmp_path / "arch")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFFormatError, match="different architecture"):
        load_pretrained(folder)
    folder = _copy(saved[1], tmp_path / "trunc")
    shard = sorted(folder.glob("*.safetensors"))[3]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    with pytest.raises(HFFormatError, match=rf"{shard.name}: unreadable safetensors file, truncated"):
        inspect_pretrained(folder)
    with pytest.raises(HFFormatError, match="truncated"):
        load_pretrained(folder)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(HFFormatError, match="neither model.safetensors.index.json nor model.safetensors"):
        load_pretrained(folder)


def test_unexpressible_model_is_refused_before_writing(tmp_path):
    model = _tiny_model(router_bias_in_weights=True)
    with pytest.raises(HFFormatError, match="router_bias_in_weights"):
        save_pretrained(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_specs_cover_every_weight():
    for name in ("tiny", "small", "full"):
        cfg = get_config(name)
        with torch.device("meta"):
            model = Step35Model(cfg)
        ours = {s.ours for s in tensor_specs(cfg)}
        assert set(model.state_dict()) - ours == {n for n, _ in model.named_buffers() if n.endswith("bias_load")}


# ---------------------------------------------------------------------------------------------
# training from exported / imported weights
# ---------------------------------------------------------------------------------------------
CURRICULUM = """\
name: hfunit
tokenizer: {vocab_size: 256}
attention_block: 32
sources: {web: {}}
stages:
  - name: pre
    phases:
      - name: only
        tokens: 512
        seq_len: 32
        mixture: {web: 1.0}
        schedule:
          global_batch: 4
          lr: {shape: constant, peak: 0.01}
          rope_theta_full: 5.0e6
          mtp_weight: 0.3
          bias_update_rate: 0.01
"""


def test_training_starts_identically_from_exported_and_imported_weights(tmp_path, capsys):
    from model.hf import main as hf_main
    from model.train import main as train_main
    from trainer_bridge.synthetic import SyntheticPhase, write_synthetic_mix

    cur = tmp_path / "cur.yaml"
    cur.write_text(CURRICULUM)
    mix = write_synthetic_mix(tmp_path / "mix", [SyntheticPhase("only", 32, 16)], vocab_size=256, seed=1,
                              stage="pre", curriculum="hfunit")
    small = ["vocab_size=256", "d_model=32", "n_layers=2", "head_dim=8", "n_heads_full=2", "n_heads_swa=2",
             "n_kv_heads=1", "rotary_dim_full=4", "rotary_dim_swa=8", "window=16", "n_experts=4", "top_k=2",
             "ep_groups=2", "expert_hidden=32", "shared_hidden=32", "dense_hidden=64", "n_mtp=1", "mtp_hidden=64"]
    common = ["--curriculum", str(cur), "--mix", str(mix), "--no-tensorboard", "--no-progress", "--threads", "1",
              "--micro-batch-tokens", "128", "--device", "cpu"] + [a for kv in small for a in ("--set", kv)]

    def losses(run: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert train_main(common + ["--out", str(tmp_path / "a"), "--max-steps", "3"]) == 0
    assert hf_main(["export", str(tmp_path / "a"), "--out", str(tmp_path / "hf"), "--dtype", "float32",
                    "--no-progress"]) == 0
    # θ is a schedule value, not a weight: the export carries the one the run trained with
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert [t for t, kind in zip(exported["rope_theta"], exported["layer_types"]) if kind == "full_attention"] == [5e6]
    assert hf_main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "imported"), "--no-progress"]) == 0
    runs = {}
    for name, src in (("dcp", tmp_path / "a"), ("hf", tmp_path / "hf"), ("imported", tmp_path / "imported")):
        assert train_main(common + ["--out", str(tmp_path / f"from-{name}"), "--max-steps", "2",
                                    "--init-from", str(src)]) == 0
        runs[name] = losses(tmp_path / f"from-{name}")
    assert runs["dcp"] == runs["hf"] == runs["imported"]
    # bad sources and architecture-changing --set fail before compute, naming the problem
    capsys.readouterr()
    assert train_main(common + ["--out", str(tmp_path / "bad"), "--init-from", str(tmp_path / "nothing")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert train_main(common + ["--out", str(tmp_path / "bad"), "--init-from", str(tmp_path / "hf"),
                                "--set", "d_model=48"]) == 2
    assert "d_model 32 -> 48" in capsys.readouterr().err
    # and the weights really came from run a: it had trained, a fresh model starts higher
    fresh = tmp_path / "fresh"
    assert train_main(common + ["--out", str(fresh), "--max-steps", "1"]) == 0
    assert runs["dcp"][0] < losses(fresh)[0]
    capsys.readouterr()
