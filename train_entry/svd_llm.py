"""SVD-LLM v2 (Wang et al., 2025) as Ruyi2 applies it to the DaE blocks (report §4.3.2, eqs. 5-7).

For a weight W (out x in) and the covariance C = X X^T of its calibration inputs X:
- whitening: C = U_s diag(s) U_s^T (an eigendecomposition of the covariance, the report's stable form of the
  Cholesky factor), S = U_s diag(sqrt(s)), so S S^T = C;
- the SVD of W S = U_w diag(sigma) V_w^T; keeping rank r gives W' = U_w,r diag(sigma_r) V_w,r^T S^{-1}, and
  the output error on the calibration data is exactly the dropped spectrum:
  L_min = ||W X - W' X||_F = sqrt(sum_{i > r} sigma_i^2) (eq. 5);
- the compression ratio of each matrix in a group (matrices of one kind across the blocks) follows eq. 6:
  ratio_i = len(G) * R * l_i / sum(l), with l_i = 1 / log(L_min,i) (a matrix whose truncation hurts more
  is compressed less), so the group's mean ratio is the target R.
No library implements this (SVD-LLM's code is research scripts for HF Llama modules), so it is written here
on torch.linalg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Whitened:
    """W S's singular triplets and the whitening's inverse, enough for any rank's factors."""

    u: torch.Tensor  # out x k
    sigma: torch.Tensor  # k, descending
    vh: torch.Tensor  # k x in: V_w^T S^{-1}


def whiten(weight: torch.Tensor, covariance: torch.Tensor, eps: float = 1e-10) -> Whitened:
    w, c = weight.double(), covariance.double()
    evals, evecs = torch.linalg.eigh(c)
    evals = evals.clamp(min=eps * max(float(evals.max()), 1e-12))  # a direction the data never takes
    s = evecs * evals.sqrt()  # S = U_s diag(sqrt(s))
    s_inv = (evecs / evals.sqrt()).T  # S^{-1} = diag(1/sqrt(s)) U_s^T
    u, sigma, vh = torch.linalg.svd(w @ s, full_matrices=False)
    return Whitened(u, sigma, vh @ s_inv)


def truncation_loss(white: Whitened, rank: int) -> float:
    """||W X - W' X||_F when only the first ``rank`` singular values are kept (eq. 5)."""
    return float(white.sigma[rank:].pow(2).sum().sqrt())


def rank_for(out_features: int, in_features: int, ratio: float) -> int:
    """The rank whose two factors hold (1 - ratio) of the dense matrix's parameters (at least 1)."""
    return max(1, math.floor((1 - ratio) * out_features * in_features / (out_features + in_features)))


def group_ratios(losses: list[float], target: float, max_ratio: float = 0.95) -> list[float]:
    """Eq. 6 over one group: l_i = 1 / log(L_i), ratio_i = len * R * l_i / sum(l), clipped to [0, max_ratio].
    L is shifted by e so the logarithm is positive whatever the activations' scale."""
    inverse = [1.0 / math.log(loss + math.e) for loss in losses]
    total = sum(inverse)
    return [min(max_ratio, max(0.0, len(losses) * target * v / total)) for v in inverse]


def factors(white: Whitened, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with W' = A @ B: A = U_r diag(sigma_r)^(1/2) (out x r), B = diag(sigma_r)^(1/2) V_r^T S^{-1} (r x in)."""
    root = white.sigma[:rank].sqrt()
    return white.u[:, :rank] * root, root[:, None] * white.vh[:rank]
