"""SVD-LLM v2's pieces (train_entry/svd_llm.py) on matrices whose answer is known."""

import pytest
import torch

from train_entry.svd_llm import factors, group_ratios, rank_for, truncation_loss, whiten


def _correlated_inputs(n_in=48, tokens=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=g, dtype=torch.float64) * torch.logspace(0, -2, n_in, dtype=torch.float64)
    return mix @ torch.randn(n_in, tokens, generator=g, dtype=torch.float64)  # in x tokens, strongly anisotropic


def test_the_truncation_loss_is_the_output_error_on_the_calibration_data():
    x = _correlated_inputs()
    w = torch.randn(32, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    white = whiten(w, x @ x.T)
    for rank in (4, 12, 24):
        a, b = factors(white, rank)
        measured = torch.linalg.norm(w @ x - a @ b @ x).item()
        assert truncation_loss(white, rank) == pytest.approx(measured, rel=1e-6)
    a, b = factors(white, 32)  # full rank: exact
    assert torch.allclose(a @ b, w, atol=1e-8)


def test_whitening_beats_plain_svd_on_the_activations_it_will_see():
    x = _correlated_inputs()
    w = torch.randn(32, 48, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rank = 8
    a, b = factors(whiten(w, x @ x.T), rank)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    plain = (u[:, :rank] * s[:rank]) @ vh[:rank]
    assert torch.linalg.norm(w @ x - a @ b @ x) < 0.5 * torch.linalg.norm(w @ x - plain @ x)


def test_group_ratios_keep_the_target_on_average_and_spare_the_costly_matrices():
    ratios = group_ratios([2.0, 20.0, 200.0], 0.4)
    assert sum(ratios) / 3 == pytest.approx(0.4)
    assert ratios[0] > ratios[1] > ratios[2]  # the matrix whose truncation costs most is compressed least
    assert rank_for(100, 300, 0.4) == 45 and 45 * 400 <= 0.6 * 100 * 300 < 46 * 400
