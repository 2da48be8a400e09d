"""DCLM-style fastText quality classifier: supervised fastText on word bigrams, labels hq / lq.

``train_quality`` reads positives and negatives from Parquet/JSONL (Documents, need ``text``) or
plain text (one document per blank-line-separated block), normalises them the same way the
classifier sees documents at curate time, trains with fastText, and reports held-out accuracy.
``QualityClassifierStep`` writes ``quality["fasttext_hq"]`` = P(hq) on every document.
"""

from __future__ import annotations

import random
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from stepcrawl.document import Document
from stepcrawl.langid import load_fasttext, predict, train_fasttext_supervised
from stepcrawl.steps import DocumentStep

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def normalize(text: str, max_chars: int = 20_000) -> str:
    """One line of lower-cased tokens with punctuation split off (as DCLM's fastText input)."""
    return " ".join(_TOKEN.findall(text[:max_chars].lower()))


def iter_texts(path: str | Path, on_error=None) -> Iterator[str]:
    """Texts of a training input: .txt (blank-line-separated blocks) or Parquet/JSONL Documents.
    A malformed record goes to ``on_error(BadRecord)`` (default: raise), as in ``read_documents``."""
    p = Path(path)
    if p.is_file() and p.suffix in (".txt", ".md"):
        blocks = re.split(r"\n\s*\n", p.read_text(encoding="utf-8", errors="replace"))
        yield from (b.strip() for b in blocks if b.strip())
        return
    from stepcrawl.io import read_documents

    for doc in read_documents(p, on_error=on_error):
        if doc.text.strip():
            yield doc.text


MAX_LISTED_ERRORS = 100  # a report lists the first malformed records by FILE:LINE, counts all


@dataclass
class TrainingTexts:
    """Normalised texts of one training input, and the malformed records skipped on the way."""

    texts: list[str]
    n_malformed: int = 0
    errors: list[str] = field(default_factory=list)


def read_training_texts(path: str | Path, max_chars: int) -> TrainingTexts:
    """Normalised, non-empty texts of ``path``. One malformed line costs only itself: it is
    counted and listed (``FILE:LINE: why``), never the reason a whole training run is refused."""
    out = TrainingTexts([])

    def skip(err) -> None:
        out.n_malformed += 1
        if len(out.errors) < MAX_LISTED_ERRORS:
            out.errors.append(str(err))

    out.texts = [t for t in (normalize(x, max_chars) for x in iter_texts(path, on_error=skip)) if t]
    return out


@dataclass(frozen=True)
class QualityTrainConfig:
    epoch: int = 20
    lr: float = 0.5
    word_ngrams: int = 2  # DCLM: bigrams
    dim: int = 64
    # Hash buckets for word n-grams. fastText's default (2M) makes a 64-dim model ~500 MB;
    # 200k keeps it ~50 MB with few bigram collisions at the sizes we train on (≤ 1M docs).
    bucket: int = 200_000
    min_count: int = 1
    holdout: float = 0.1
    seed: int = 0
    max_chars: int = 20_000


@dataclass
class QualityTrainReport:
    model: str
    n_positive: int
    n_negative: int
    n_train: int
    n_holdout: int
    holdout_accuracy: float | None
    config: dict[str, Any]
    n_malformed: int = 0  # input records skipped as malformed (listed in ``errors``)
    errors: list[str] = field(default_factory=list)


def train_two_class(pos_texts: list[str], neg_texts: list[str], labels: tuple[str, str], out: str | Path, cfg) -> tuple[int, int, float | None]:
    """Train and save a two-label fastText classifier (DCLM style: one thread, ``cfg.seed``,
    a held-out share for accuracy). ``cfg`` carries epoch, lr, word_ngrams, dim, min_count,
    bucket, holdout and seed. Returns ``(n_train, n_holdout, holdout accuracy or None)``."""
    from stepcrawl.io import atomic_path

    pos_label, neg_label = labels
    rows = [f"__label__{pos_label} {t}" for t in pos_texts] + [f"__label__{neg_label} {t}" for t in neg_texts]
    rng = random.Random(cfg.seed)
    rng.shuffle(rows)
    n_hold = int(len(rows) * cfg.holdout) if len(rows) >= 20 else 0
    hold, train = rows[:n_hold], rows[n_hold:]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", dir=out.parent, delete=False) as fh:
        fh.write("\n".join(train) + "\n")
        train_path = fh.name
    try:
        model = train_fasttext_supervised(
            input=train_path, epoch=cfg.epoch, lr=cfg.lr, wordNgrams=cfg.word_ngrams, dim=cfg.dim,
            minCount=cfg.min_count, bucket=cfg.bucket, loss="softmax", thread=1, seed=cfg.seed, verbose=0,
        )
    finally:
        Path(train_path).unlink(missing_ok=True)
    acc = None
    if hold:
        correct = 0
        for row in hold:
            label, text = row.split(" ", 1)
            pred = predict(model, text, k=1)
            correct += bool(pred) and "__label__" + pred[0][0] == label
        acc = correct / len(hold)
    with atomic_path(out) as tmp:
        model.save_model(str(tmp))
    return len(train), len(hold), acc


@dataclass
class TwoClassRun:
    """What training a two-label classifier from two inputs did (``train_two_class_from``)."""

    n_first: int
    n_second: int
    n_train: int
    n_holdout: int
    holdout_accuracy: float | None
    n_malformed: int
    errors: list[str]


def train_two_class_from(first: str | Path, second: str | Path, labels: tuple[str, str], out: str | Path, cfg) -> TwoClassRun:
    """Read both inputs (malformed records skipped and listed), refuse when a class is empty,
    train with ``train_two_class`` and say what was done."""
    a, b = read_training_texts(first, cfg.max_chars), read_training_texts(second, cfg.max_chars)
    if not a.texts or not b.texts:
        raise ValueError(f"need both classes: {len(a.texts)} {labels[0]} texts in {first}, {len(b.texts)} {labels[1]} in {second}")
    n_train, n_hold, acc = train_two_class(a.texts, b.texts, labels, out, cfg)
    return TwoClassRun(len(a.texts), len(b.texts), n_train, n_hold, acc, a.n_malformed + b.n_malformed,
                       (a.errors + b.errors)[:MAX_LISTED_ERRORS])


def label_probability(model, text: str, labels: tuple[str, str], max_chars: int = 20_000) -> float:
    """P(labels[0]) of a text under a two-label model (0.0 for a text with no tokens)."""
    line = normalize(text, max_chars)
    if not line:
        return 0.0
    preds = dict(predict(model, line, k=2))
    return float(min(1.0, preds.get(labels[0], 1.0 - preds.get(labels[1], 1.0))))


def train_quality(positive: str | Path, negative: str | Path, out: str | Path, cfg: QualityTrainConfig = QualityTrainConfig()) -> QualityTrainReport:
    run = train_two_class_from(positive, negative, ("hq", "lq"), out, cfg)
    return QualityTrainReport(str(out), run.n_first, run.n_second, run.n_train, run.n_holdout, run.holdout_accuracy,
                              asdict(cfg), run.n_malformed, run.errors)


def hq_probability(model, text: str, max_chars: int = 20_000) -> float:
    return label_probability(model, text, ("hq", "lq"), max_chars)


class QualityClassifierStep(DocumentStep):
    """Annotate ``quality["fasttext_hq"]`` (probability of the hq label). Never drops."""

    name = "quality_classifier"

    def __init__(self, model_path: str, max_chars: int = 20_000):
        super().__init__(model_path=str(model_path), max_chars=max_chars)
        self.model = None

    def _picklable_state(self) -> dict[str, Any]:
        return {"model": None}

    def setup(self) -> None:
        if not Path(self.config["model_path"]).exists():
            raise FileNotFoundError(f"quality model {self.config['model_path']} not found (train one with `stepcrawl train-quality`)")
        self.model = load_fasttext(self.config["model_path"])

    def process(self, doc: Document) -> Document:
        p = hq_probability(self.model, doc.text, self.config["max_chars"])
        return doc.replace(quality={**doc.quality, "fasttext_hq": round(p, 5)})
