"""The planner through the real CLI (`stepcrawl plan --json`), exact allocation arithmetic,
and plan-wide accounting against token manifests."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from curricula.planner import largest_remainder, plan
from curricula.schema import validate_curriculum
from curricula.synthetic import write_source
from stepcrawl.cli import main
from curricula.schema import bundled

FULL, TINY = str(bundled("full")), str(bundled("tiny"))


def _plan_json(capsys, *args) -> tuple[int, dict]:
    rc = main(["plan", *args, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_full_yaml_numbers_through_the_cli(capsys):
    rc, p = _plan_json(capsys, "--curriculum", FULL)
    assert rc == 0 and p["errors"] == []
    ph = {x["phase"]: x for x in p["phases"]}
    assert [(x["phase"], x["tokens"], x["seq_len"]) for x in p["phases"]] == [
        ("stage1", 14_600_000_000_000, 4096),
        ("anneal", 2_000_000_000_000, 4096),
        ("anneal_long", 1_000_000_000_000, 32768),
        ("mid1", 386_000_000_000, 32768),
        ("mid2", 364_000_000_000, 131072),
    ]
    assert {s["name"]: s["tokens"] for s in p["stages"]} == {"pretrain": 17_600 * 10**9, "mid": 750 * 10**9}
    assert ph["mid1"]["replay_tokens"] == 81 * 10**9 and ph["mid2"]["replay_tokens"] == 10_500_000_000
    assert ph["mid1"]["replay_from"] == "stage1"
    for x in p["phases"]:  # allocations sum exactly to the budget
        assert sum(e["tokens"] for e in x["entries"]) == x["tokens"]
        assert sum(e["replay_tokens"] for e in x["entries"]) == x["replay_tokens"]
    # replay is drawn from stage1's sources only, in stage1's proportions
    s1 = {e["entry"]: e["tokens"] for e in ph["stage1"]["entries"]}
    rep = {e["entry"]: e["replay_tokens"] for e in ph["mid1"]["entries"] if e["replay_tokens"]}
    assert set(rep) == set(s1)
    for k, v in rep.items():
        assert abs(v - Fraction(81 * 10**9 * s1[k], 14_600 * 10**9)) < 1
    # steps implied by the batch ramp: 67,108,864 tokens per step after the ramp
    assert ph["mid1"]["steps"] == -(-386 * 10**9 // (2048 * 32768))
    assert ph["mid2"]["steps"] == -(-364 * 10**9 // (512 * 131072))
    assert [s["batch"] for s in ph["stage1"]["batch_segments"]] == [4096, 8192, 12288, 16384]
    assert [x["rope_theta_full"] for x in p["phases"]] == [1e4, 1e4, 1e6, 1e6, 5e6]


def test_full_yaml_table_and_plot(capsys, tmp_path):
    png = tmp_path / "schedule.png"
    assert main(["plan", "--curriculum", "full", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "14.6T" in out and "mid2" in out and "whole run" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**15),
    st.lists(st.integers(1, 1000), min_size=1, max_size=12),
)
def test_largest_remainder_is_exact(total, raw):
    s = sum(raw)
    weights = {f"s{i}": Fraction(w, s) for i, w in enumerate(raw)}
    alloc = largest_remainder(total, weights)
    assert sum(alloc.values()) == total
    for k, w in weights.items():
        assert abs(alloc[k] - total * w) < 1  # each within one token of its exact quota


CUR = yaml.safe_load(
    """
name: t
attention_block: 64
default_max_epochs: 1
max_epochs: {web: 1}
sources: {web: {}, web_hq: {source: web, tiers: [High]}, code: {}}
stages:
  - name: s
    phases:
      - name: a
        tokens: 30k
        seq_len: 128
        mixture: {web: 0.5, code: 0.5}
        max_epochs: {code: 3}
        schedule: {global_batch: 4, lr: {shape: constant, peak: 1.0e-3}}
      - name: b
        tokens: 30k
        seq_len: 128
        mixture: {web: 0.5, code: 0.5}
        max_epochs: {code: 3}
        schedule: {global_batch: 4, lr: {shape: constant, peak: 1.0e-3}}
"""
)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    # ~20k tokens each (200 docs × ~100), tiers cycle High/Medium-High/Medium
    write_source(root, "web", 200, seed=1, min_len=60, max_len=140)
    write_source(root, "code", 200, seed=2, min_len=60, max_len=140)
    return root


def test_plan_wide_accounting_catches_what_phases_alone_miss(tokens, capsys):
    web = json.loads((tokens / "web" / "manifest.json").read_text())["n_tokens"]
    cur = validate_curriculum(copy.deepcopy(CUR))
    p = plan(cur, tokens)
    # each phase takes 15k of ~20k web tokens (< 1 epoch), but together 30k > 1 epoch cap
    per_phase = {ph.phase: {e.entry: e for e in ph.entries} for ph in p.phases}
    assert per_phase["a"]["web"].epochs < 1 and per_phase["a"]["web"].shortfall == 0
    assert any(e.startswith("max_epochs.web: across the whole curriculum") for e in p.errors)
    src = {s.source: s for s in p.sources}
    assert src["web"].tokens == 30_000 and src["web"].supply == web and src["web"].shortfall > 0
    # code has cap 1 for the whole run too (default), phase caps of 3 don't lift it
    assert src["code"].shortfall > 0
    # the CLI exits non-zero and prints the errors
    path = tokens.parent / "cur.yaml"
    path.write_text(yaml.safe_dump(CUR))
    assert main(["plan", "--curriculum", str(path), "--tokens", str(tokens)]) == 2  # build-mix would refuse it
    assert "across the whole curriculum" in capsys.readouterr().out


def test_phase_level_shortfall_and_tier_supply(tokens):
    raw = copy.deepcopy(CUR)
    raw["max_epochs"] = {"web": 10, "code": 10}
    raw["stages"][0]["phases"][0]["mixture"] = {"web_hq": 0.5, "code": 0.5}
    raw["stages"][0]["phases"][0]["max_epochs"] = {"web_hq": 2}
    cur = validate_curriculum(raw)
    p = plan(cur, tokens)
    web = json.loads((tokens / "web" / "manifest.json").read_text())
    e = {x.entry: x for x in p.phase("a").entries}["web_hq"]
    assert e.supply == web["by_tier"]["High"]
    assert e.tokens == 15_000 and e.shortfall == 15_000 - 2 * e.supply
    assert any("phase 'a': mixture.web_hq" in m and "max_epochs 2" in m for m in p.errors)


def test_missing_manifest_is_reported(tmp_path, tokens):
    raw = copy.deepcopy(CUR)
    raw["sources"]["math"] = {}
    raw["stages"][0]["phases"][1]["mixture"] = {"web": 0.5, "math": 0.5}
    p = plan(validate_curriculum(raw), tokens)
    assert any("source 'math': no token manifest" in e for e in p.errors)


def test_scale_keeps_allocations_exact():
    cur = validate_curriculum(copy.deepcopy(CUR))
    p = plan(cur, scale="1e-3")
    assert [ph.tokens for ph in p.phases] == [30, 30]
    assert all(sum(e.tokens for e in ph.entries) == 30 for ph in p.phases)
