"""Parameter and attention-FLOPs accounting, computed from the model built on the meta device.

    python -m model.summary --config full [--context 4096] [--json]

Conventions (also in model/README.md):

* **total** = every backbone parameter (input embedding and LM head included, MTP heads apart);
  ``total_with_mtp`` adds the MTP heads.  An MTP head counts its block, norms, ``eh_proj`` and
  (released layout, ``mtp_share_lm_head=False``) its own ``[vocab, d]`` output layer: the report's
  "0.81B" is one such head of ``full``.
* **active** = parameters a token passes through: routed experts count ``top_k / n_experts`` of
  their weights; the *input embedding is excluded* (a table lookup, not a matmul — the usual
  convention for "active parameters"); ``active_with_embedding`` includes it.
* **attention FLOPs per token** of the attention layers alone (2 FLOPs per multiply-add):
  projections ``2·d·(H·hd + 2·Hkv·hd + H) + 2·H·hd·d`` (q, k, v, gate, o) plus the core
  ``4·H·hd·n_keys`` (QKᵀ and AV).  Decode at context L: ``n_keys = L`` on full layers and
  ``min(L, W)`` on SWA layers.  Prefill of L tokens, averaged per token: ``(L+1)/2`` on full
  layers and ``mean_i min(i, W)`` on SWA layers.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import torch

from model.config import FULL, SWA, ModelConfig, get_config, layout

COMPONENTS = ("embedding", "lm_head", "attention_full", "attention_swa", "norms", "dense_ffn",
              "router", "shared_experts", "routed_experts", "mtp")


def _component(name: str, cfg: ModelConfig) -> str:
    if name.startswith("mtp."):
        return "mtp"
    if name.startswith("embed."):
        return "embedding"
    if name.startswith("lm_head."):
        return "lm_head"
    if "norm" in name.rsplit(".", 2)[-2] or name == "norm.weight":
        return "norms"
    m = re.match(r"layers\.(\d+)\.(.*)", name)
    if not m:
        raise ValueError(f"unclassified parameter {name}")
    layer, rest = int(m.group(1)), m.group(2)
    if rest.startswith("attn."):
        return "attention_full" if cfg.layer_types[layer] == FULL else "attention_swa"
    if rest.startswith("ffn.experts."):
        return "routed_experts"
    if rest.startswith("ffn.router."):
        return "router"
    if rest.startswith("ffn.shared."):
        return "shared_experts"
    if rest.startswith("ffn."):
        return "dense_ffn"
    raise ValueError(f"unclassified parameter {name}")


def count_parameters(cfg: ModelConfig, model: torch.nn.Module | None = None) -> dict:
    """Total and active parameters per component. ``model`` is ``Step35Model(cfg)`` if the
    caller already built one (e.g. the trainer's dry run); otherwise it is built here on the
    meta device (no memory)."""
    if model is None:
        from model.transformer import Step35Model  # local: keeps this module light to import

        with torch.device("meta"):
            model = Step35Model(cfg)
    total: dict[str, int] = defaultdict(int)
    mtp_output = 0
    for name, p in model.named_parameters():
        total[_component(name, cfg)] += p.numel()
        if re.match(r"mtp\.\d+\.output\.", name):
            mtp_output += p.numel()
    active = dict(total)
    if cfg.n_experts:
        active["routed_experts"] = total["routed_experts"] * cfg.top_k // cfg.n_experts
    comps = {c: {"total": total.get(c, 0), "active": active.get(c, 0)} for c in COMPONENTS}
    backbone = [c for c in COMPONENTS if c != "mtp"]
    t = sum(total.get(c, 0) for c in backbone)
    a_emb = sum(active.get(c, 0) for c in backbone)
    a = a_emb - (0 if cfg.tie_embeddings else total.get("embedding", 0))
    return {
        "config": cfg.name, "components": comps,
        "total": t, "active": a, "active_with_embedding": a_emb,
        "mtp": total.get("mtp", 0), "mtp_per_head": total.get("mtp", 0) // max(cfg.n_mtp, 1),
        "mtp_output_heads": mtp_output,
        "total_with_mtp": t + total.get("mtp", 0), "active_with_mtp": a + total.get("mtp", 0),
    }


def _layer_types(cfg: ModelConfig, lay: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if lay is None:
        return cfg.layer_types
    if isinstance(lay, str):
        return layout(cfg.n_layers, lay)
    return tuple(lay)


def attention_flops(cfg: ModelConfig, lay: str | tuple[str, ...] | None = None, context: int = 4096,
                    swa_heads: int | None = None) -> dict:
    """Attention FLOPs per token for decode and prefill at ``context`` for a layout
    (``"S3F1"``, ``"S1F1"``, ``"FFFF"``, a per-layer tuple, or None = the config's own)."""
    types = _layer_types(cfg, lay)
    d, hd, kv, W, L = cfg.d_model, cfg.head_dim, cfg.n_kv_heads, cfg.window, context
    swa_keys_prefill = (min(L, W) * (min(L, W) + 1) / 2 + max(L - W, 0) * W) / L  # mean_i min(i, W)
    out = {"decode": 0.0, "prefill": 0.0, "projection": 0.0, "core_decode": 0.0, "core_prefill": 0.0,
           "n_full": sum(t == FULL for t in types), "n_swa": sum(t == SWA for t in types)}
    for t in types:
        H = cfg.n_heads_full if t == FULL else (swa_heads or cfg.n_heads_swa)
        proj = 2 * d * (H * hd + 2 * kv * hd + (H if cfg.gated_attention else 0)) + 2 * H * hd * d
        keys_dec = L if t == FULL else min(L, W)
        keys_pre = (L + 1) / 2 if t == FULL else swa_keys_prefill
        out["projection"] += proj
        out["core_decode"] += 4 * H * hd * keys_dec
        out["core_prefill"] += 4 * H * hd * keys_pre
    out["decode"] = out["projection"] + out["core_decode"]
    out["prefill"] = out["projection"] + out["core_prefill"]
    return out


def layout_comparison(cfg: ModelConfig, context: int, swa_heads: int | None = None) -> dict[str, dict]:
    """Relative attention FLOPs of S3F1 / S1F1 / FFFF (S3F1 = 1.00, as in the report's Table 1)."""
    base = attention_flops(cfg, "S3F1", context, swa_heads)
    rows = {}
    for lay in ("FFFF", "S1F1", "S3F1"):
        f = attention_flops(cfg, lay, context, swa_heads)
        rows[lay] = {"decode": f["decode"] / base["decode"], "prefill": f["prefill"] / base["prefill"],
                     "core_decode": f["core_decode"] / base["core_decode"],
                     "core_prefill": f["core_prefill"] / base["core_prefill"]}
    return rows


REPORT_TABLE1 = {"FFFF": (2.68, 2.90), "S1F1": (1.58, 1.65), "S3F1": (1.00, 1.00)}


def _fmt(n: float) -> str:
    if n >= 1e8:
        return f"{n / 1e9:8.3f}B"
    return f"{n / 1e6:8.2f}M" if n >= 1e5 else f"{int(n):,}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m model.summary", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Parameter counts (meta device) and attention FLOPs of a model config.",
        epilog="example:\n  python -m model.summary --config full --context 4096")
    ap.add_argument("--config", default="full", help="tiny | small | proxy | full")
    ap.add_argument("--context", type=int, default=4096, help="context length for the FLOPs table")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)
    cfg = get_config(args.config)
    counts = count_parameters(cfg)
    flops = {lay: attention_flops(cfg, lay, args.context) for lay in ("S3F1", "S1F1", "FFFF")}
    rel = layout_comparison(cfg, args.context)
    rel_same_heads = layout_comparison(cfg, args.context, swa_heads=cfg.n_heads_full)
    if args.json:
        print(json.dumps({"parameters": counts, "attention_flops": flops, "relative": rel,
                          "relative_same_heads": rel_same_heads}, indent=2))
        return
    print(f"config {cfg.name}: {cfg.n_layers} layers ({sum(t == FULL for t in cfg.layer_types)} full, "
          f"{sum(t == SWA for t in cfg.layer_types)} SWA), d_model {cfg.d_model}, vocab {cfg.vocab_size}, "
          f"{cfg.n_moe_layers} MoE layers × {cfg.n_experts} experts top-{cfg.top_k}")
    print(f"\n{'component':<16}{'total':>12}{'active':>12}")
    for c, v in counts["components"].items():
        print(f"{c:<16}{_fmt(v['total']):>12}{_fmt(v['active']):>12}")
    print(f"{'backbone':<16}{_fmt(counts['total']):>12}{_fmt(counts['active']):>12}"
          "   (active excludes the input embedding)")
    print(f"{'+ embedding':<16}{'':>12}{_fmt(counts['active_with_embedding']):>12}")
    print(f"{'with MTP':<16}{_fmt(counts['total_with_mtp']):>12}{_fmt(counts['active_with_mtp']):>12}"
          f"   (MTP heads {_fmt(counts['mtp']).strip()}, {_fmt(counts['mtp_per_head']).strip()} each"
          + (f" incl. its {_fmt(counts['mtp_output_heads'] // max(cfg.n_mtp, 1)).strip()} output layer)"
             if counts["mtp_output_heads"] else ", LM head shared)"))
    print(f"\nattention FLOPs per token at context {args.context} (window {cfg.window}):")
    print(f"{'layout':<8}{'decode GF':>12}{'prefill GF':>12}{'rel dec':>9}{'rel pre':>9}"
          f"{'rel dec*':>10}{'rel pre*':>10}{'report':>14}")
    for lay in ("FFFF", "S1F1", "S3F1"):
        f, r, s = flops[lay], rel[lay], rel_same_heads[lay]
        rep = REPORT_TABLE1[lay]
        print(f"{lay:<8}{f['decode'] / 1e9:>12.3f}{f['prefill'] / 1e9:>12.3f}"
              f"{r['decode']:>9.2f}{r['prefill']:>9.2f}{s['decode']:>10.2f}{s['prefill']:>10.2f}"
              f"{rep[0]:>8.2f}/{rep[1]:.2f}")
    print(f"* = same query-head count on SWA layers as on full layers ({cfg.n_heads_full}), the report's "
          "Table 1 setting; report = Table 1 (30B-A3B proxy, its own FLOPs convention, not given).")


if __name__ == "__main__":
    main()
