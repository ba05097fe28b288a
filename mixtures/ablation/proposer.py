"""The proposal: the mixture that minimises the fitted outcome under the planner's constraints.

Weights are a point of the simplex with each category capped at what the ablated stage can draw from it
within ``max_epochs`` (w_j <= max_epochs x unique_tokens_j / stage_tokens), optionally penalised by the
squared distance from the prior. SLSQP (scipy) from several fixed starts (the prior, the uniform mixture,
the best measured run) keeps the result deterministic and away from a poor local minimum of the GP.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def caps(unique_tokens: list[int], stage_tokens: int, max_epochs: float) -> np.ndarray:
    return np.minimum(1.0, max_epochs * np.asarray(unique_tokens, dtype=np.float64) / stage_tokens)


def propose(model, prior: np.ndarray, cap: np.ndarray, starts: list[np.ndarray], prior_penalty: float = 0.0) -> np.ndarray:
    """argmin over {w >= 0, w <= cap, sum w = 1} of model(w) + prior_penalty * |w - prior|^2."""
    if cap.sum() < 1 - 1e-9:
        raise ValueError(f"the categories cannot fill the stage within max_epochs (caps sum to {cap.sum():.3f} < 1)")

    def objective(w):
        return float(model.predict(w[None, :])[0]) + prior_penalty * float(((w - prior) ** 2).sum())

    bounds = [(0.0, float(c)) for c in cap]
    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0}
    best, best_value = None, np.inf
    for start in starts:
        start = _feasible(start, cap)
        res = minimize(objective, start, method="SLSQP", bounds=bounds, constraints=[constraint],
                       options={"maxiter": 500, "ftol": 1e-12})
        w = _feasible(res.x, cap)
        value = objective(w)
        if value < best_value - 1e-12:
            best, best_value = w, value
    return best


def _feasible(w: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The nearest point of the capped simplex in the water-filling sense: clip, then share what is missing
    (or too much) among the categories with room, repeatedly."""
    w = np.clip(np.asarray(w, dtype=np.float64), 0.0, cap)
    for _ in range(len(w) + 1):
        gap = 1.0 - w.sum()
        if abs(gap) < 1e-12:
            break
        room = (cap - w) if gap > 0 else w
        free = room > 1e-15
        w[free] += gap * room[free] / room[free].sum()
        w = np.clip(w, 0.0, cap)
    return w
