"""The pixel classifier trained on the fly from clicks and scribbles (as ilastik does, but
retrained after every click in a fraction of a second).

A single click gives examples of the object only. The other class is then taken from the
sections the user clicked in: the pixels whose features are farthest from the clicked ones
(background, membranes, other stains), with a low weight so that any real negative click or
scribble outweighs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import usable_cores

#: share of sampled pixels, farthest in feature space from the positives, used as implicit negatives
IMPLICIT_SHARE = 0.35


def disk_offsets(radius: int) -> np.ndarray:
    """(N, 2) integer (dy, dx) offsets of a disk of ``radius`` pixels."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = yy**2 + xx**2 <= r * r + 0.5
    return np.stack([yy[keep], xx[keep]], axis=1)


def implicit_negatives(
    pos: np.ndarray, pool: np.ndarray, *, share: float = IMPLICIT_SHARE
) -> np.ndarray:
    """The rows of ``pool`` farthest from the positive examples in standardised feature space.

    Parameters
    ----------
    pos
        (P, F) features of object examples.
    pool
        (N, F) features of pixels sampled around the clicks.
    share
        Fraction of ``pool`` returned.
    """
    if not len(pos) or not len(pool):
        return pool[:0]
    sd = pool.std(axis=0) + 1e-6
    centre = np.median(pos, axis=0)
    d = np.sqrt((((pool - centre) / sd) ** 2).mean(axis=1))
    k = max(1, int(len(pool) * share))
    return pool[np.argsort(d)[-k:]]


@dataclass
class PixelClassifier:
    """Object-versus-rest pixel classifier (extremely randomised trees).

    Parameters
    ----------
    n_trees
        Number of trees; 32 is enough for a smooth probability and trains in well under a second.
    seed
        Random seed (results are reproducible).
    """

    n_trees: int = 32
    seed: int = 0
    kind: str = "trees"

    def __post_init__(self) -> None:
        self._model = None
        self._constant: float | None = None

    def fit(
        self,
        pos: np.ndarray,
        neg: np.ndarray,
        *,
        pos_weight: np.ndarray | None = None,
        neg_weight: np.ndarray | None = None,
    ) -> PixelClassifier:
        """Train on (P, F) object and (N, F) non-object features with optional per-row weights.

        Each class carries half of the total weight (the classes are balanced).
        """
        if not len(pos) or not len(neg):
            self._model, self._constant = None, 1.0 if len(pos) else 0.0
            return self
        pw = np.ones(len(pos)) if pos_weight is None else np.asarray(pos_weight, float)
        nw = np.ones(len(neg)) if neg_weight is None else np.asarray(neg_weight, float)
        w = np.concatenate([pw / pw.sum(), nw / nw.sum()]) * (len(pos) + len(neg))
        x = np.concatenate([pos, neg]).astype(np.float32)
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        model = _make_model(self.kind, self.n_trees, self.seed)
        if hasattr(model, "n_jobs"):  # the trees grow in threads (the same trees: each
            model.n_jobs = usable_cores()  # tree's seed is drawn before they are shared out)
        model.fit(x, y, **{_weight_arg(model): w})
        self._model, self._constant = model, None
        return self

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """Object probability of every pixel of (..., F) features: (...) float32 in [0, 1]."""
        shape = feats.shape[:-1]
        if self._model is None:
            return np.full(shape, self._constant or 0.0, np.float32)
        if hasattr(self._model, "n_jobs"):  # the trees predict in threads, one per core
            self._model.n_jobs = usable_cores()
        p = self._model.predict_proba(feats.reshape(-1, feats.shape[-1]))[:, 1]
        return p.reshape(shape).astype(np.float32)


def warm_up() -> None:
    """Import the classifier's library ahead of the first click (scikit-learn takes about
    1.7 s to import here: a session started in napari runs this on a thread while the user
    aims, and the first click finds it loaded)."""
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401


def _make_model(kind: str, n_trees: int, seed: int):
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300))
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(
        n_estimators=n_trees, min_samples_leaf=3, max_features="sqrt", random_state=seed, n_jobs=1
    )


def _weight_arg(model) -> str:
    return "logisticregression__sample_weight" if hasattr(model, "steps") else "sample_weight"
