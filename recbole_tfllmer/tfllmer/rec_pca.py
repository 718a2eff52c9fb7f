"""Rec-PCA: recommendation-aware reduction of LLM item embeddings (method-notes, "Rec-PCA").

numpy/scipy; the passes over X run in :mod:`.dense_passes` (numpy, or torch on a GPU with
``device``).  ``X_p`` (n x D) are the prepared embeddings (optionally L2-normalised
rows, then centred), ``A~`` the normalised co-occurrence adjacency of the training split
(``normalized_adjacency``; eigenvalues in [-1, 1]) and d the backbone's embedding size.
Two quantities are traded off:

* semantic variance kept, ``S = tr(U^T K U)`` with ``K = X_p X_p^T`` (PCA maximises it);
* graph agreement, ``T = tr(U^T A~ U)`` = sum_ij A~_ij <u_i, u_j>: neighbours in the
  co-occurrence graph get similar vectors.  The quadratic graph total variation of the
  vectors is ``tr(Z^T L_c Z) = sum_connected ||z_i||^2 - tr(Z^T A~ Z)``, so raising the
  agreement at a given variance is lowering the TV.

**One trade-off on every dataset** (``alpha``, option ``rec_pca_alpha``, in [0, 1]).  Each
term is divided by the most it can reach with d directions (the sum of its top-d
eigenvalues, ``s_K`` and ``s_A``), so both are "fractions of the best achievable" and
alpha weighs them the same way on any catalogue and encoder (the normalisation of
graph-Laplacian PCA, Jiang et al., CVPR 2013, with the top-d sum in place of the largest
eigenvalue so that d does not change the meaning).  Both weights are >= 0 on [0, 1] and
values outside are refused, so no setting rewards losing variance: the old unscaled
``lambda > 1`` (which picked the *least*-variance directions) cannot be expressed.
``alpha = 0`` is exactly PCA for both formulations (the same code path as LLMInit).

Monotone by construction: if ``U_1``, ``U_2`` maximise ``(1 - a) S/s_K + a T/s_A`` at
``a_1 < a_2``, adding the two optimality inequalities gives ``S(U_1) >= S(U_2)`` and
``T(U_1) <= T(U_2)``: kept variance never rises and agreement never falls as alpha grows
(tests/test_rec_pca.py checks it, and the TV / variance ratio of the vectors, on data).

Formulations (``formulation``, option ``rec_pca_formulation``):

* ``item_space`` (the default; graph-regularised PCA in the style of Jiang et al.): the
  reduced item vectors are free, ``U`` (n x d, orthonormal) are the top-d eigenvectors of
  the implicit n x n operator ``(1 - a) K / s_K + a A~ / s_A`` (Lanczos, ``scipy eigsh``;
  ``K v = X_p (X_p^T v)`` and ``A~ v`` are products with X and the sparse graph, never a
  dense n x n matrix), and ``Z = U diag(sqrt(s_K theta_k))``: at alpha = 0 the eigenvalues
  are sigma_k^2 / s_K and Z = X_p W_pca, exactly PCA.  An item without edges has a zero row
  in ``A~``: its row of the eigen-equation is ``theta u_i = (1 - a) x_i^T (X_p^T u) / s_K``,
  a linear function of its own LLM vector, so it keeps its semantic part.
* ``projection`` (the orthonormal projection ``Z = X_p W``, W^T W = I): W is the top-d
  eigenvectors of the D x D matrix ``(1 - a) C / s_C + a G / s_G`` with ``C = X_p^T X_p``
  and ``G = X_p^T A~ X_p`` (same S and T, restricted to vectors linear in X).  On ml-100k
  it cannot reduce the TV / variance ratio by more than 5% even at alpha = 1 (README):
  the LLM span holds few graph-smooth directions.

On a torch device (``device``) the item-space trade-off runs there as block Chebyshev
iteration (:mod:`.chebyshev`), the same eigenproblem; without one, ARPACK Lanczos on the CPU.

Cost (n items, D dims, nnz graph entries, d outputs): the PCA part is unchanged (the Gram
matrix in row chunks, or block subspace iteration when ``solver`` resolves to
``iterative``); ``item_space`` adds Lanczos on the n x n operator, each product
O(n D + nnz) with the full kernel or O(n r + nnz) with the rank-r kernel used for large
inputs (``_ITEM_SPACE_FULL_KERNEL_MAX``: r = 2d PCA directions, reported as
``kernel_rank``); ``projection`` adds ``G`` (a sparse-dense product and a second Gram-like
pass) and two D x D eigendecompositions, or Lanczos on implicit D x D operators when
iterative.  Memory: X is never copied or centred as a whole; each chunk is centred on the
fly.  The item-space path holds n x d float64 blocks (and the n x 2d reduced kernel for
large inputs), the projection path's exact solver one n x D copy ``A~ X_p``.
"""

from __future__ import annotations

import contextlib
import numbers
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from .cooccurrence import as_checked_csr, available_cores, connected_mask, graph_total_variation
from .dense_passes import check_device, dense_passes, prepared_chunk, row_chunks

try:  # optional (ships with scikit-learn); without it LAPACK runs with its default threads
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = ["RecPCAResult", "rec_pca_projection", "check_solver_options", "SOLVERS", "FORMULATIONS", "DEFAULT_ALPHA"]

SOLVERS = ("auto", "exact", "iterative")
FORMULATIONS = ("item_space", "projection")
# The package default is 0 (validation chose it on three datasets: README, "Choosing TF-LLMER's
# defaults"); the boards' RecPCAOnly / TFLLMER presets set 0.35.
DEFAULT_ALPHA = 0.0

# Width of the column blocks of the sparse product: 16 float32 = one cache line per row.
_SPARSE_COLUMN_BLOCK = 16
_MAX_SPARSE_THREADS = 8
# Width of the column blocks of the upper block-triangle of G.
_GRAM_COLUMN_BLOCK = 512
# solver="auto" compares flop estimates of the PCA part (see _auto_solver).  The exact solver's
# D x D eigh is BLAS-2 bound: ~5 s at D = 4,096 on one thread here, worth ~10 D^3 flops of syrk;
# the iterative one's thin (n, D) x (D, 2d) products ran at about half syrk's flop rate and it
# took 8 steps on the benchmark spectra.
_EIGH_FLOPS_PER_D3 = 10.0
_ITERATIVE_STEPS, _THIN_PRODUCT_PENALTY = 8, 2.0
# Below this estimate (~0.1 s here) the exact solver is used whatever the comparison says: it is
# exact, and nothing is there to save (every catalogue of our boards and tests is in this range).
_EXACT_ALWAYS_FLOPS = 1e10
# item_space, iterative mode: relative accuracy of the eigenvalues behind the graph scale s_A.
_GRAPH_SCALE_TOL = 1e-2
# item_space: the semantic kernel is applied as X_p (X_p^T v) (two passes over X per
# Lanczos step) while n D stays below this; above it, as P (P^T v) with P = X_p V_r, the
# top r = 2d PCA directions (those the semantic term rewards most), so a step is O(n r).
_ITEM_SPACE_FULL_KERNEL_MAX = 2**24
# item_space on a torch device: the Chebyshev solver's tightest relative residual (ARPACK's tol 0,
# machine precision, has no block-iteration equivalent; eigenvalue errors are about its square).
_DEVICE_MIN_TOL = 1e-10
_DEVICE_SCALE_TOL = 1e-6


@dataclass
class RecPCAResult:
    """Output of :func:`rec_pca_projection`."""

    embeddings: np.ndarray  # (n, d) float32 item vectors (each column scaled to unit RMS if whitened)
    components: np.ndarray  # (D, d) float64 orthonormal W with Z = X_p W; None for item_space (Z is free)
    mean: np.ndarray  # (D,) float64 centring vector (zeros if not centred)
    eigenvalues: np.ndarray  # (d,) float64 eigenvalues of the trade-off operator, descending
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------
def check_alpha(alpha) -> float:
    """rec_pca_alpha: the trade-off in [0, 1] (also checked when the Config is built)."""
    valid = isinstance(alpha, numbers.Real) and not isinstance(alpha, (bool, np.bool_))
    if not valid or not np.isfinite(alpha) or not 0 <= alpha <= 1:
        raise ValueError(
            f"rec_pca_alpha must be a number in [0, 1] (0 = plain PCA, 1 = graph agreement only; both terms "
            f"are scaled to their best achievable value, so values outside would reward losing variance), "
            f"got {alpha!r}"
        )
    return float(alpha)


def check_formulation(formulation) -> str:
    if formulation not in FORMULATIONS:
        raise ValueError(f"rec_pca_formulation must be one of {', '.join(FORMULATIONS)}, got {formulation!r}")
    return formulation


def _check_n_components(n_components, dim_in: int) -> int:
    what = "n_components (the backbone's embedding_size / hidden_size)"
    if not isinstance(n_components, numbers.Integral) or isinstance(n_components, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer, got {n_components!r}")
    if n_components < 1:
        raise ValueError(f"{what} must be >= 1, got {n_components}")
    if n_components > dim_in:
        raise ValueError(
            f"the backbone's embedding_size / hidden_size ({n_components}) exceeds the LLM embedding "
            f"dimension ({dim_in}); Rec-PCA can only reduce dimensions. Use a text encoder with at "
            f"least {n_components} dimensions or set embedding_size / hidden_size <= {dim_in}."
        )
    return int(n_components)


def check_solver_options(solver, tol, max_iter) -> str:
    """rec_pca_solver / rec_pca_tol / rec_pca_max_iter (also checked when the Config is built)."""
    if solver not in SOLVERS:
        raise ValueError(f"rec_pca_solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    valid_tol = isinstance(tol, numbers.Real) and not isinstance(tol, (bool, np.bool_)) and np.isfinite(tol)
    if not valid_tol or not 0 < tol < 1:
        raise ValueError(f"rec_pca_tol must be a number in (0, 1), got {tol!r}")
    if not isinstance(max_iter, numbers.Integral) or isinstance(max_iter, (bool, np.bool_)) or max_iter < 1:
        raise ValueError(f"rec_pca_max_iter must be an integer >= 1, got {max_iter!r}")
    return solver


def _as_embedding_matrix(X) -> np.ndarray:
    arr = np.asarray(X)
    numeric = arr.dtype != object and (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer))
    if not numeric:
        raise ValueError(f"X must be a real numeric matrix, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"X must be a non-empty 2-D array (items x dims), got shape {arr.shape}")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return arr


# --------------------------------------------------------------------------------------
# passes over X
# --------------------------------------------------------------------------------------
def _row_scale(X: np.ndarray) -> np.ndarray:
    """1 / ||x_i|| (float64); all-zero rows keep scale 0 and stay zero."""
    norms = np.empty(X.shape[0])
    for rows in row_chunks(X.shape[0], X.shape[1] * 8):
        chunk = X[rows].astype(np.float64)
        norms[rows] = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        del chunk  # free before the next chunk is allocated
    if not np.all(np.isfinite(norms)):
        raise ValueError("X contains NaN or inf values")
    scale = np.zeros_like(norms)
    scale[norms > 0] = 1.0 / norms[norms > 0]
    return scale


def _weighted_column_sum(X: np.ndarray, row_scale) -> np.ndarray:
    """sum_i s_i x_i in float64; doubles as the NaN/inf check (NaN and inf propagate)."""
    total = np.zeros(X.shape[1])
    for rows in row_chunks(X.shape[0], X.shape[1] * 8):
        chunk = X[rows].astype(np.float64)
        total += chunk.sum(axis=0) if row_scale is None else row_scale[rows] @ chunk
        del chunk
    if not np.all(np.isfinite(total)):
        raise ValueError("X contains NaN or inf values (or values so large that they overflow)")
    return total


def _sparse_times_columns(sparse, prepare_columns, n_columns, out):
    """``out[:, cols] = sparse @ prepare_columns(cols)`` for narrow column blocks, in threads.

    A narrow block (one cache line per row) stays in cache while the sparse rows gather
    from it; scipy's kernel releases the GIL, so blocks run in parallel on all cores.
    Blocks write disjoint columns of ``out``.
    """
    blocks = [slice(s, min(s + _SPARSE_COLUMN_BLOCK, n_columns)) for s in range(0, n_columns, _SPARSE_COLUMN_BLOCK)]

    def multiply(cols):
        out[:, cols] = sparse @ prepare_columns(cols)

    workers = min(available_cores(), _MAX_SPARSE_THREADS, len(blocks))
    if workers <= 1:
        for cols in blocks:
            multiply(cols)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(multiply, blocks))


def _graph_gram_matrix(X, graph, row_scale, mean, seconds):
    """``G = X_p^T A~ X_p`` (only the upper triangle valid) and ``C = X_p^T X_p``.

    Step 1: ``Y = A~ X_p`` by narrow column blocks (each block centred before the sparse
    product, so no full centred copy of X exists); step 2: per row chunk of ``X_p`` the
    upper block-triangle of ``X_p^T Y`` and the Gram ``X_p^T X_p`` (syrk), in float64.
    """
    started = time.perf_counter()
    n, dim = X.shape
    dtype = X.dtype
    mean_c = mean.astype(dtype)
    row_scale_c = None if row_scale is None else row_scale.astype(dtype)[:, None]

    def prepared_columns(cols):
        if row_scale_c is None:
            block = np.subtract(X[:, cols], mean_c[cols])
        else:
            block = np.multiply(X[:, cols], row_scale_c)
            block -= mean_c[cols]
        return np.ascontiguousarray(block)

    graph_c = graph.astype(dtype)
    smoothed = np.empty((n, dim), dtype=dtype)
    _sparse_times_columns(graph_c, prepared_columns, dim, smoothed)
    del graph_c
    seconds["graph_product"] = time.perf_counter() - started
    started = time.perf_counter()
    agreement = np.zeros((dim, dim))
    gram = np.zeros((dim, dim))
    for rows in row_chunks(n, dim * X.itemsize):
        chunk = prepared_chunk(X, rows, row_scale, mean_c)
        gram += chunk.T @ chunk  # numpy dispatches A^T A to syrk
        y_rows = smoothed[rows]
        for start in range(0, dim, _GRAM_COLUMN_BLOCK):
            stop = min(start + _GRAM_COLUMN_BLOCK, dim)
            agreement[:stop, start:stop] += chunk[:, :stop].T @ y_rows[:, start:stop]
        del chunk, y_rows
    del smoothed
    seconds["gram_matrices"] = time.perf_counter() - started
    return gram, agreement


def _pass_operator(passes, graph, semantic_weight, graph_weight):
    """``V -> X_p^T (s X_p V + g A~ X_p V)`` (D x k blocks): two row-chunked passes over X
    in X's dtype and one thin sparse product, accumulated in float64."""
    dtype = passes.X.dtype
    graph_c = None
    if graph is not None and graph_weight != 0.0:
        graph_c = graph.astype(dtype)
        graph_c.data *= dtype.type(graph_weight)

    def apply(basis):
        projected = passes.project(basis, dtype=dtype)
        mixed = projected * dtype.type(semantic_weight)
        if graph_c is not None:
            smoothed = np.empty_like(projected)
            _sparse_times_columns(
                graph_c, lambda cols: np.ascontiguousarray(projected[:, cols]), basis.shape[1], smoothed
            )
            mixed += smoothed
            del smoothed
        return passes.transpose_product(mixed)

    return apply


def _subspace_iteration(apply, dim, n_components, tol, max_iter, seconds):
    """Top-d eigenpairs of a positive semi-definite operator (here the Gram matrix C) by
    block subspace iteration with Rayleigh-Ritz every step.

    Returns ``(values, vectors, info)`` for the whole block (2d, descending; the top d meet
    ``||C v - theta v|| <= tol * theta_1``).  The start block is Gaussian with a fixed seed,
    so results are deterministic.  The small dense steps run on one BLAS thread: on a busy
    machine multi-threaded BLAS on (D, k) blocks was 10-100x slower in our measurements.
    """
    started = time.perf_counter()
    # Block 2d: on the benchmark's spectrum 2d took 8 steps at tol 1e-5, d + 16 took 17 and
    # 3d took 6, so 2d needs the fewest column-applications.
    block = min(dim, max(2 * n_components, n_components + 16))
    with _single_threaded_lapack():
        basis = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, block)))[0]
    step = 0
    while step < max_iter:
        step += 1
        image = apply(basis)
        with _single_threaded_lapack():
            values, vectors = np.linalg.eigh((basis.T @ image + image.T @ basis) / 2)
            values, vectors = values[::-1], vectors[:, ::-1]
            ritz, ritz_image = basis @ vectors, image @ vectors
            residual = ritz_image[:, :n_components] - ritz[:, :n_components] * values[:n_components]
            scale = max(abs(float(values[0])), np.finfo(float).tiny)
            relative_residual = float(np.linalg.norm(residual, axis=0).max() / scale)
            if relative_residual <= tol:
                break
            basis = np.linalg.qr(ritz_image)[0]  # span(C basis), in Ritz order
    seconds["pca_iterations"] = time.perf_counter() - started
    info = {"iterations": step, "relative_residual": relative_residual, "block_size": block}
    return values.copy(), _fix_signs(ritz), info


def _lanczos_top(apply, dim, n_components, tol, usage=None):
    """Top-d (largest algebraic) eigenpairs of an implicit symmetric operator, descending.

    ARPACK's Lanczos (``scipy eigsh``) needs only products, finds the algebraically largest
    eigenvalues of indefinite operators (the graph term has negative eigenvalues) and
    starts from a fixed vector, so results are deterministic.  ``usage`` (a dict), if given,
    accumulates the operator columns applied and the seconds spent in those products: the
    rest of eigsh's time is its own re-orthogonalisation and restarts.
    """
    if usage is not None:
        counted = apply

        def apply(block):
            started = time.perf_counter()
            image = counted(block)
            usage["operator_columns"] = usage.get("operator_columns", 0) + block.shape[1]
            usage["product_seconds"] = usage.get("product_seconds", 0.0) + time.perf_counter() - started
            return image

    operator = spla.LinearOperator(
        (dim, dim), matvec=lambda v: apply(v.reshape(-1, 1)).ravel(), matmat=apply, dtype=np.float64
    )
    start = np.random.default_rng(0).standard_normal(dim)
    if n_components >= dim - 1:  # ARPACK needs k < n: take the dense route
        dense = apply(np.eye(dim))
        return _top_eigenvectors((dense + dense.T) / 2, n_components)
    with _single_threaded_lapack():
        values, vectors = spla.eigsh(operator, k=n_components, which="LA", v0=start, tol=tol)
    order = np.argsort(values)[::-1]
    return values[order].copy(), _fix_signs(vectors[:, order].copy())


def _principal_sines(basis_a, basis_b):
    """Sines of the principal angles between two subspaces given by orthonormal bases."""
    cosines = np.clip(sla.svdvals(basis_a.T @ basis_b), 0.0, 1.0)
    return np.sqrt(np.maximum(1.0 - cosines**2, 0.0))


def _orthonormal(matrix):
    """An orthonormal basis of the column span (columns of zero norm are dropped)."""
    norms = np.linalg.norm(matrix, axis=0)
    return np.linalg.qr(matrix[:, norms > 0])[0]


def _single_threaded_lapack():
    """Run eigh on one BLAS thread.

    Its tridiagonal reduction is BLAS-2 (memory) bound: with two OpenBLAS threads it is
    ~2x faster on an idle 2-core machine but was 4-40x slower on a busy one in our
    measurements; and results differ in the last bits between thread counts, so a fixed
    count keeps repeated calls bit-identical.
    """
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _top_eigenvectors(matrix, n_vectors):
    """Top eigenpairs (descending) of a symmetric matrix given by its upper triangle.

    Signs are fixed so that each vector's largest-magnitude entry is positive, which makes
    the result deterministic across calls and platforms with the same LAPACK.
    """
    dim = matrix.shape[0]
    with _single_threaded_lapack():
        values, vectors = sla.eigh(matrix, lower=False, subset_by_index=[dim - n_vectors, dim - 1], check_finite=False)
    return values[::-1].copy(), _fix_signs(vectors[:, ::-1].copy())


def _fix_signs(vectors):
    """Flip columns so that each one's largest-magnitude entry is positive (in place)."""
    pivots = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[pivots, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    vectors *= signs
    return vectors


def _connected_variance(Z, connected):
    return float(np.einsum("ij,ij->", Z[connected], Z[connected]))


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------
def rec_pca_projection(
    X,
    norm_adjacency,
    n_components,
    alpha=DEFAULT_ALPHA,
    formulation="item_space",
    center=True,
    row_normalize=False,
    whiten=False,
    solver="auto",
    tol=1e-5,
    max_iter=100,
    progress=None,
    device=None,
) -> RecPCAResult:
    """Rec-PCA item vectors of LLM item embeddings (module docstring).

    ``X``: (n, D) embeddings of real items (no padding row).  ``norm_adjacency``: the (n, n)
    output of :func:`normalized_adjacency` on the matching co-occurrence sub-graph, or None
    (plain PCA).  ``n_components`` is the backbone's embedding size d (1 <= d <= D).
    ``alpha`` (``rec_pca_alpha``, [0, 1]) trades kept semantic variance for graph agreement,
    ``formulation`` (``rec_pca_formulation``) is item_space | projection.  ``solver``
    (``rec_pca_solver``): exact | iterative | auto decides how the PCA part (and the
    projection formulation's D x D problems) are solved, with ``tol`` / ``max_iter``;
    ``center``, ``row_normalize`` (L2 rows before centring) and ``whiten`` (unit-RMS output
    columns; the stats are those of the unwhitened vectors) prepare X and Z.

    The geometry report in ``stats``: ``retained_variance`` (semantic variance kept, as a
    fraction of ``tr(X_p^T X_p)``) and ``retained_variance_pca``; ``graph_tv`` /
    ``graph_tv_pca`` (:func:`graph_total_variation` of Z and of the PCA vectors) and
    ``tv_ratio`` / ``tv_ratio_pca`` (the same divided by the vectors' variance on connected
    items); ``max_sine_to_pca`` / ``mean_sine_to_pca`` (principal angles between Z's
    subspace and PCA's: in feature space for projection, item space for item_space);
    ``semantic_scale`` / ``graph_scale`` (the normalisers s_K, s_A or s_G); ``seconds``.
    ``progress``: a callable given one line as each phase ends (the wrapper passes its logger
    on large catalogues, where a run takes tens of seconds).  ``device`` (``rec_pca_device``):
    None runs the passes over X with numpy; a torch device (``"cuda:0"``) runs them there
    (:mod:`.dense_passes`; the projection formulation's exact ``X_p^T A~ X_p`` stays on numpy).
    """
    started = time.perf_counter()
    seconds = {}
    X = _as_embedding_matrix(X)
    alpha = check_alpha(alpha)
    formulation = check_formulation(formulation)
    solver = check_solver_options(solver, tol, max_iter)
    device = check_device(device)
    n_items, dim_in = X.shape
    n_components = _check_n_components(n_components, dim_in)
    if n_items < n_components:
        warnings.warn(
            f"only {n_items} items for {n_components} components: at most {n_items} directions "
            f"carry variance, so the trailing components carry no variance (they are arbitrary "
            f"orthonormal completions)",
            stacklevel=2,
        )

    graph = None
    if norm_adjacency is not None:
        graph = as_checked_csr(norm_adjacency, "norm_adjacency", n=n_items, copy=False)
        if graph.nnz and graph.data.max() > 1.0 + 1e-6:
            raise ValueError(
                "norm_adjacency has weights above 1, so it is not symmetrically normalised; "
                "pass normalized_adjacency(graph)"
            )
    connected = connected_mask(graph) if graph is not None else np.zeros(n_items, dtype=bool)
    row_scale = _row_scale(X) if row_normalize else None
    column_sum = _weighted_column_sum(X, row_scale)
    mean = column_sum / n_items if center else np.zeros(dim_in)
    passes = dense_passes(X, row_scale, mean, device)
    seconds["checks_and_mean"] = time.perf_counter() - started

    use_graph = graph is not None and alpha != 0.0 and bool(connected.any())
    if solver == "auto":
        solver = _auto_solver(n_items, dim_in, n_components)
    lanczos_tol = 0.0 if solver == "exact" else tol
    full_kernel = n_items * dim_in <= _ITEM_SPACE_FULL_KERNEL_MAX
    kernel_rank = n_components
    if use_graph and formulation == "item_space" and not full_kernel:
        kernel_rank = min(dim_in, 2 * n_components)
    info = {"solver": solver, "device": passes.device_name}

    # 1. PCA: the alpha = 0 answer, the semantic scale s_K and the geometry report's reference.
    step = time.perf_counter()
    gram = agreement = None
    if solver == "exact":
        if use_graph and formulation == "projection":
            gram, agreement = _graph_gram_matrix(X, graph, row_scale, mean, seconds)
        else:
            gram = passes.gram()
            seconds["gram_matrices"] = time.perf_counter() - step
        total_variance = float(np.trace(gram))
        step = time.perf_counter()
        pca_values, pca_components = _top_eigenvectors(gram, kernel_rank)
        seconds["pca_eigh"] = time.perf_counter() - step
    else:
        apply_gram = _pass_operator(passes, None, 1.0, 0.0)
        values, vectors, pca_info = _subspace_iteration(apply_gram, dim_in, n_components, tol, max_iter, seconds)
        pca_values, pca_components = values[:kernel_rank], vectors[:, :kernel_rank]
        info.update({"iterations": pca_info["iterations"], "relative_residual": pca_info["relative_residual"]})
        info["block_size"] = pca_info["block_size"]
        if pca_info["relative_residual"] > tol:
            warnings.warn(
                f"Rec-PCA iterative solver stopped after rec_pca_max_iter={max_iter} steps with relative "
                f"residual {pca_info['relative_residual']:.2e} > rec_pca_tol={tol:g}; the components "
                f"are approximate (raise rec_pca_max_iter or use rec_pca_solver 'exact')",
                stacklevel=2,
            )
        total_variance = passes.total_variance()
    semantic_scale = float(pca_values[:n_components].sum())
    if progress is not None:
        progress(
            f"Rec-PCA: PCA part of {n_items} x {dim_in} done ({solver} solver) after "
            f"{time.perf_counter() - started:.1f} s" + ("; trade-off next" if use_graph else "")
        )
    if not semantic_scale > 0:  # every item has the same vector: nothing to trade, Z = 0 (PCA)
        use_graph = False
    pca_basis = pca_components[:, :n_components]
    pca_vectors = passes.project(pca_basis)

    # 2. The trade-off.
    step = time.perf_counter()
    graph_scale = None
    components = item_basis = None
    if not use_graph:
        components, eigenvalues, vectors = pca_basis, pca_values[:n_components].copy(), pca_vectors
        kept_variance = float(np.einsum("ij,ij->", vectors, vectors))
    elif formulation == "projection":
        if solver == "exact":
            graph_values = _top_eigenvectors(agreement, n_components)[0]
        else:
            apply_agreement = _pass_operator(passes, graph, 0.0, 1.0)
            graph_values = _lanczos_top(apply_agreement, dim_in, n_components, lanczos_tol)[0]
        graph_scale = _positive_graph_scale(graph_values, "X_p^T A~ X_p (directions linear in X)")
        weights = ((1.0 - alpha) / semantic_scale, alpha / graph_scale)
        if solver == "exact":
            eigenvalues, components = _top_eigenvectors(weights[0] * gram + weights[1] * agreement, n_components)
        else:
            apply_tradeoff = _pass_operator(passes, graph, *weights)
            eigenvalues, components = _lanczos_top(apply_tradeoff, dim_in, n_components, lanczos_tol)
        del gram, agreement
        vectors = passes.project(components)
        kept_variance = float(np.einsum("ij,ij->", vectors, vectors))
    else:
        reduced = None if full_kernel else passes.project(pca_components)  # rank-r kernel P P^T, P = X_p V_r
        if device is None:
            # s_A is only a scale: in iterative mode its eigenvalues need 1e-2 relative accuracy, not
            # rec_pca_tol (on the 100k-item benchmark graph this halves the phase; the sum moved 0.4%).
            scale_tol = lanczos_tol if solver == "exact" else max(lanczos_tol, _GRAPH_SCALE_TOL)
            usage = {}
            graph_values = _lanczos_top(lambda V: graph @ V, n_items, n_components, scale_tol, usage)[0]
            graph_scale = _positive_graph_scale(graph_values, "A~")
            if full_kernel:  # K V = X_p (X_p^T V), two row-chunked passes, no copy of X

                def kernel(V):
                    return passes.project(passes.transpose_product(V))
            else:

                def kernel(V):
                    return reduced @ (reduced.T @ V)

            weights = ((1.0 - alpha) / semantic_scale, alpha / graph_scale)
            eigenvalues, item_basis = _lanczos_top(
                lambda V: weights[0] * kernel(V) + weights[1] * (graph @ V),
                n_items,
                n_components,
                lanczos_tol,
                usage,
            )
            info["tradeoff_eigensolver"] = "arpack"
            # graph scale and trade-off together, as the device path counts them
            info["tradeoff_operator_columns"] = usage["operator_columns"]
            info["tradeoff_product_seconds"] = usage["product_seconds"]
        else:
            graph_scale, eigenvalues, item_basis, solver_info = _item_space_on_device(
                passes, graph, reduced, pca_vectors, alpha, semantic_scale, n_components, lanczos_tol
            )
            info.update(solver_info)
        # Column k carries sqrt(s_K theta_k): at alpha = 0 that is sigma_k, i.e. exactly PCA.
        vectors = item_basis * np.sqrt(np.maximum(semantic_scale * eigenvalues, 0.0))
        captured = passes.transpose_product(item_basis)
        kept_variance = float(np.einsum("ij,ij->", captured, captured))
        info["kernel_rank"] = dim_in if full_kernel else kernel_rank
    seconds["tradeoff"] = time.perf_counter() - step
    if progress is not None and use_graph:
        progress(f"Rec-PCA: {formulation} trade-off done after {time.perf_counter() - started:.1f} s; geometry next")

    # 3. The geometry report.
    step = time.perf_counter()
    graph_tv = graph_tv_pca = tv_ratio = tv_ratio_pca = None
    if graph is not None:
        graph_tv_pca = graph_total_variation(pca_vectors, graph, connected)
        graph_tv = graph_total_variation(vectors, graph, connected) if use_graph else graph_tv_pca
        variance_pca = _connected_variance(pca_vectors, connected)
        tv_ratio_pca = graph_tv_pca / variance_pca if variance_pca > 0 else None
        variance = _connected_variance(vectors, connected)
        tv_ratio = graph_tv / variance if variance > 0 else None
    if not use_graph:
        sines = np.zeros(n_components)
    elif formulation == "projection":
        sines = _principal_sines(components, pca_basis)
    else:
        sines = _principal_sines(item_basis, _orthonormal(pca_vectors))
    seconds["geometry"] = time.perf_counter() - step

    if whiten:
        rms = np.sqrt(np.mean(vectors**2, axis=0))
        nonzero = rms > 0
        vectors = vectors.copy()
        vectors[:, nonzero] /= rms[nonzero]

    kept_pca = float(np.einsum("ij,ij->", pca_vectors, pca_vectors))
    seconds["total"] = time.perf_counter() - started
    stats = {
        "formulation": formulation,
        "alpha": alpha,
        "retained_variance": kept_variance / total_variance if total_variance > 0 else 1.0,
        "retained_variance_pca": kept_pca / total_variance if total_variance > 0 else 1.0,
        "graph_tv": graph_tv,
        "graph_tv_pca": graph_tv_pca,
        "tv_ratio": tv_ratio,
        "tv_ratio_pca": tv_ratio_pca,
        "max_sine_to_pca": float(sines.max()) if sines.size else 0.0,
        "mean_sine_to_pca": float(sines.mean()) if sines.size else 0.0,
        "semantic_scale": semantic_scale,
        "graph_scale": graph_scale,
        "n_items": n_items,
        "dim_in": dim_in,
        "dim_out": n_components,
        "n_isolated": int(n_items - connected.sum()),
        **info,
        "seconds": seconds,
    }
    return RecPCAResult(
        embeddings=np.asarray(vectors, dtype=np.float32),
        components=components,
        mean=mean,
        eigenvalues=np.asarray(eigenvalues, dtype=np.float64),
        stats=stats,
    )


def _item_space_on_device(passes, graph, reduced, pca_vectors, alpha, semantic_scale, n_components, tol):
    """The item-space trade-off on ``passes``' torch device (:mod:`.chebyshev`): the graph scale s_A,
    then the top-d eigenpairs of ``(1 - a) K / s_K + a A~ / s_A``, started from the PCA vectors.

    ``reduced``: None (K through the passes over X) or the rank-r factor P. ``tol``: the numpy
    path's Lanczos tolerance, 0 (exact) being 1e-10 in relative residual here (10 float32 eps where
    the products are float32 ones); s_A to relative residual 1e-6 (not the CPU path's loose 1e-2:
    a Ritz sum's error is about the residual squared, so it matches an exact s_A). Returns
    (s_A, eigenvalues, item basis as numpy, stats)."""
    import torch

    from .chebyshev import chebyshev_top_eigenpairs

    device = passes.device
    coo = graph.tocoo()
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.as_tensor(coo.data, dtype=torch.float64)
    graph_t = torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True)
    graph_t = graph_t.coalesce().to(device)
    n_items = graph.shape[0]
    # float32 X caps the kernel products' accuracy: a residual below ~10 eps is noise, not progress
    floor = _DEVICE_MIN_TOL if reduced is not None else max(_DEVICE_MIN_TOL, 10 * float(np.finfo(passes.X.dtype).eps))
    # s_A is a sum of Ritz values, whose error is about the residual squared: 1e-6 gives it to ~1e-12
    scale_tol, tradeoff_tol = max(tol, _DEVICE_SCALE_TOL), max(tol, floor)
    graph_values, _, scale_info = chebyshev_top_eigenpairs(
        lambda V: graph_t @ V, n_items, n_components, lower=-1.0, device=device, tol=scale_tol
    )
    graph_scale = _positive_graph_scale(graph_values, "A~")
    weights = ((1.0 - alpha) / semantic_scale, alpha / graph_scale)
    if reduced is None:
        kernel = passes.kernel_product
    else:
        reduced_t = torch.as_tensor(reduced).to(device)

        def kernel(V):
            return reduced_t @ (reduced_t.T @ V)

    norms = np.linalg.norm(pca_vectors, axis=0)
    start = pca_vectors[:, norms > 0] / norms[norms > 0]
    with torch.no_grad():
        eigenvalues, item_basis, tradeoff_info = chebyshev_top_eigenpairs(
            lambda V: weights[0] * kernel(V) + weights[1] * (graph_t @ V),
            n_items,
            n_components,
            lower=-weights[1],  # K is PSD and A~'s eigenvalues are >= -1
            device=device,
            tol=tradeoff_tol,
            start=start,
        )
    for what, used, tol in (("graph scale", scale_info, scale_tol), ("trade-off", tradeoff_info, tradeoff_tol)):
        if used["relative_residual"] > tol:
            warnings.warn(
                f"Rec-PCA item_space {what} on {passes.device_name}: the Chebyshev solver stopped after "
                f"{used['iterations']} steps at relative residual {used['relative_residual']:.2e} > {tol:g}; "
                "the vectors are approximate (set rec_pca_device: numpy for ARPACK on the CPU)",
                stacklevel=3,
            )
    stats = {
        "tradeoff_eigensolver": "chebyshev",
        "tradeoff_iterations": tradeoff_info["iterations"],
        "tradeoff_operator_columns": tradeoff_info["operator_columns"] + scale_info["operator_columns"],
    }
    return graph_scale, eigenvalues, _fix_signs(item_basis), stats


def _auto_solver(n_items, dim_in, n_components):
    """`exact` where forming X_p^T X_p (n D^2 flops, syrk) plus one D x D eigh costs less than block
    subspace iteration (2 passes of 2 n D (2d) flops per step), else `iterative`.

    Measured on 2 CPU cores (``benchmarks/bench_rec_pca.py``; exact vs iterative PCA part): 100k x 4,096
    14 s vs 19 s, 200k x 4,096 31 s vs 48 s, 1M x 1,024 10 s vs 89 s; so exact wherever n is large
    next to D, and iterative only where the D^3 eigh dominates (few items, very wide vectors).
    """
    block = min(dim_in, max(2 * n_components, n_components + 16))
    exact = n_items * dim_in**2 + _EIGH_FLOPS_PER_D3 * dim_in**3
    iterative = _THIN_PRODUCT_PENALTY * _ITERATIVE_STEPS * 4 * n_items * dim_in * block
    return "exact" if exact <= max(iterative, _EXACT_ALWAYS_FLOPS) else "iterative"


def _positive_graph_scale(values, what):
    """s_A / s_G: the graph term's best d-direction agreement, which must be positive."""
    scale = float(np.sum(values))
    if not scale > 0:
        raise ValueError(
            f"the co-occurrence graph gives no positive agreement over {what} (sum of its top eigenvalues "
            f"{scale:.3g}), so the graph term has nothing to reward: use rec_pca_alpha 0 (plain PCA) or "
            "check the graph options (graph_window, graph_weighting)"
        )
    return scale
