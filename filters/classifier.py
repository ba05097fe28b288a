"""A fastText quality classifier: trained from positive and negative document sets (as DCLM and Dolma do),
evaluated on a held-out split, saved with a manifest, and applied by the filter stage as a stored score.

Training is single-threaded with a fixed seed, so the same inputs give the same model bytes. Documents are
normalised the way they are scored (lower-cased, whitespace collapsed to one line, first MAX_CHARS
characters), and the split is by a hash of the text, so a document lands on the same side on every run.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from filters.classifier_inputs import ClassifierInputError
from pipeline.core.atomic import write_json

POSITIVE, NEGATIVE = "__label__pos", "__label__neg"
MAX_CHARS = 20_000
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text[:MAX_CHARS].lower()).strip()


def _held_out(text: str, fraction: float, seed: int) -> bool:
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest(), "little")
    return h / 2**64 < fraction


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic over average ranks (ties count half)."""
    from scipy.stats import rankdata

    pos = labels.sum()
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclass
class ClassifierSettings:
    epoch: int = 10
    lr: float = 0.5
    word_ngrams: int = 2
    dim: int = 64
    min_count: int = 2
    test_fraction: float = 0.2
    seed: int = 0
    threshold: float = 0.5
    # product-quantize the model (fastText ``quantize``: the input rows with the largest norms kept, retrained,
    # 8-bit codes): ~500 MiB -> ~4 MiB per model in every filter worker, for a held-out AUC change the
    # manifest records (``metrics_unquantized`` beside ``metrics``)
    quantize: bool = False
    quantize_cutoff: int = 100_000
    extra: dict = field(default_factory=dict)


def train_classifier(positive: list[tuple[str, str]], negative: list[tuple[str, str]], out_dir: str,
                     settings: ClassifierSettings, inputs: dict) -> dict:
    import fasttext

    if not positive or not negative:
        raise ClassifierInputError(f"need documents on both sides (positive: {len(positive)}, negative: {len(negative)})")
    os.makedirs(out_dir, exist_ok=True)
    train, test = [], []
    empty = {POSITIVE: 0, NEGATIVE: 0}
    for label, docs in ((POSITIVE, positive), (NEGATIVE, negative)):
        for _, text in docs:
            line = normalise(text)
            if not line:
                empty[label] += 1
                continue
            (test if _held_out(line, settings.test_fraction, settings.seed) else train).append((label, line))
    if not any(lb == POSITIVE for lb, _ in train) or not any(lb == NEGATIVE for lb, _ in train):
        raise ClassifierInputError(f"no training text on one side after the held-out split (empty documents: {empty})")
    train.sort()  # input order must not depend on the listing order of the inputs
    train_file = os.path.join(out_dir, "train.txt")
    with open(train_file, "w", encoding="utf-8") as f:
        f.writelines(f"{label} {line}\n" for label, line in train)
    model = fasttext.train_supervised(
        input=train_file, epoch=settings.epoch, lr=settings.lr, wordNgrams=settings.word_ngrams, dim=settings.dim,
        minCount=settings.min_count, thread=1, seed=settings.seed, verbose=0,
    )
    unquantized = None
    if settings.quantize:
        unquantized = held_out_metrics(model, test, settings.threshold)
        model.quantize(input=train_file, qnorm=True, retrain=True, cutoff=settings.quantize_cutoff, thread=1, verbose=0)
    os.remove(train_file)
    model_name = "model.ftz" if settings.quantize else "model.bin"
    model_path = os.path.join(out_dir, model_name)
    model.save_model(model_path)
    metrics = held_out_metrics(model, test, settings.threshold) | {
        "train": len(train), "empty_positive": empty[POSITIVE], "empty_negative": empty[NEGATIVE]}
    with open(model_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    manifest = {
        "model": model_name, "model_sha256": digest, "labels": {"positive": POSITIVE, "negative": NEGATIVE},
        "inputs": inputs, "settings": asdict(settings), "metrics": metrics,
        **({"metrics_unquantized": unquantized} if unquantized else {}),
        "fasttext": getattr(fasttext, "__version__", "fasttext-numpy2-wheel"), "normalisation": "lowercase, whitespace collapsed, first 20000 chars",
    }
    write_json(os.path.join(out_dir, "manifest.json"), manifest, indent=1, sort_keys=True)
    return manifest


def held_out_metrics(model, test: list[tuple[str, str]], threshold: float) -> dict:
    labels = np.array([label == POSITIVE for label, _ in test])
    scores = np.array([_positive_probability(model, line) for _, line in test])
    pred = scores >= threshold
    tp = int((pred & labels).sum())
    return {
        "held_out": len(test), "held_out_positive": int(labels.sum()),
        "precision": round(tp / max(int(pred.sum()), 1), 4), "recall": round(tp / max(int(labels.sum()), 1), 4),
        "accuracy": round(float((pred == labels).mean()) if len(test) else float("nan"), 4),
        "auc": round(auc(scores, labels), 4), "threshold": threshold,
    }


def _positive_probability(model, line: str) -> float:
    labels, probs = model.predict(line, k=2)
    return float(dict(zip(labels, probs)).get(POSITIVE, 0.0))


# one model resident per worker: a full quality model is ~500 MiB, and a worker that meets English and Chinese
# files would otherwise hold both; a task's documents come file by file, so a switch (0.25 s to load) happens
# at most once per file
@lru_cache(maxsize=1)
def _load(path: str):
    import fasttext

    return fasttext.load_model(path)


def quality_score(model_path: str, text: str) -> float:
    return round(min(max(_positive_probability(_load(model_path), normalise(text)), 0.0), 1.0), 5)


def classifier_reason(sig: dict, cfg) -> str | None:
    return "low_quality_score" if sig["score"] < cfg.min_score else None
