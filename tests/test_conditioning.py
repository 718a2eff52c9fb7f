"""Softmax cross-entropy Hessian and its condition number (method-notes, diagnostic)."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_tfllmer.diagnostics import conditioning, hessian_condition_numbers, softmax_ce_hessian


def tiny_model(seed=0, n_items=9, dim=4):
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_items, dim, generator=generator, dtype=torch.float64)
    norms = torch.logspace(-0.5, 0.7, n_items, dtype=torch.float64)  # strong norm disparity
    item_emb = directions / directions.norm(dim=1, keepdim=True) * norms[:, None]
    h = torch.randn(3, dim, generator=generator, dtype=torch.float64)
    return h, item_emb


def brute_force_hessian(h_row, item_emb, target):
    def loss(vector):
        return F.cross_entropy((item_emb @ vector).unsqueeze(0), torch.tensor([target]))

    return torch.autograd.functional.hessian(loss, h_row)


def test_matches_autograd_hessian_of_the_cross_entropy():
    h, item_emb = tiny_model()
    hessians = softmax_ce_hessian(h, item_emb)
    assert hessians.shape == (3, 4, 4) and hessians.dtype == torch.float64
    for b in range(3):
        for target in (0, 5):  # the Hessian does not depend on the target
            torch.testing.assert_close(hessians[b], brute_force_hessian(h[b], item_emb, target), rtol=1e-10, atol=1e-12)


def test_single_vector_and_float32():
    h, item_emb = tiny_model()
    single = softmax_ce_hessian(h[1], item_emb)
    assert single.shape == (4, 4)
    torch.testing.assert_close(single, softmax_ce_hessian(h, item_emb)[1])
    h32 = softmax_ce_hessian(h.float(), item_emb.float())
    assert h32.dtype == torch.float32
    torch.testing.assert_close(h32.double(), softmax_ce_hessian(h, item_emb), rtol=1e-4, atol=1e-5)


def test_hessian_is_the_item_covariance_under_the_softmax():
    h, item_emb = tiny_model(seed=1)
    hessians = softmax_ce_hessian(h, item_emb)
    torch.testing.assert_close(hessians, hessians.transpose(1, 2))
    assert torch.linalg.eigvalsh(hessians).min() > -1e-12  # positive semi-definite
    # at h = 0 the softmax is uniform: H is the (biased) covariance of the item vectors
    uniform = softmax_ce_hessian(torch.zeros(4, dtype=torch.float64), item_emb)
    centred = item_emb - item_emb.mean(dim=0)
    torch.testing.assert_close(uniform, centred.T @ centred / item_emb.shape[0])


def test_condition_numbers_exclude_padding_and_use_float64():
    h, item_emb = tiny_model(seed=2, n_items=12)
    item_emb[0] *= 50.0  # a huge padding vector would dominate the curvature
    kappa = hessian_condition_numbers(h.float(), item_emb.float())
    assert kappa.shape == (3,) and kappa.dtype == torch.float64
    eigenvalues = torch.linalg.eigvalsh(softmax_ce_hessian(h, item_emb[1:]))
    expected = eigenvalues[:, -1] / eigenvalues[:, 0]
    torch.testing.assert_close(kappa, expected, rtol=1e-4, atol=0)
    with_padding = hessian_condition_numbers(h, item_emb, exclude_rows=())
    assert not torch.allclose(with_padding, hessian_condition_numbers(h, item_emb))


def test_normalising_item_norms_improves_conditioning():
    """The paper's first cause: norm disparity inflates the condition number."""
    generator = torch.Generator().manual_seed(3)
    directions = torch.randn(201, 8, generator=generator, dtype=torch.float64)
    unit = directions / directions.norm(dim=1, keepdim=True)
    norms = 10 ** (2 * torch.rand(201, 1, generator=generator, dtype=torch.float64) - 1)  # 0.1 .. 10
    h = 0.3 * torch.randn(16, 8, generator=generator, dtype=torch.float64)
    disparate = hessian_condition_numbers(h, unit * norms).mean()
    normalised = hessian_condition_numbers(h, unit).mean()
    assert normalised < 10 and disparate > 5 * normalised


def test_degenerate_curvature_gives_infinity():
    item_emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # one direction only
    kappa = hessian_condition_numbers(torch.zeros(2, 2, dtype=torch.float64), item_emb)
    assert torch.isinf(kappa).all()
    assert math.isinf(float(hessian_condition_numbers(torch.zeros(2), item_emb[:2], exclude_rows=())[0]))


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="item_emb"):
        softmax_ce_hessian(torch.zeros(3, 5), torch.zeros(7, 4))


def test_large_catalogue_is_chunked_without_changing_the_result(monkeypatch):
    generator = torch.Generator().manual_seed(4)
    item_emb = torch.randn(3000, 16, generator=generator, dtype=torch.float64)
    h = torch.randn(40, 16, generator=generator, dtype=torch.float64)
    monkeypatch.setattr(conditioning, "_MAX_TEMPORARY_ELEMENTS", 3 * 3000 * 16)  # chunks of 3 rows
    hessians = softmax_ce_hessian(h, item_emb)
    p = torch.softmax(h @ item_emb.T, dim=-1)
    mean_item = p @ item_emb
    expected = torch.einsum("bn,ni,nj->bij", p, item_emb, item_emb) - torch.einsum("bi,bj->bij", mean_item, mean_item)
    torch.testing.assert_close(hessians, expected)
