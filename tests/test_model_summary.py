"""Parameter accounting of the named configs (meta device) and the attention-FLOPs model."""

from __future__ import annotations

import pytest

from model.config import get_config
from model.summary import attention_flops, count_parameters, layout_comparison, main


def test_full_config_matches_the_report():
    c = count_parameters(get_config("full"))
    # PAPER: 196B total / 11B active (backbone), MTP heads 0.81B.  Our convention: total
    # includes embedding + LM head; active excludes the input embedding (a lookup).
    assert abs(c["total"] / 196e9 - 1) < 0.02, c["total"]
    assert abs(c["active"] / 11e9 - 1) < 0.10, c["active"]
    # the report's 0.81B for MTP is one head with its own output layer (released layout)
    assert abs(c["mtp_per_head"] / 0.81e9 - 1) < 0.02, c["mtp_per_head"]
    assert c["mtp"] == 3 * c["mtp_per_head"] and c["mtp_output_heads"] == 3 * 128896 * 4096
    shared = count_parameters(get_config("full", mtp_share_lm_head=True))
    assert shared["mtp"] == c["mtp"] - c["mtp_output_heads"] and shared["total"] == c["total"]
    comps = c["components"]
    assert comps["embedding"]["total"] == comps["lm_head"]["total"] == 128896 * 4096  # untied
    assert comps["routed_experts"]["total"] == 42 * 288 * 3 * 4096 * 1280
    assert comps["routed_experts"]["active"] == 42 * 8 * 3 * 4096 * 1280
    # a full-attention layer: q 64·128, k/v 8·128 each, 64 gate columns, o 64·128 → d_model
    # (QK-norm weights are counted under "norms")
    assert comps["attention_full"]["total"] == 12 * (4096 * (64 * 128 + 2 * 8 * 128 + 64) + 64 * 128 * 4096)
    assert c["total_with_mtp"] == c["total"] + c["mtp"]


@pytest.mark.parametrize("name,total,active", [("proxy", 30e9, 3e9), ("small", 1e9, None)])
def test_smaller_configs_are_the_advertised_sizes(name, total, active):
    c = count_parameters(get_config(name))
    assert abs(c["total"] / total - 1) < 0.25, c["total"]
    if active:
        assert abs(c["active"] / active - 1) < 0.35, c["active"]


def test_layout_flops_ratios_are_sensible_and_near_the_report():
    proxy = get_config("proxy")
    r4k = layout_comparison(proxy, 4096, swa_heads=proxy.n_heads_full)  # Table 1: same heads everywhere
    for kind in ("decode", "prefill"):
        assert r4k["S3F1"][kind] == 1.0
        assert 1.0 < r4k["S1F1"][kind] < r4k["FFFF"][kind] < 4.0
    # with projections, decode at 16k reproduces Table 1 (2.68 / 1.58) within 5 %
    r16k = layout_comparison(proxy, 16384, swa_heads=proxy.n_heads_full)
    assert abs(r16k["FFFF"]["decode"] / 2.68 - 1) < 0.05 and abs(r16k["S1F1"]["decode"] / 1.58 - 1) < 0.05
    # core attention grows with context on full layers only
    a, b = attention_flops(proxy, "S3F1", 4096), attention_flops(proxy, "S3F1", 8192)
    assert a["projection"] == b["projection"] and b["core_decode"] > a["core_decode"]
    ffff_a, ffff_b = attention_flops(proxy, "FFFF", 4096), attention_flops(proxy, "FFFF", 8192)
    assert ffff_b["core_decode"] == pytest.approx(2 * ffff_a["core_decode"])


def test_summary_cli_prints_counts(capsys):
    main(["--config", "full", "--context", "4096"])
    out = capsys.readouterr().out
    assert "routed_experts" in out and "FFFF" in out and "196.9" in out
