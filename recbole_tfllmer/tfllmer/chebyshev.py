"""Top eigenpairs of an implicit symmetric operator on a torch device: Chebyshev-filtered block
subspace iteration (Zhou & Saad, 2007), for Rec-PCA's item-space trade-off on a GPU.

Why not Lanczos there: ARPACK applies the operator one vector at a time and re-orthogonalises
n-long vectors on the CPU, so a 1,000,000-item trade-off is ~700 memory-bound products (README,
Cost benchmarks). This solver applies the operator to a block of b = 2k columns at once: each
step is a polynomial filter of ``degree`` block products (BLAS-3 and sparse-times-dense work a GPU
does at full speed), one QR of the n x b block and a b x b Rayleigh-Ritz. On the CPU it needs
many more operator columns than ARPACK (9,058 against ~556 on the 20k-item benchmark) and loses on
wall time, so the numpy path keeps ARPACK; a torch device (``rec_pca_device``) runs this one.

The filter: with ``lower`` a bound below the whole spectrum and ``cut`` the block's smallest Ritz
value, the Chebyshev polynomial of ``degree`` mapped onto [lower, cut] stays within [-1, 1] there
and grows fast above ``cut``, where the wanted eigenvalues lie. Columns are rescaled at each
recurrence step (the same factor on the two terms it combines), which keeps the polynomial exact
and avoids overflow. Ritz vectors that have converged (a leading run of them) are locked: kept
with their images, not filtered again. Deterministic for a fixed start block; float64 throughout.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chebyshev_top_eigenpairs"]

# Polynomial degree per filter: high enough that a step is mostly block products (what a GPU is
# fast at), low enough that the Ritz values steering the filter are refreshed often.
DEFAULT_DEGREE = 8


def _rayleigh_ritz(torch, basis, image):
    """Ritz values (descending), Ritz vectors and their images of the orthonormal ``basis``."""
    small = basis.T @ image
    values, vectors = torch.linalg.eigh((small + small.T) / 2)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order], vectors[:, order]
    return values, basis @ vectors, image @ vectors


def _filtered(apply, block, degree, lower, cut):
    """p(A) block with p the Chebyshev polynomial of `degree` mapped onto [lower, cut], columns rescaled."""
    half_width, centre = (cut - lower) / 2.0, (cut + lower) / 2.0
    previous, current = block, (apply(block) - centre * block) / half_width
    for _ in range(degree - 1):
        following = 2.0 * (apply(current) - centre * current) / half_width - previous
        scale = following.norm(dim=0).clamp_min(1e-300)
        previous, current = current / scale, following / scale
    return current


def chebyshev_top_eigenpairs(apply, n, k, *, lower, device, tol=1e-10, start=None, degree=DEFAULT_DEGREE,
                             max_iter=500, seed=0):  # fmt: skip
    """Top-k (largest algebraic) eigenpairs of the symmetric operator ``apply`` (an (n, b) float64
    tensor on ``device`` -> the same shape), descending, as numpy float64 arrays, plus an info dict.

    ``lower``: a number at or below the smallest eigenvalue (Rec-PCA knows one: the graph term's
    eigenvalues are >= -1 and the semantic kernel is PSD). ``start``: optional (n, m) columns the
    start block begins with (e.g. the PCA solution), completed with seeded Gaussian columns.
    Stops when every wanted residual ``||A v - theta v||`` is at most ``tol * max|theta|``.
    """
    import torch

    block = min(n, max(2 * k, k + 16))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    columns = torch.randn((n, block), generator=generator, dtype=torch.float64)
    if start is not None:
        given = torch.as_tensor(np.asarray(start, dtype=np.float64)[:, :block])
        columns[:, : given.shape[1]] = given
    basis = torch.linalg.qr(columns.to(device))[0]
    values, ritz, image = _rayleigh_ritz(torch, basis, apply(basis))
    products, step = block, 0
    while True:
        scale = max(float(values.abs().max()), np.finfo(float).tiny)
        residuals = (image[:, :k] - ritz[:, :k] * values[:k]).norm(dim=0) / scale
        relative_residual = float(residuals.max())
        if relative_residual <= tol or step == max_iter:
            break
        step += 1
        # Soft locking: the leading Ritz vectors that have converged are kept as they are (with their
        # known images) and only the others are filtered and applied again.
        locked = int(torch.cumprod((residuals <= tol).to(torch.int64), 0).sum())
        kept, active = ritz[:, :locked], ritz[:, locked:]
        cut = float(values[-1])
        if cut <= lower:  # the block already reaches the bottom of the spectrum: plain subspace step
            filtered = apply(active) - lower * active
            products += active.shape[1]
        else:
            filtered = _filtered(apply, active, degree, lower, cut)
            products += degree * active.shape[1]
        for _ in range(2 if locked else 0):  # twice is enough (Kahan-Parlett)
            filtered = filtered - kept @ (kept.T @ filtered)
        fresh = torch.linalg.qr(filtered)[0]
        fresh_image = apply(fresh)
        products += fresh.shape[1]
        basis = torch.cat([kept, fresh], dim=1)
        values, ritz, image = _rayleigh_ritz(torch, basis, torch.cat([image[:, :locked], fresh_image], dim=1))
    vectors = ritz[:, :k].cpu().numpy()
    info = {"eigensolver": "chebyshev", "iterations": step, "operator_columns": products,
            "relative_residual": relative_residual, "block_size": block}  # fmt: skip
    return values[:k].cpu().numpy().copy(), vectors, info
