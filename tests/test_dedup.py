"""Dedup: normalisation, datasketch-identical MinHash, LSH keys, union-find, survivors, executor."""

from __future__ import annotations

import json
import random
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.cli import main as cli_main
from stepcrawl.dedup import (
    MAX_HASH,
    DedupConfig,
    GramSpans,
    MinHasher,
    UnionFind,
    band_keys,
    choose_survivor,
    estimate_jaccard,
    exact_key,
    fast_hash32,
    normalize_text,
    normalize_url,
    run_dedup,
    shingles,
)
from stepcrawl.document import Document
from stepcrawl.io import read_documents, write_documents
from stepcrawl.manifest import Accounting, StageManifest

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def rand_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) + rng.choice(["", ",", ".", "!"]) for _ in range(n))


# ----------------------------------------------------------------- normalisation


def test_normalize_text_folds_case_punctuation_digits_and_space():
    assert normalize_text("  Hello,   WORLD!!\n\tIt's 2023 — ok_go ") == "hello world it s 0000 ok go"
    assert normalize_text("École ＡＢＣ") == "école abc"  # NFKC folds full-width letters
    assert normalize_text("...!!!") == ""
    assert exact_key("Hello, world") == exact_key("hello   WORLD!")
    assert exact_key("hello world") != exact_key("hello word")


def test_shingles_short_and_empty_texts():
    assert shingles("a b c d e f", 5) == ["a b c d e", "b c d e f"]
    assert shingles("A, b", 5) == ["a b"]  # fewer words than n: one shingle of them all
    assert shingles(" ?! ", 5) == []
    with pytest.raises(ValueError):
        shingles("a", 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=6), st.integers(1, 6))
def test_vectorised_gram_spans_match_shingles(texts, n):
    spans = GramSpans(texts, n)
    expected = [(i, s.encode("utf-8", "surrogatepass")) for i, t in enumerate(texts) for s in shingles(t, n)]
    assert list(zip(spans.doc.tolist(), spans.grams())) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_ascii_fast_path_equals_general_normalisation(text):
    from stepcrawl.dedup.normalize import _normalize_general, normalize_bytes

    assert normalize_bytes(text) == _normalize_general(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_normalize_text_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once and "  " not in once and once == once.strip()


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["example.com", "WWW.Example.org", "sub.site.net:8080", "site.org:443"]),
    st.lists(st.text(alphabet="abcXYZ019-._~", min_size=1, max_size=6), max_size=3),
    st.lists(st.tuples(st.sampled_from(["a", "b", "utm_source", "q", "fbclid"]), st.text(alphabet="xyz0", max_size=3)), max_size=3),
    st.booleans(),
)
def test_normalize_url_is_idempotent(scheme, host, path, query, slash):
    url = f"{scheme}://{host}/" + "/".join(path) + ("/" if slash else "")
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query)
    once = normalize_url(url)
    assert normalize_url(once) == once
    assert once.startswith("https://") and "utm_" not in once and "fbclid" not in once and "#" not in once


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["https://a.org/", "http://WWW.b.com:80/x?", "", "HTTP://c.net/?utm_x=1&"]), st.text(max_size=40))
def test_normalize_url_never_fails_and_is_idempotent_on_junk(prefix, junk):
    once = normalize_url(prefix + junk)
    assert once is None or normalize_url(once) == once


def test_normalize_url():
    a = normalize_url("HTTP://WWW.Example.com:80/a/b/?utm_source=x&b=2&a=1#frag")
    assert a == "https://example.com/a/b?a=1&b=2"
    assert normalize_url("https://example.com/a/b?b=2&a=1&fbclid=zz") == a
    assert normalize_url("https://example.com/a/c") != a
    assert normalize_url("https://example.com/a?page=2") != normalize_url("https://example.com/a?page=3")
    assert normalize_url(None) is None and normalize_url("  ") is None


# ----------------------------------------------------------------- MinHash vs datasketch


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(7)
    out = [rand_text(rng, rng.randint(0, 300)) for _ in range(60)]
    return out + ["", "two words", "Ünïcödé — テキスト 日本語 text, with ½ and 12345 numbers " * 3]


@pytest.mark.parametrize("hash_name", ["sha1", "fast"])
def test_signatures_bit_identical_to_datasketch(texts, hash_name):
    cfg = DedupConfig(hash=hash_name, seed=3)
    sigs = MinHasher(cfg).signatures(texts)
    assert sigs.shape == (len(texts), 112) and sigs.dtype == np.uint32
    for text, sig in zip(texts, sigs):
        kwargs = {} if hash_name == "sha1" else {"hashfunc": fast_hash32}
        ref = MinHash(num_perm=112, seed=3, **kwargs)
        ref.update_batch([s.encode("utf-8") for s in shingles(text, 5)])
        np.testing.assert_array_equal(ref.hashvalues, sig)
    assert np.all(sigs[texts.index("")] == MAX_HASH)


def test_signatures_estimate_jaccard(texts):
    hasher = MinHasher(DedupConfig(bands=32, rows=8))  # 256 permutations: σ ≈ 0.03
    rng = random.Random(3)
    errs = []
    for text in texts[:40]:
        words = text.split()
        if len(words) < 50:
            continue
        edited = " ".join(w if rng.random() > 0.08 else "zzz" + w for w in words)
        a, b = set(shingles(text, 5)), set(shingles(edited, 5))
        true = len(a & b) / len(a | b)
        sig = hasher.signatures([text, edited])
        errs.append(estimate_jaccard(sig[0], sig[1]) - true)
    assert len(errs) >= 20
    assert abs(np.mean(errs)) < 0.02 and np.max(np.abs(errs)) < 0.15


def test_band_keys_match_datasketch_minhash_lsh(texts):
    cfg = DedupConfig(hash="sha1", bands=14, rows=8)
    rng = random.Random(11)
    base = [t for t in texts if len(t.split()) > 100][:15]
    docs = base + [" ".join(w if rng.random() > 0.03 else "q" for w in t.split()) for t in base]
    sigs = MinHasher(cfg).signatures(docs)
    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    for i, sig in enumerate(sigs):
        lsh.insert(i, MinHash(num_perm=112, hashvalues=sig, scheme="affine32"))
    buckets = defaultdict(set)
    for i, sig in enumerate(sigs):
        keys = band_keys(sig, cfg)
        assert len(keys) == 14 and len(set(keys)) == 14 and all(len(k) == 2 + 8 * 4 for k in keys)
        for key in keys:
            buckets[key].add(i)
    ours = {i: set().union(*(buckets[k] for k in band_keys(sig, cfg))) for i, sig in enumerate(sigs)}
    theirs = {i: set(lsh.query(MinHash(num_perm=112, hashvalues=sig, scheme="affine32"))) for i, sig in enumerate(sigs)}
    assert ours == theirs
    assert sum(len(v) > 1 for v in ours.values()) >= 20  # the edited copies were found


def test_band_keys_locate_differences():
    cfg = DedupConfig(bands=4, rows=2)
    sig = np.arange(8, dtype=np.uint32)
    other = sig.copy()
    other[5] = 99  # band 2
    ka, kb = band_keys(sig, cfg), band_keys(other, cfg)
    assert [a == b for a, b in zip(ka, kb)] == [True, True, False, True]
    assert ka[1][:2] == b"\x01\x00"
    with pytest.raises(ValueError):
        band_keys(sig[:6], cfg)


# ----------------------------------------------------------------- union-find and survivors


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))))
def test_union_find_components_equal_graph_components(case):
    n, edges = case
    uf = UnionFind(range(n))
    for a, b in edges:
        uf.union(a, b)
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, reference = set(), []
    for start in range(n):  # BFS reference
        if start in seen:
            continue
        comp, todo = set(), [start]
        while todo:
            x = todo.pop()
            if x not in comp:
                comp.add(x)
                todo.extend(adj[x] - comp)
        seen |= comp
        reference.append(frozenset(comp))
    assert {frozenset(c) for c in uf.components()} == set(reference)
    assert sum(len(c) for c in uf.components()) == n
    for a, b in edges:
        assert uf.connected(a, b) and uf.size(a) == uf.size(b)


def test_survivor_rule():
    docs = [
        Document(id="c", text="x" * 50, tier="Medium"),
        Document(id="b", text="x" * 10, tier="High"),
        Document(id="a", text="x" * 10, tier="High"),
        Document(id="d", text="x" * 900, tier=None),
    ]
    assert choose_survivor(docs) == "a"  # best tier, then longest, then smallest id
    assert choose_survivor(docs[:1] + docs[3:]) == "c"  # a tier beats no tier
    assert choose_survivor([{"id": "z", "tier": "Low", "n_chars": 5}, {"id": "y", "tier": "Low", "n_chars": 9}]) == "y"
    with pytest.raises(ValueError):
        choose_survivor([])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["High", "Medium", "Low", None]), st.integers(0, 5)), min_size=1, max_size=12), st.randoms())
def test_survivor_is_order_independent(members, rnd):
    docs = [Document(id=f"id{i}", text="x" * n, tier=t) for i, (t, n) in enumerate(members)]
    first = choose_survivor(docs)
    rnd.shuffle(docs)
    assert choose_survivor(docs) == first


# ----------------------------------------------------------------- executor


def corpus() -> list[Document]:
    rng = random.Random(5)
    base = [rand_text(rng, 120) for _ in range(6)]
    docs = [Document(id=f"u{i}", text=t, url=f"https://site.org/p{i}") for i, t in enumerate(base)]
    docs += [
        Document(id="url-dup", text=rand_text(rng, 80), url="HTTP://www.site.org/p0/#top"),  # same URL as u0
        # normalises to u1's text; longer, so it survives
        Document(id="exact-dup", text=base[1].upper() + " !!", url="https://other.org/x"),
        Document(id="near-dup", text=base[2].replace(base[2].split()[60], "CHANGED", 1), tier="High"),  # beats u2
        Document(id="empty-1", text="..."),
        Document(id="empty-2", text="   "),
    ]
    return docs


def test_run_dedup_accounting_reasons_clusters(tmp_path):
    docs = corpus()
    m = run_dedup(docs, tmp_path / "out", DedupConfig(), keep_rejected=True, progress=False)
    acc = m.accounting
    assert dict(acc.drops) == {"dup:url": 1, "dup:exact": 2, "dup:near": 1}
    assert acc.docs_in == len(docs) == acc.docs_out + sum(acc.drops.values())
    kept = {d.id: d for d in read_documents(tmp_path / "out")}
    assert set(kept) == {"u0", "exact-dup", "u3", "u4", "u5", "near-dup", "empty-1"}
    assert kept["near-dup"].dup_cluster == "near-dup"  # High tier beats the original
    assert kept["u0"].dup_cluster == "u0" and kept["u3"].dup_cluster is None
    rej = pq.read_table(tmp_path / "out" / "rejected").to_pylist()
    reasons = {r["id"]: (r["drop_reason"], r["dup_cluster"]) for r in rej}
    assert reasons == {
        "url-dup": ("dup:url", "u0"),
        "u1": ("dup:exact", "exact-dup"),
        "u2": ("dup:near", "near-dup"),
        "empty-2": ("dup:exact", "empty-1"),
    }
    saved = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert saved["drops"] == {"dup:exact": 2, "dup:near": 1, "dup:url": 1}
    assert saved["extra"]["cluster_sizes"] == {"2": 4}
    assert saved["extra"]["no_shingles"] == 2


def test_run_dedup_stage_switches_and_empty_docs(tmp_path):
    docs = corpus()
    m = run_dedup(docs, tmp_path / "o", DedupConfig(url=False, exact=False), progress=False)
    # without exact dedup the normalised-equal copy is caught as a near duplicate; texts without
    # shingles never share LSH buckets
    assert dict(m.accounting.drops) == {"dup:near": 2}
    m = run_dedup(docs, tmp_path / "o2", DedupConfig(url=False, exact=False, near=False), progress=False)
    assert m.accounting.docs_out == len(docs) and not m.accounting.drops
    m = run_dedup([], tmp_path / "o3", progress=False)
    assert m.accounting.docs_in == 0 and (tmp_path / "o3" / "_manifest.json").exists()


def test_run_dedup_from_path_skips_when_up_to_date_and_cli(tmp_path, capsys):
    src = tmp_path / "in"
    write_documents(src / "part-00000.parquet", corpus())
    StageManifest("filter", {}, "x", None, Accounting()).write(src)  # an upstream stage's manifest
    first = run_dedup(src, tmp_path / "out", DedupConfig(shard_docs=3), progress=False)
    assert len(first.shards) == 3  # 7 kept documents in shards of 3
    again = run_dedup(src, tmp_path / "out", DedupConfig(shard_docs=3), progress=False)
    assert again.created_at == first.created_at  # reused, not recomputed
    rc = cli_main(["dedup", str(src), "--out", str(tmp_path / "cli"), "--no-url", "--bands", "8", "--rows", "4", "--keep-rejected"])
    assert rc == 0
    saved = StageManifest.read(tmp_path / "cli")
    assert saved.config["url"] is False and saved.config["bands"] == 8
    assert dict(saved.accounting.drops) == {"dup:exact": 2, "dup:near": 1}  # url-dup survives
    assert "dedup:" in capsys.readouterr().out


def test_parallel_signing_pass_gives_the_same_output_and_reports_bad_rows(tmp_path, monkeypatch):
    """``workers`` > 1 runs pass 1 over the folder's files on several processes: the same kept
    documents, drop reasons, clusters and accounting as one process, and a malformed row in one
    file is reported (FILE:ROW) without costing the other rows or files."""
    import pyarrow as pa

    rng = random.Random(7)
    docs = corpus()
    extra = [Document(id=f"x{i}", text=rand_text(rng, 60), url=f"https://x.org/{i}") for i in range(40)]
    extra += [Document(id=f"xd{i}", text=extra[i].text + " tail", url=f"https://y.org/{i}") for i in range(0, 40, 5)]
    alldocs = docs + extra
    src = tmp_path / "in"
    for k in range(4):  # four shards, duplicates across shard boundaries
        write_documents(src / f"part-{k:05d}.parquet", alldocs[k::4])
    good = pq.read_table(src / "part-00001.parquet").to_pylist()
    bad = dict(good[0], id=None, text=None)  # no text: not a Document
    pq.write_table(pa.Table.from_pylist(good[:2] + [bad] + good[2:], schema=pq.read_schema(src / "part-00001.parquet")),
                   src / "part-00001.parquet")
    import stepcrawl.dedup.local as local

    parallel_runs = []
    real = local.parallel_keys
    monkeypatch.setattr(local, "parallel_keys", lambda *a: parallel_runs.append(a[2]) or real(*a))
    outs = {}
    for w in (1, 2):
        m = run_dedup(src, tmp_path / f"out{w}", DedupConfig(shard_docs=7), keep_rejected=True, progress=False, workers=w)
        kept = [(d.id, d.dup_cluster) for d in read_documents(tmp_path / f"out{w}")]
        rej = sorted((r["id"], r["drop_reason"], r["dup_cluster"]) for r in pq.read_table(tmp_path / f"out{w}" / "rejected").to_pylist())
        outs[w] = (kept, rej, m.accounting.to_dict(), m.extra["errors"], m.extra["cluster_sizes"], m.extra["near"])
    assert parallel_runs == [2]  # workers=1 read serially, workers=2 signed on two processes
    assert outs[1] == outs[2]
    kept, rej, acc, errors, _, _ = outs[2]
    assert len(errors) == 1 and "part-00001.parquet:3" in errors[0]
    assert acc["drops"]["malformed"] == 1
    assert acc["docs_in"] == len(alldocs) + 1 == len(kept) + sum(acc["drops"].values())
    assert {r[1] for r in rej} >= {"dup:url", "dup:exact", "dup:near"}
