"""Response fits of an ablation: how the outcome (a held-out loss) moves with the mixture weights.

- Per category, a smoothing spline of the outcome against that category's weight (Ruyi2 §4.2 fits spline
  curves of each category's effect), the smoothing chosen by generalised cross-validation (scipy).
- Jointly over all categories, the regression the proposer maximises: ``log_linear`` (Data Mixing Laws'
  form over the target: L(r) = c + exp(b + t . r)), ``dml_per_set`` (the paper's use of it: one law per
  held-out set, the target their weighted sum), ``linear`` (RegMix's linear regression) or ``gp`` (a
  Gaussian process with one length scale per category, scikit-learn).
Every fit is k-fold cross-validated (Spearman and R² of the out-of-fold predictions), so the report says
how far the curves can be trusted before a proposal is read from them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_smoothing_spline
from scipy.optimize import least_squares
from scipy.stats import spearmanr

JOINT_MODELS = ("log_linear", "dml_per_set", "linear", "gp")


# Ridge strength on the per-category coefficients of the linear and log-linear fits, relative to the
# outcome's spread: a few dozen noisy runs cannot pin K + 2 free parameters, and an unpenalised fit then
# extrapolates wildly off the sampled mixtures (out-of-fold R² in the thousands below zero).
RIDGE = 1e-2


class LogLinear:
    """L(r) = c + exp(b + t . r), fitted by nonlinear least squares (ridge on t) from a log-linear start.

    Bounded: 0 <= c < min(L) (an irreducible loss below every measured one) and |b|, |t_j| <= 30 (exp stays
    finite without clipping: a clip's flat region once trapped the fit at b -> -inf, a constant prediction)."""

    name = "log_linear"
    BOUND = 30.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LogLinear":
        spread = float(np.ptp(y)) or 1.0
        c_max = float(y.min()) - 1e-3 * spread
        c0 = min(max(float(y.min()) - 0.5 * spread, 0.0), c_max)
        design = np.hstack([np.ones((len(x), 1)), x])
        start, *_ = np.linalg.lstsq(design, np.log(y - c0), rcond=None)
        penalty = np.sqrt(RIDGE) * spread

        def residual(p):
            return np.concatenate([p[0] + np.exp(p[1] + x @ p[2:]) - y, penalty * p[2:]])

        lo = np.concatenate([[0.0], np.full(len(start), -self.BOUND)])
        hi = np.concatenate([[c_max], np.full(len(start), self.BOUND)])
        p0 = np.clip(np.concatenate([[c0], start]), lo + 1e-9, hi - 1e-9)
        self.params = least_squares(residual, p0, bounds=(lo, hi), method="trf", x_scale="jac").x
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        return p[0] + np.exp(p[1] + np.atleast_2d(x) @ p[2:])

    def describe(self, names: list[str]) -> dict:
        return {"form": "c + exp(b + sum_j t_j r_j)", "c": float(self.params[0]), "b": float(self.params[1]),
                "t": dict(zip(names, map(float, self.params[2:])))}


class PerSetLaws:
    """Data Mixing Laws as the paper fits them: one law c_i + exp(b_i + t_i . r) per held-out set, the target
    their weighted sum. Fitted on the per-set losses ([runs, sets]); predicts the target."""

    name = "dml_per_set"

    def __init__(self, weights: list[float], sets: list[str]):
        self.weights, self.sets = np.asarray(weights, dtype=np.float64), sets

    def fit(self, x: np.ndarray, per_set: np.ndarray) -> "PerSetLaws":
        self.laws = [LogLinear().fit(x, per_set[:, j]) for j in range(per_set.shape[1])]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return sum(w * law.predict(x) for w, law in zip(self.weights, self.laws))

    def describe(self, names: list[str]) -> dict:
        return {"form": "sum_i w_i (c_i + exp(b_i + sum_j t_ij r_j))",
                "sets": {s: {"weight": float(w)} | law.describe(names) for s, w, law in zip(self.sets, self.weights, self.laws)}}


class Linear:
    """y = a + sum_j b_j r_j, ridge on b (the weights sum to one, so b alone is not identified)."""

    name = "linear"

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Linear":
        spread = float(np.ptp(y)) or 1.0
        design = np.hstack([np.ones((len(x), 1)), x])
        ridge = np.sqrt(RIDGE) * spread * np.hstack([np.zeros((x.shape[1], 1)), np.eye(x.shape[1])])
        self.coef, *_ = np.linalg.lstsq(np.vstack([design, ridge]), np.concatenate([y, np.zeros(x.shape[1])]), rcond=None)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        return self.coef[0] + x @ self.coef[1:]

    def describe(self, names: list[str]) -> dict:
        return {"form": "a + sum_j b_j r_j", "a": float(self.coef[0]), "b": dict(zip(names, map(float, self.coef[1:])))}


class GaussianProcess:
    """scikit-learn's GP regressor: constant x RBF (one length scale per category) + white noise."""

    name = "gp"

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GaussianProcess":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.full(x.shape[1], 0.3), (1e-2, 1e2)) + WhiteKernel(1e-2, (1e-6, 1.0))
        self.model = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=0)
        with warnings.catch_warnings():  # a length scale at its bound is a finding, reported in the kernel
            warnings.simplefilter("ignore")
            self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(np.atleast_2d(x))

    def describe(self, names: list[str]) -> dict:
        return {"form": "Gaussian process", "kernel": str(self.model.kernel_)}


MODELS = {m.name: m for m in (LogLinear, Linear, GaussianProcess)}


class Spline:
    """The outcome against one category's weight: a cubic smoothing spline, lambda by GCV (scipy)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Spline":
        # equal weights (baselines can share one) are averaged: the spline needs increasing x
        xs, inverse = np.unique(np.round(x, 9), return_inverse=True)
        ys = np.bincount(inverse, weights=y) / np.bincount(inverse)
        self.lo, self.hi = float(xs[0]), float(xs[-1])
        if len(xs) >= 5:
            self.spline = make_smoothing_spline(xs, ys)
            self.line = None
        else:  # too few distinct weights for a spline: a straight line
            self.spline, self.line = None, np.polyfit(xs, ys, 1) if len(xs) > 1 else np.array([0.0, ys[0]])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, dtype=np.float64), self.lo, self.hi)  # flat outside the sampled range
        return self.spline(x) if self.spline is not None else np.polyval(self.line, x)


@dataclass
class CrossValidated:
    spearman: float | None
    r2: float | None
    predictions: list[float]  # out of fold, in run order


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [f for f in np.array_split(order, min(k, n)) if len(f)]


def scores(y: np.ndarray, predicted: np.ndarray) -> tuple[float | None, float | None]:
    """(Spearman, R²) of predictions; None where undefined (a constant vector)."""
    if np.ptp(y) == 0 or np.ptp(predicted) == 0:
        rho = None
    else:
        rho = float(spearmanr(y, predicted).statistic)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = None if total == 0 else 1.0 - float(((y - predicted) ** 2).sum()) / total
    return rho, r2


def cross_validate(make, x: np.ndarray, y: np.ndarray, k: int, seed: int = 0, target: np.ndarray | None = None) -> CrossValidated:
    """k-fold out-of-fold predictions of a fresh model per fold (``make()`` builds one), scored against
    ``target`` (default ``y``; a model fitted on per-set losses predicts the target they make)."""
    target = y if target is None else target
    predicted = np.empty(len(target))
    for test in folds(len(target), k, seed):
        train = np.setdiff1d(np.arange(len(target)), test)
        predicted[test] = make().fit(x[train], y[train]).predict(x[test])
    rho, r2 = scores(target, predicted)
    return CrossValidated(rho, r2, [float(v) for v in predicted])


def fit_outcome(x: np.ndarray, y: np.ndarray, names: list[str], k: int, choose: str = "auto",
                per_set: tuple[np.ndarray, list[float], list[str]] | None = None) -> dict:
    """Every joint model and every category's spline, cross-validated; the chosen joint model refitted on
    all runs. ``choose`` = auto takes the best out-of-fold Spearman (then R²). ``per_set``: (losses [runs,
    sets], the sets' weights in the target, their names) when the target is a weighted sum of held-out
    losses: then Data Mixing Laws' per-set fit is one of the joint models."""
    joint = {}
    for name, cls in MODELS.items():
        cv = cross_validate(cls, x, y, k)
        joint[name] = {"cv": cv.__dict__, "fit": cls().fit(x, y)}
    if per_set is not None:
        losses, weights, sets = per_set
        make = lambda: PerSetLaws(weights, sets)  # noqa: E731
        joint[PerSetLaws.name] = {"cv": cross_validate(make, x, losses, k, target=y).__dict__, "fit": make().fit(x, losses)}
    if choose not in joint and choose != "auto":
        raise ValueError(f"fit.model {choose!r} needs per-set held-out losses (a benchmark target has none)")
    if choose == "auto":
        choose = max(joint, key=lambda m: (joint[m]["cv"]["spearman"] or -2, joint[m]["cv"]["r2"] or -1e9))
    splines = {}
    for j, name in enumerate(names):
        column = x[:, [j]]
        cv = cross_validate(_SplineOn0, column, y, k)
        spline = Spline().fit(column[:, 0], y)
        grid = np.linspace(spline.lo, spline.hi, 41)
        splines[name] = {"cv": cv.__dict__, "x": [float(v) for v in grid], "y": [float(v) for v in spline.predict(grid)],
                         "points": [float(v) for v in column[:, 0]]}
    return {
        "chosen": choose,
        "model": joint[choose]["fit"],
        "joint": {m: {"cv": v["cv"], "params": v["fit"].describe(names)} for m, v in joint.items()},
        "splines": splines,
        "measured": [float(v) for v in y],
    }


class _SplineOn0:
    """A spline as a one-column model, for cross-validation."""

    def fit(self, x, y):
        self.spline = Spline().fit(x[:, 0], y)
        return self

    def predict(self, x):
        return self.spline.predict(np.atleast_2d(x)[:, 0])
