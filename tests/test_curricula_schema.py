"""Curriculum schema: the token-budget parser (hypothesis), bundled YAMLs, and bad curricula
failing with messages that name the stage, phase and field."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from curricula import CurriculumError, format_tokens, load_curriculum, parse_tokens
from curricula.schema import BatchRamp, MetaMaskAfter, RateDecay, validate_curriculum
from curricula.schema import bundled

FULL, TINY = str(bundled("full")), str(bundled("tiny"))

# ---- budget parser ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value",
    [
        ("14.6T", 14_600_000_000_000),
        ("386B", 386_000_000_000),
        ("10.5B", 10_500_000_000),
        ("750M", 750_000_000),
        ("1.5k", 1_500),
        ("1_000", 1_000),
        ("2e9", 2_000_000_000),
        ("17.6T", 17_600_000_000_000),
        (" 81B ", 81_000_000_000),
        (4096, 4096),
        (2.0e3, 2000),
    ],
)
def test_parse_tokens_examples(text, value):
    assert parse_tokens(text) == value
    assert isinstance(parse_tokens(text), int)


@pytest.mark.parametrize("bad", ["1.5", "abc", "12X", "-3B", "", "1.0001k", True, None, 1.5, "T"])
def test_parse_tokens_rejects(bad):
    with pytest.raises(ValueError):
        parse_tokens(bad)


@given(st.integers(min_value=0, max_value=10**16))
def test_format_parse_round_trip(n):
    assert parse_tokens(format_tokens(n)) == n


@given(
    st.integers(min_value=0, max_value=99_999),
    st.integers(min_value=0, max_value=999),
    st.sampled_from([("k", 10**3), ("M", 10**6), ("B", 10**9), ("T", 10**12)]),
)
def test_parse_decimal_suffix_is_exact(whole, frac, suffix):
    name, mult = suffix
    text = f"{whole}.{frac:03d}{name}"
    assert parse_tokens(text) == whole * mult + frac * mult // 1000


# ---- bundled curricula --------------------------------------------------------------------


def test_full_yaml_has_the_report_numbers():
    cur = load_curriculum(FULL)
    pre, mid = cur.stages
    assert [p.name for p in pre.phases] == ["stage1", "anneal", "anneal_long"]
    assert [p.tokens for p in pre.phases] == [14_600 * 10**9, 2 * 10**12, 10**12]
    assert [p.seq_len for p in pre.phases] == [4096, 4096, 32768]
    assert [p.tokens for p in mid.phases] == [386 * 10**9, 364 * 10**9]
    assert [p.seq_len for p in mid.phases] == [32768, 131072]
    assert [p.replay.tokens for p in mid.phases] == [81 * 10**9, 10_500 * 10**6]
    s1, an, al = (p.schedule for p in pre.phases)
    m1, m2 = (p.schedule for p in mid.phases)
    assert isinstance(s1.global_batch, BatchRamp)
    assert [s.batch for s in s1.global_batch.steps] == [4096, 8192, 12288, 16384]
    assert s1.global_batch.steps[-1].at == 400 * 10**9
    assert al.global_batch == 2048
    assert (s1.lr.peak, s1.lr.end, s1.lr.warmup) == (2.5e-4, 5e-5, 2000)
    assert (an.lr.shape, an.lr.start, an.lr.end) == ("cosine", 5e-5, 2e-5)
    assert (al.lr.shape, al.lr.peak) == ("constant", 2e-5)
    assert (m1.lr.shape, m1.lr.peak) == ("warmup_constant", 2e-5) and m2.lr.end == 7.3e-6
    assert [s.rope_theta_full for s in (s1, an, al, m1, m2)] == [1e4, 1e4, 1e6, 1e6, 5e6]
    assert {s.rope_theta_swa for s in (s1, an, al, m1, m2)} == {1e4}
    assert [s.mtp_weight for s in (s1, an, al, m1, m2)] == [0.3, 0.1, 0.1, 0.1, 0.1]
    assert [s.router_frozen for s in (s1, an, al, m1, m2)] == [False, False, False, True, True]
    assert [s.ep_loss_coef for s in (s1, an, al, m1, m2)] == [0.001, 0.001, 0.001, 0.0, 0.0]
    assert s1.bias_update_rate == 0.001 and an.bias_update_rate == RateDecay(start=0.001, end=0.0)
    assert s1.meta_loss_mask == MetaMaskAfter(after=3_800 * 10**9)
    assert cur.sources["web_long"].long_docs.min_tokens == 32768
    assert "web_long" in mid.phases[1].mixture
    assert sum(p.tokens for p in pre.phases) == 17_600 * 10**9
    assert sum(p.tokens for p in mid.phases) == 750 * 10**9


def test_tiny_yaml_has_the_same_shape():
    full, tiny = load_curriculum("full"), load_curriculum("tiny")
    assert [s.name for s in tiny.stages] == [s.name for s in full.stages]
    assert [p.name for _, p in tiny.phases] == [p.name for _, p in full.phases]
    assert [p.seq_len for _, p in tiny.phases] == [256, 256, 512, 512, 1024]
    demo = {"web", "code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning"}
    assert {s.source for s in tiny.sources.values()} == demo
    assert 100_000 <= tiny.total_tokens <= 1_000_000
    for (_, pt), (_, pf) in zip(tiny.phases, full.phases):
        for f in ("rope_theta_full", "rope_theta_swa", "mtp_weight", "router_frozen"):
            assert getattr(pt.schedule, f) == getattr(pf.schedule, f)
        assert (pt.replay is None) == (pf.replay is None)


# ---- bad curricula --------------------------------------------------------------------------

BASE = yaml.safe_load(
    textwrap.dedent(
        """
        name: t
        attention_block: 64
        sources: {web: {}, code: {}, web_hq: {source: web, tiers: [High]}}
        stages:
          - name: pre
            phases:
              - name: p1
                tokens: 10k
                seq_len: 128
                mixture: {web: 0.7, code: 0.3}
                schedule: {global_batch: 4, lr: {shape: constant, peak: 1.0e-3}}
          - name: mid
            phases:
              - name: m1
                tokens: 5k
                seq_len: 256
                replay: {from: p1, tokens: 1k}
                mixture: {code: 0.5, web_hq: 0.5}
                schedule: {global_batch: 2, lr: {shape: cosine, start: 1.0e-3, end: 1.0e-4}}
        """
    )
)


def _bad(mutate) -> str:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    with pytest.raises(CurriculumError) as exc:
        validate_curriculum(raw, "t.yaml")
    return str(exc.value)


def test_base_is_valid():
    cur = validate_curriculum(copy.deepcopy(BASE))
    eff = cur.effective_mixture("m1")
    assert sum(eff.values()) == 1
    assert eff["web"] == 0.7 * 0.2 or abs(float(eff["web"]) - 0.14) < 1e-12


def test_weights_not_summing_to_one():
    msg = _bad(lambda r: r["stages"][1]["phases"][0]["mixture"].update(code=0.4))
    assert "stage 'mid' / phase 'm1': mixture" in msg and "sum to 0.9" in msg


def test_unknown_source():
    msg = _bad(lambda r: r["stages"][0]["phases"][0]["mixture"].update(math=0.0))
    assert "stage 'pre' / phase 'p1': mixture: unknown source(s) ['math']" in msg


def test_seq_len_not_a_multiple_of_the_block():
    msg = _bad(lambda r: r["stages"][0]["phases"][0].update(seq_len=100))
    assert "phase 'p1': seq_len: 100 is not a multiple of attention_block 64" in msg


def test_bad_budget_names_the_field():
    msg = _bad(lambda r: r["stages"][1]["phases"][0].update(tokens="12Q"))
    assert "stage 'mid' / phase 'm1': tokens" in msg and "12Q" in msg


def test_replay_must_be_earlier_and_fit():
    msg = _bad(lambda r: r["stages"][0]["phases"][0].update(replay={"from": "m1", "tokens": "1k"}))
    assert "phase 'p1': replay.from: 'm1'" in msg
    msg = _bad(lambda r: r["stages"][1]["phases"][0]["replay"].update(tokens="6k"))
    assert "phase 'm1'" in msg and "replay.tokens" in msg


def test_unknown_tier_and_lr_shape_fields():
    msg = _bad(lambda r: r["sources"]["web_hq"].update(tiers=["Great"]))
    assert "sources.web_hq.tiers" in msg and "Great" in msg
    msg = _bad(lambda r: r["stages"][0]["phases"][0]["schedule"].update(lr={"shape": "cosine", "start": 1e-3}))
    assert "phase 'p1': schedule.lr" in msg and "needs 'end'" in msg


def test_stage_budget_must_match_phases():
    msg = _bad(lambda r: r["stages"][0].update(tokens="11k"))
    assert "stage 'pre': tokens" in msg


def test_unknown_field_is_rejected():
    msg = _bad(lambda r: r["stages"][0]["phases"][0].update(seqlen=128))
    assert "phase 'p1': seqlen" in msg


def test_bad_yaml_syntax_reports_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nstages:\n  - name: a\n    phases: [\n")
    with pytest.raises(CurriculumError) as exc:
        load_curriculum(f)
    assert f"{f}:" in str(exc.value) and "bad YAML" in str(exc.value)
    f.write_text("name: x\nsources: {a: {}}\n  bad: indent\n")
    with pytest.raises(CurriculumError, match=r"c\.yaml:3:"):
        load_curriculum(f)


def test_tiny_yaml_exercises_tiers_replay_long_docs_and_clusters():
    """The demo curriculum uses every per-source option the full one does."""
    tiny = load_curriculum("tiny")
    web_entries = {e: s for e, s in tiny.sources.items() if s.source == "web"}
    assert all(s.tiers for s in web_entries.values())  # web is always a tier range
    for name in ("anneal", "anneal_long", "mid1"):
        phase = tiny.phase(name)
        used = [e for e in phase.mixture if e in web_entries]
        assert used == ["web_hq"] and web_entries["web_hq"].tiers == ["High", "Medium-High"]
    assert {"web_hq", "web_mq"} <= set(tiny.phase("stage1").mixture)
    assert tiny.phase("anneal").cluster_downsample and tiny.phase("anneal_long").cluster_downsample
    assert tiny.phase("mid1").replay.from_ == "stage1" and tiny.phase("mid2").replay.from_ == "stage1"
    assert web_entries["web_long"].long_docs.min_tokens == 512 < tiny.phase("mid2").seq_len


def test_mtp_active_depths_field_is_optional_and_validated(tmp_path):
    import yaml as _yaml

    from curricula import CurriculumError, load_curriculum

    base = _yaml.safe_load(open(Path(__file__).resolve().parent.parent / "curricula" / "tiny.yaml"))
    assert load_curriculum(Path(__file__).resolve().parent.parent / "curricula" / "tiny.yaml").stages[0].phases[0].schedule.mtp_active_depths is None
    last = base["stages"][-1]["phases"][-1]
    last["schedule"]["mtp_active_depths"] = 3
    (tmp_path / "ok.yaml").write_text(_yaml.safe_dump(base, sort_keys=False))
    assert load_curriculum(tmp_path / "ok.yaml").stages[-1].phases[-1].schedule.mtp_active_depths == 3
    last["schedule"]["mtp_active_depths"] = -1
    (tmp_path / "bad.yaml").write_text(_yaml.safe_dump(base, sort_keys=False))
    with pytest.raises(CurriculumError, match="mtp_active_depths"):
        load_curriculum(tmp_path / "bad.yaml")
