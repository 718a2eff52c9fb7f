"""Curvature of the softmax cross-entropy w.r.t. the sequence representation.

method-notes, "Conditioning diagnostic": for item vectors ``e_i`` (rows of ``E``) and
``p = softmax(E h)``, the Hessian of ``CE(E h, target)`` with respect to ``h`` is

    H(h) = sum_i p_i e_i e_i^T - (sum_i p_i e_i)(sum_i p_i e_i)^T = E^T diag(p) E - (E^T p)(E^T p)^T,

the covariance of the item vectors under ``p``; it does not depend on the target.  Its
condition number, averaged over training sequences, is the paper's measure of the
optimisation barrier, and it depends directly on the item norms.
"""

from __future__ import annotations

import torch

__all__ = ["softmax_ce_hessian", "hessian_condition_numbers"]

# Elements of the (chunk, n_items, dim) temporary that is formed per batch chunk.
_MAX_TEMPORARY_ELEMENTS = 2**24


def softmax_ce_hessian(h: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
    """Hessians ``H(h_b)`` (eq. above) for a batch ``h`` of shape (B, d) or (d,).

    Returns (B, d, d) (or (d, d) for a single vector) in the common dtype of the inputs.
    Scores every row of ``item_emb``; drop rows such as padding before calling (see
    :func:`hessian_condition_numbers`).  Memory is bounded by chunking the batch.
    """
    single = h.dim() == 1
    h2 = h.unsqueeze(0) if single else h
    if h2.dim() != 2 or item_emb.dim() != 2 or h2.shape[1] != item_emb.shape[1]:
        raise ValueError(
            f"expected h of shape (B, d) or (d,) and item_emb of shape (N, d), got "
            f"{tuple(h.shape)} and {tuple(item_emb.shape)}"
        )
    dtype = torch.promote_types(h2.dtype, item_emb.dtype)
    h2, emb = h2.to(dtype), item_emb.to(dtype)
    probabilities = torch.softmax(h2 @ emb.T, dim=-1)  # (B, N)
    mean_item = probabilities @ emb  # (B, d) = E^T p
    n_items, dim = emb.shape
    chunk = max(1, _MAX_TEMPORARY_ELEMENTS // max(1, n_items * dim))
    second_moments = [
        emb.T @ (p_chunk.unsqueeze(-1) * emb)  # (c, d, d) = E^T diag(p) E
        for p_chunk in probabilities.split(chunk)
    ]
    hessians = torch.cat(second_moments) - mean_item.unsqueeze(-1) * mean_item.unsqueeze(-2)
    return hessians[0] if single else hessians


def hessian_condition_numbers(h: torch.Tensor, item_emb: torch.Tensor, exclude_rows=(0,)) -> torch.Tensor:
    """``lambda_max / lambda_min`` of ``H(h_b)`` for each row of ``h`` -> (B,) float64.

    Rows listed in ``exclude_rows`` (the padding item 0 by default) are removed from the
    softmax, as RecBole never recommends padding.  Computed in float64 with ``eigvalsh``
    and without gradients.  ``H`` is a covariance, hence positive semi-definite; a
    direction with no curvature (``lambda_min <= d * eps * lambda_max``, e.g. when fewer
    than ``d + 1`` items remain) gives ``inf``.
    """
    with torch.no_grad():
        emb = item_emb.detach().to(torch.float64)
        if exclude_rows:
            keep = torch.ones(emb.shape[0], dtype=torch.bool, device=emb.device)
            keep[torch.as_tensor(list(exclude_rows), dtype=torch.long, device=emb.device)] = False
            emb = emb[keep]
        h64 = h.detach().to(torch.float64)
        h64 = h64.unsqueeze(0) if h64.dim() == 1 else h64
        eigenvalues = torch.linalg.eigvalsh(softmax_ce_hessian(h64, emb))  # ascending
        largest, smallest = eigenvalues[:, -1], eigenvalues[:, 0]
        tolerance = emb.shape[1] * torch.finfo(torch.float64).eps * largest.abs()
        degenerate = smallest <= tolerance
        safe_smallest = torch.where(degenerate, torch.ones_like(smallest), smallest)
        return torch.where(degenerate, torch.full_like(largest, float("inf")), largest / safe_smallest)
