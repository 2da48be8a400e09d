"""Near-duplicate detection quality of the default MinHash-LSH settings (14 bands × 8 rows).

Test set: real English text (docstrings of ~50 stdlib modules, cut into non-overlapping
200-word base documents) and, per base, one edited copy (random word substitutions,
deletions and insertions at a per-pair edit rate). Each pair's *true* Jaccard is measured
exactly on the two 5-word shingle sets. A pair is *flagged* when the two documents share an
LSH bucket (MinHashLSH's candidate semantics).

- recall@0.8: share of designed pairs with true J ≥ 0.8 that are flagged (must be ≥ 0.95).
- precision: among all flagged pairs (designed or accidental, between any two documents),
  the share whose true J ≥ 0.5 (must be ≥ 0.99); a flagged pair below 0.5 is a false positive.
Per-bin flag rates are also checked against the S-curve 1 - (1 - J^r)^b.
"""

from __future__ import annotations

import importlib
import inspect
import random
import warnings

import numpy as np
import pytest

from stepcrawl.dedup import DedupConfig, MinHasher, band_ids, run_dedup, shingles
from stepcrawl.document import Document

MODULES = [
    "argparse", "asyncio", "collections", "concurrent.futures", "configparser", "contextlib", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions", "functools",
    "http.client", "http.server", "imaplib", "inspect", "ipaddress", "itertools", "json", "logging",
    "mailbox", "multiprocessing", "os", "pathlib", "pickle", "pydoc", "random", "re", "shutil",
    "smtplib", "socket", "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "unittest", "urllib.request", "uuid", "xml.dom.minidom", "zipfile",
]


def stdlib_words() -> list[str]:
    """Words of the (deduplicated) docstrings of stdlib modules and their public members."""
    seen: set[str] = set()
    docs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            objs = [mod] + [getattr(mod, a, None) for a in sorted(dir(mod)) if not a.startswith("_")]
            for obj in objs:  # modules, their public members and the methods of their classes
                members = [getattr(obj, a, None) for a in sorted(vars(obj)) if not a.startswith("_")] if inspect.isclass(obj) else []
                for x in [obj, *members]:
                    doc = inspect.getdoc(x) if x is not None else None
                    if doc and doc not in seen and len(doc.split()) >= 10:
                        seen.add(doc)
                        docs.append(doc)
    return " ".join(docs).split()


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(shingles(a, n)), set(shingles(b, n))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def edit(words: list[str], rate: float, vocab: list[str], rng: random.Random) -> list[str]:
    out: list[str] = []
    for w in words:
        r = rng.random()
        if r < rate:  # substitute
            out.append(rng.choice(vocab))
        elif r < rate * 1.25:  # delete
            continue
        elif r < rate * 1.5:  # insert before
            out.extend([rng.choice(vocab), w])
        else:
            out.append(w)
    return out


@pytest.fixture(scope="module")
def pairs():
    words = stdlib_words()
    rng = random.Random(1234)
    vocab = sorted(set(words))
    size = 200
    n_pairs = min(450, len(words) // size)
    assert n_pairs >= 300, "not enough stdlib docstring text for the test set"
    texts, truth = [], []
    for i in range(n_pairs):
        base = words[i * size : (i + 1) * size]
        # 55 % light edits (mostly J ≥ 0.7), 45 % heavier ones (J spread over ~0.2 … 0.7)
        rate = rng.uniform(0.0, 0.03) if rng.random() < 0.55 else rng.uniform(0.03, 0.12)
        a, b = " ".join(base), " ".join(edit(base, rate, vocab, rng))
        texts += [a, b]
        truth.append(jaccard(a, b))
    return texts, np.array(truth)


def flagged_pairs(texts: list[str], cfg: DedupConfig) -> set[tuple[int, int]]:
    sigs = MinHasher(cfg).signatures(texts)
    ids = band_ids(sigs, cfg)
    found: set[tuple[int, int]] = set()
    for band in range(cfg.bands):
        buckets: dict[int, list[int]] = {}
        for i, key in enumerate(ids[:, band].tolist()):
            buckets.setdefault(key, []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    found.add((members[x], members[y]))
    return found


def test_precision_recall_default_settings(pairs):
    texts, truth = pairs
    cfg = DedupConfig()
    found = flagged_pairs(texts, cfg)
    designed = np.array([(2 * i, 2 * i + 1) in found for i in range(len(truth))])
    high = truth >= 0.8
    recall = designed[high].mean()
    true_j = [jaccard(texts[a], texts[b]) for a, b in sorted(found)]
    false_pos = sum(j < 0.5 for j in true_j)
    precision = 1 - false_pos / max(1, len(found))
    rows = []
    for lo, hi in [(0, 0.3), (0.3, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)]:
        sel = (truth >= lo) & (truth < hi)
        if sel.sum():
            theory = np.mean([cfg.candidate_probability(j) for j in truth[sel]])
            rows.append((lo, hi, int(sel.sum()), designed[sel].mean(), theory))
    report = "\n".join(f"  J∈[{lo:.1f},{hi:.1f}) n={n:4d} flagged={obs:.3f} S-curve={th:.3f}" for lo, hi, n, obs, th in rows)
    print(f"\npairs={len(truth)} J≥0.8: {high.sum()} recall={recall:.4f} flagged={len(found)} FP(J<0.5)={false_pos} precision={precision:.4f}\n{report}")
    assert high.sum() >= 120
    assert recall >= 0.95, report
    assert precision >= 0.99, report
    for lo, hi, n, obs, theory in rows:  # the observed S-curve follows the theoretical one
        if n >= 30:
            assert abs(obs - theory) <= 3 * np.sqrt(theory * (1 - theory) / n) + 0.03, (lo, hi, obs, theory)


def test_run_dedup_drops_near_duplicates_and_keeps_the_rest(pairs, tmp_path):
    texts, truth = pairs
    docs = [Document(id=f"d{i:04d}", text=t) for i, t in enumerate(texts)]
    m = run_dedup(docs, tmp_path / "out", DedupConfig(), keep_rejected=True, progress=False)
    near = m.accounting.drops.get("dup:near", 0) + m.accounting.drops.get("dup:exact", 0)
    # every pair ≥ 0.9 is flagged with probability > 0.999; pairs < 0.3 almost never
    assert near >= (truth >= 0.9).sum()
    assert near <= (truth >= 0.3).sum()
    assert m.accounting.docs_in == m.accounting.docs_out + sum(m.accounting.drops.values()) == len(texts)
