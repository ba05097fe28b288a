"""Candidate mixtures: Dirichlet samples around the prior (RegMix's broad sampling, centred on the recipe)
and the baselines that published ablations find hard to beat (token-proportional; uniform; UniMax's
uniform-with-an-epoch-cap; the recipe's own weights). Each is a weight per category, summing to one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Category:
    """What a mixture weighs (a domain, a source or one token prefix) with the unique tokens it holds."""

    name: str
    unique_tokens: int


@dataclass(frozen=True)
class Mixture:
    name: str  # "cand-003", "token_proportional", "proposal", ...
    kind: str  # candidate | baseline | proposal
    weights: dict[str, float]


def _normalised(names: list[str], values) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values / values.sum()
    return {n: float(round(v, 12)) for n, v in zip(names, values)}


def token_proportional(categories: list[Category]) -> dict[str, float]:
    return _normalised([c.name for c in categories], [c.unique_tokens for c in categories])


def uniform(categories: list[Category]) -> dict[str, float]:
    return _normalised([c.name for c in categories], [1.0] * len(categories))


def unimax(categories: list[Category], stage_tokens: int, max_epochs: float) -> dict[str, float]:
    """UniMax (Chung et al., 2023): the budget split uniformly, a category capped at ``max_epochs`` passes
    over its unique tokens, what it cannot take shared uniformly by the rest (smallest categories first)."""
    left, share = float(stage_tokens), {}
    order = sorted(categories, key=lambda c: (c.unique_tokens, c.name))
    for i, c in enumerate(order):
        share[c.name] = min(left / (len(order) - i), max_epochs * c.unique_tokens)
        left -= share[c.name]
    return _normalised([c.name for c in categories], [share[c.name] for c in categories])


def dirichlet_samples(categories: list[Category], prior: dict[str, float], count: int, concentration: float,
                      floor: float, seed: int) -> list[dict[str, float]]:
    """``count`` mixtures drawn from Dirichlet(concentration * K * p), p = the prior blended with ``floor`` of
    a uniform mixture; a numpy Generator with a fixed seed gives the same draws on every machine."""
    names = [c.name for c in categories]
    k = len(names)
    p = np.array([prior.get(n, 0.0) for n in names])
    p = (1 - floor) * p / p.sum() + floor / k
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(concentration * k * p, size=count)
    return [_normalised(names, np.maximum(d, 1e-9)) for d in draws]
