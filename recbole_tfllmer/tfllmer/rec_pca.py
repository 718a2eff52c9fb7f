"""Rec-PCA: recommendation-aware reduction of LLM item embeddings (method-notes, "Rec-PCA").

Pure numpy/scipy.  With ``X_p`` the prepared embeddings (optionally L2-normalised rows, then
centred), ``A~`` the normalised co-occurrence adjacency (``normalized_adjacency``) and
``L_c = C - A~`` the normalised Laplacian restricted to connected items
(``C = diag(1[degree_i > 0])``), Rec-PCA solves

    maximise  tr(W^T X_p^T X_p W) - lam * tr(W^T X_p^T L_c X_p W)   s.t.  W^T W = I_d

whose solution is the top-d eigenvectors of the D x D matrix

    M = X_p^T (I - lam L_c) X_p = X_p^T diag(w) X_p + lam X_p^T A~ X_p,   w_i = 1 - lam c_i.

When every item is connected this is the notes' ``(1 - lam) X^T X + lam X^T A~ X``; an
isolated item keeps full weight in the variance term and has no graph term.  ``lam = 0`` (or
no graph) is exactly PCA.  ``lam > 1`` is allowed: it only shifts the balance further towards
graph smoothness (connected items' variance then enters with a negative weight; ``M`` stays
symmetric and ``W`` is still its top eigenspace).

Cost (n items, D input dims, nnz graph entries):
  * ``Y = lam A~ X_p``: one sparse-dense product, O(nnz D), in narrow column blocks that
    stay in cache, spread over threads (scipy's kernel releases the GIL);
  * ``M``: row chunks of ``X_p^T (diag(w) X_p + Y)``; only the upper block-triangle is
    formed (about 0.56 n D^2 multiply-adds), float32 BLAS per chunk for float32 input,
    accumulated across chunks in float64;
  * ``W``: ``scipy.linalg.eigh`` with ``subset_by_index``, single-threaded (see
    ``_single_threaded_lapack``).
Solvers (``solver``): ``exact`` builds M as above and takes its top eigenvectors with
LAPACK; ``iterative`` never forms M: block subspace iteration (block 2d, Rayleigh-Ritz every
step) on the operator ``V -> X_p^T (diag(w) X_p V + lam A~ (X_p V))``, two passes over X and
one thin sparse product per step (O(n D d + nnz d)), stopped when every top-d Ritz pair has
``||M v - theta v|| <= tol * theta_1``.  It needs M positive semi-definite, which holds for
``lam <= 0.5`` (``diag(w) + lam A~`` has eigenvalues in ``[1 - 2 lam, 1]``), so it refuses
larger ``lam``.  ``auto`` (the default) is exact while the D x D matrix costs at most
``_AUTO_EXACT_MAX_WORK`` multiply-adds (every catalogue up to ~10^5 items at 384-1024 dims),
iterative above that (e.g. 100k items x 4096 dims: ~8e11 multiply-adds exact).  Its products
run in X's dtype, so float32 embeddings bound the reachable residual at about 1e-7.
Memory (float32 X of size |X|): X is never copied or centred as a whole; each chunk or
column block is centred on the fly.  Copies that exist: ``Y`` (n x D in X's dtype, 1x |X|,
only with a graph term), one row chunk plus one temporary of its size (|X|/8, at most
64 MiB each), float64 D x D matrices, and float64/float32 copies of the graph.  Peak is
about 2.3 |X| including X for 100k x 4096 with 5M edges (benchmarks/bench_rec_pca.py).
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

from .cooccurrence import as_checked_csr, available_cores, connected_mask, graph_total_variation

try:  # optional (ships with scikit-learn); without it LAPACK runs with its default threads
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = ["RecPCAResult", "rec_pca_projection", "check_solver_options", "SOLVERS", "ITERATIVE_MAX_LAMBDA"]

SOLVERS = ("auto", "exact", "iterative")

# Rows per chunk: a chunk of X is |X| / 8, clamped to [4 MiB, 64 MiB], so per-chunk
# temporaries stay a small fraction of X for large and small catalogues alike.
_CHUNK_BYTES_MIN, _CHUNK_BYTES_MAX, _CHUNKS_PER_MATRIX = 4 * 2**20, 64 * 2**20, 8
# Width of the column blocks of the sparse product: 16 float32 = one cache line per row.
_SPARSE_COLUMN_BLOCK = 16
_MAX_SPARSE_THREADS = 8
# stats['graph_tv_pca'] under a graph term needs the exact plain-PCA projection too: an
# extra Gram matrix (n D^2 / 2 multiply-adds) and eigendecomposition (~4 D^3).  It is
# computed only while that extra work stays below this budget (~2-4 s on 2 cores), i.e. not
# for 4096-d LLM vectors, where it would add ~50% to the run; the lam = 0 run (the PCA
# baseline) reports the same number as its graph_tv.
_PCA_REFERENCE_MAX_WORK = 2e10
# Width of the column blocks of the upper block-triangle of M.
_GRAM_COLUMN_BLOCK = 512
# solver="auto" builds M exactly while n D^2 / 2 (its multiply-adds) stays below this.
_AUTO_EXACT_MAX_WORK = 1e11
# Largest lam for which M is positive semi-definite (the iterative solver's requirement).
ITERATIVE_MAX_LAMBDA = 0.5


@dataclass
class RecPCAResult:
    """Output of :func:`rec_pca_projection`."""

    embeddings: np.ndarray  # (n, d) float32, Z = X_p W (each column scaled to unit RMS if whitened)
    components: np.ndarray  # (D, d) float64, orthonormal columns W
    mean: np.ndarray  # (D,) float64 centring vector (zeros if not centred)
    eigenvalues: np.ndarray  # (d,) float64 eigenvalues of M = X_p^T (I - lam L_c) X_p, descending
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------
def _check_lambda(lam) -> float:
    valid = isinstance(lam, numbers.Real) and not isinstance(lam, (bool, np.bool_))
    if not valid or not np.isfinite(lam) or lam < 0:
        raise ValueError(
            f"rec_pca_lambda must be a finite number >= 0 (0 = plain PCA; values above 1 are "
            f"allowed and weight the graph term more), got {lam!r}"
        )
    return float(lam)


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


def _row_chunks(n_rows: int, row_bytes: int):
    row_bytes = max(row_bytes, 1)
    chunk_bytes = min(max(n_rows * row_bytes // _CHUNKS_PER_MATRIX, _CHUNK_BYTES_MIN), _CHUNK_BYTES_MAX)
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


# --------------------------------------------------------------------------------------
# passes over X
# --------------------------------------------------------------------------------------
def _row_scale(X: np.ndarray) -> np.ndarray:
    """1 / ||x_i|| (float64); all-zero rows keep scale 0 and stay zero."""
    norms = np.empty(X.shape[0])
    for rows in _row_chunks(X.shape[0], X.shape[1] * 8):
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
    for rows in _row_chunks(X.shape[0], X.shape[1] * 8):
        chunk = X[rows].astype(np.float64)
        total += chunk.sum(axis=0) if row_scale is None else row_scale[rows] @ chunk
        del chunk
    if not np.all(np.isfinite(total)):
        raise ValueError("X contains NaN or inf values (or values so large that they overflow)")
    return total


def _prepared_chunk(X, rows, row_scale, mean_c):
    """X_p[rows] = s_i x_i - mu, in X's dtype (a fresh C-contiguous chunk-sized array)."""
    if row_scale is None:
        chunk = np.subtract(X[rows], mean_c)
    else:
        chunk = np.multiply(X[rows], row_scale[rows].astype(X.dtype)[:, None])
        chunk -= mean_c
    return np.ascontiguousarray(chunk)


def _gram_matrix(X, row_scale, mean):
    """G = X_p^T X_p (plain PCA), row-chunked, accumulated in float64."""
    dim = X.shape[1]
    gram = np.zeros((dim, dim))
    mean_c = mean.astype(X.dtype)
    for rows in _row_chunks(X.shape[0], dim * X.itemsize):
        chunk = _prepared_chunk(X, rows, row_scale, mean_c)
        gram += chunk.T @ chunk  # numpy dispatches A^T A to syrk
        del chunk
    return gram


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


def _rec_pca_matrices(X, graph, connected, lam, row_scale, mean, seconds, exact_gram):
    """Return ``(M, G or None, tr(G))`` where only the upper triangle of ``M`` is valid.

    ``M = X_p^T diag(w) X_p + lam X_p^T A~ X_p`` (``w_i = 1 - lam c_i``), from
    Step 1: ``Y = lam A~ X_p`` by narrow column blocks (each block centred before the
    sparse product, so no full centred copy of X exists);
    Step 2: per row chunk of ``X_p`` the upper block-triangle of ``X_p^T (diag(w) X_p + Y)``.
    With ``exact_gram`` the Gram ``G = X_p^T X_p`` is accumulated separately (syrk) for the
    plain-PCA reference and ``M = (1 - lam) G + lam G_iso + X_p^T Y``; that costs about 90%
    more multiply-adds in step 2.
    """
    started = time.perf_counter()
    n, dim = X.shape
    dtype = X.dtype
    weights = 1.0 - lam * connected.astype(np.float64)
    mean_c = mean.astype(dtype)
    row_scale_c = None if row_scale is None else row_scale.astype(dtype)[:, None]

    def prepared_columns(cols):
        if row_scale_c is None:
            block = np.subtract(X[:, cols], mean_c[cols])
        else:
            block = np.multiply(X[:, cols], row_scale_c)
            block -= mean_c[cols]
        return np.ascontiguousarray(block)

    scaled_graph = graph.astype(dtype)  # a copy, so that lam is folded in once
    scaled_graph.data *= dtype.type(lam)
    smoothed = np.empty((n, dim), dtype=dtype)
    _sparse_times_columns(scaled_graph, prepared_columns, dim, smoothed)
    del scaled_graph
    seconds["graph_product"] = time.perf_counter() - started
    started = time.perf_counter()

    matrix = np.zeros((dim, dim))
    gram = np.zeros((dim, dim)) if exact_gram else None
    gram_isolated = None
    total_variance = 0.0
    for rows in _row_chunks(n, dim * X.itemsize):
        chunk = _prepared_chunk(X, rows, row_scale, mean_c)
        y_rows = smoothed[rows]  # a view, completed in place
        if exact_gram:
            gram += chunk.T @ chunk  # numpy dispatches A^T A to syrk
            isolated_rows = ~connected[rows]
            if isolated_rows.any():
                chunk_isolated = chunk[isolated_rows]
                if gram_isolated is None:
                    gram_isolated = np.zeros((dim, dim))
                gram_isolated += chunk_isolated.T @ chunk_isolated
                del chunk_isolated
        else:
            total_variance += float(np.einsum("ij,ij->i", chunk, chunk).sum(dtype=np.float64))
            row_weights = weights[rows].astype(dtype)[:, None]
        for start in range(0, dim, _GRAM_COLUMN_BLOCK):
            stop = min(start + _GRAM_COLUMN_BLOCK, dim)
            y_block = y_rows[:, start:stop]
            if not exact_gram:
                y_block += row_weights * chunk[:, start:stop]
            matrix[:stop, start:stop] += chunk[:, :stop].T @ y_block
        del chunk, y_rows, y_block
    del smoothed
    if exact_gram:
        matrix += (1.0 - lam) * gram
        if gram_isolated is not None:
            matrix += lam * gram_isolated
        total_variance = float(np.trace(gram))
    seconds["gram_matrices"] = time.perf_counter() - started
    return matrix, gram, total_variance


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


def _iterative_top_eigenvectors(X, graph, connected, lam, row_scale, mean, n_components, tol, max_iter, seconds):
    """Top-d eigenpairs of M by block subspace iteration on the implicit operator.

    Returns ``(eigenvalues, components, total_variance, info)``.  Each step applies
    ``M V = X_p^T (diag(w) X_p V + lam A~ X_p V)`` to a (D, k) block (two row-chunked passes
    over X in X's dtype, accumulated in float64), then Rayleigh-Ritz on the block; the
    residual test uses the M V already computed, so a converged step costs nothing extra.
    The start block is Gaussian with a fixed seed: results are deterministic.
    """
    started = time.perf_counter()
    n, dim = X.shape
    dtype = X.dtype
    # Block 2d: on the benchmark's spectrum 2d took 8 steps at tol 1e-5, d + 16 took 17 and
    # 3d took 6, so 2d needs the fewest column-applications of M.
    block = min(dim, max(2 * n_components, n_components + 16))
    mean_c = mean.astype(dtype)
    weights = (1.0 - lam * connected.astype(np.float64)).astype(dtype)[:, None]
    scaled_graph = None
    if graph is not None and lam != 0.0:
        scaled_graph = graph.astype(dtype)
        scaled_graph.data *= dtype.type(lam)
    total_variance = [0.0]

    def apply_matrix(basis, first):
        basis_c = basis.astype(dtype)
        projected = np.empty((n, basis.shape[1]), dtype=dtype)
        for rows in _row_chunks(n, dim * X.itemsize):
            chunk = _prepared_chunk(X, rows, row_scale, mean_c)
            if first:
                total_variance[0] += float(np.einsum("ij,ij->i", chunk, chunk).sum(dtype=np.float64))
            projected[rows] = chunk @ basis_c
            del chunk
        mixed = weights * projected
        if scaled_graph is not None:
            smoothed = np.empty_like(projected)
            _sparse_times_columns(
                scaled_graph, lambda cols: np.ascontiguousarray(projected[:, cols]), projected.shape[1], smoothed
            )
            mixed += smoothed
            del smoothed
        result = np.zeros((dim, basis.shape[1]))
        for rows in _row_chunks(n, dim * X.itemsize):
            result += _prepared_chunk(X, rows, row_scale, mean_c).T @ mixed[rows]
        return result

    def rayleigh_ritz(basis, image):
        """Ritz pairs of M on span(basis) (orthonormal), descending, with their images and
        the top-d pairs' relative residual."""
        values, vectors = np.linalg.eigh((basis.T @ image + image.T @ basis) / 2)
        values, vectors = values[::-1], vectors[:, ::-1]
        ritz, ritz_image = basis @ vectors, image @ vectors
        residual = ritz_image[:, :n_components] - ritz[:, :n_components] * values[:n_components]
        scale = max(abs(float(values[0])), np.finfo(float).tiny)
        return values, ritz, ritz_image, float(np.linalg.norm(residual, axis=0).max() / scale)

    # The small dense steps run on one BLAS thread: on a busy machine, multi-threaded BLAS
    # on (D, k) blocks was 10-100x slower in our measurements (threads spin for a core).
    with _single_threaded_lapack():
        basis = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, block)))[0]
    for step in range(1, max_iter + 1):
        image = apply_matrix(basis, first=step == 1)
        with _single_threaded_lapack():
            ritz_values, ritz, ritz_image, relative_residual = rayleigh_ritz(basis, image)
            if relative_residual <= tol:
                break
            basis = np.linalg.qr(ritz_image)[0]  # span(M basis), in Ritz order
    components = ritz[:, :n_components]
    seconds["iterations"] = time.perf_counter() - started
    info = {"iterations": step, "relative_residual": relative_residual, "block_size": block}
    return ritz_values[:n_components].copy(), _fix_signs(components), total_variance[0], info


def _project(X, row_scale, mean, basis):
    """X_p V (products in X's dtype, stored as float64), one row-chunked pass."""
    n, dim = X.shape
    mean_c = mean.astype(X.dtype)
    basis_c = basis.astype(X.dtype)
    projected = np.empty((n, basis.shape[1]))
    for rows in _row_chunks(n, dim * X.itemsize):
        projected[rows] = _prepared_chunk(X, rows, row_scale, mean_c) @ basis_c
    return projected


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------
def rec_pca_projection(
    X,
    norm_adjacency,
    n_components,
    lam=0.5,
    center=True,
    row_normalize=False,
    whiten=False,
    solver="auto",
    tol=1e-5,
    max_iter=100,
) -> RecPCAResult:
    """Rec-PCA projection of LLM item embeddings (method-notes, "Rec-PCA as we formulate it").

    ``X``: (n, D) embeddings of real items (no padding row).  ``norm_adjacency``: the (n, n)
    output of :func:`normalized_adjacency` on the matching co-occurrence sub-graph, or None
    (plain PCA).  ``n_components`` is the backbone's embedding size d (1 <= d <= D).
    ``solver`` (``rec_pca_solver``): exact | iterative | auto, with ``tol`` / ``max_iter``
    (``rec_pca_tol`` / ``rec_pca_max_iter``) for the iterative one (module docstring).
    ``lam`` (config ``rec_pca_lambda``) weights the graph total variation; ``center``,
    ``row_normalize`` (L2 rows before centring) and ``whiten`` (unit-RMS output columns;
    the components and stats are those of the unwhitened projection) prepare X and Z.

    Stats: ``retained_variance`` = tr(W^T X_p^T X_p W) / tr(X_p^T X_p); ``graph_tv`` and
    ``graph_tv_pca``: :func:`graph_total_variation` of X_p W and of the exact plain-PCA
    projection (both None without a graph).  With a graph term, ``graph_tv_pca`` needs a
    second Gram matrix and eigendecomposition; it is None when that would exceed
    ``_PCA_REFERENCE_MAX_WORK`` (e.g. 4096-d inputs), and the lam = 0 run gives it as its
    ``graph_tv``.  ``seconds`` times the phases.  Inputs are validated: ``lam``
    (``rec_pca_lambda``) must be finite and >= 0, ``n_components`` in [1, D], X finite.
    """
    started = time.perf_counter()
    seconds = {}
    X = _as_embedding_matrix(X)
    lam = _check_lambda(lam)
    solver = check_solver_options(solver, tol, max_iter)
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

    seconds["checks_and_mean"] = time.perf_counter() - started

    use_graph = graph is not None and lam != 0.0 and bool(connected.any())
    if solver == "auto":
        small = n_items * dim_in**2 / 2 <= _AUTO_EXACT_MAX_WORK
        solver = "exact" if small or (use_graph and lam > ITERATIVE_MAX_LAMBDA) else "iterative"
    if solver == "iterative" and use_graph and lam > ITERATIVE_MAX_LAMBDA:
        raise ValueError(
            f"rec_pca_solver 'iterative' needs rec_pca_lambda <= {ITERATIVE_MAX_LAMBDA} (above it the "
            f"Rec-PCA matrix can be indefinite and subspace iteration may miss its top eigenvectors); "
            f"got rec_pca_lambda {lam}. Use rec_pca_solver 'exact' (or 'auto')."
        )
    solver_info = {"solver": solver}
    pca_components = None
    if solver == "iterative":
        eigenvalues, components, total_variance, iteration_info = _iterative_top_eigenvectors(
            X,
            graph if use_graph else None,
            connected if use_graph else np.zeros(n_items, dtype=bool),
            lam if use_graph else 0.0,
            row_scale,
            mean,
            n_components,
            tol,
            max_iter,
            seconds,
        )
        solver_info.update(iteration_info)
        if iteration_info["relative_residual"] > tol:
            warnings.warn(
                f"Rec-PCA iterative solver stopped after rec_pca_max_iter={max_iter} steps with relative "
                f"residual {iteration_info['relative_residual']:.2e} > rec_pca_tol={tol:g}; the components "
                f"are approximate (raise rec_pca_max_iter or use rec_pca_solver 'exact')",
                stacklevel=2,
            )
        if not use_graph:
            pca_components = components
    elif use_graph:
        with_reference = n_items * dim_in**2 / 2 + 4 * dim_in**3 <= _PCA_REFERENCE_MAX_WORK
        matrix, gram, total_variance = _rec_pca_matrices(
            X, graph, connected, lam, row_scale, mean, seconds, exact_gram=with_reference
        )
        started = time.perf_counter()
        eigenvalues, components = _top_eigenvectors(matrix, n_components)
        del matrix
        if gram is not None:
            _, pca_components = _top_eigenvectors(gram, n_components)
    else:
        started = time.perf_counter()
        gram = _gram_matrix(X, row_scale, mean)
        total_variance = float(np.trace(gram))
        seconds["gram_matrices"] = time.perf_counter() - started
        started = time.perf_counter()
        eigenvalues, components = _top_eigenvectors(gram, n_components)
        pca_components = components
    if solver == "exact":
        del gram
        seconds["eigh"] = time.perf_counter() - started
    started = time.perf_counter()

    # One pass gives this projection and, when computed, the plain-PCA one (graph_tv_pca).
    with_reference = use_graph and pca_components is not None
    basis = np.hstack([components, pca_components]) if with_reference else components
    projected_both = _project(X, row_scale, mean, basis)
    projected = np.ascontiguousarray(projected_both[:, :n_components])
    kept_variance = float(np.einsum("ij,ij->", projected, projected))

    graph_tv = graph_tv_pca = None
    if graph is not None:
        graph_tv = graph_total_variation(projected, graph, connected)
        if with_reference:
            graph_tv_pca = graph_total_variation(projected_both[:, n_components:], graph, connected)
        else:
            graph_tv_pca = None if use_graph else graph_tv
    del projected_both

    seconds["projection_and_stats"] = time.perf_counter() - started

    if whiten:
        rms = np.sqrt(np.mean(projected**2, axis=0))
        nonzero = rms > 0
        projected[:, nonzero] /= rms[nonzero]

    stats = {
        "retained_variance": kept_variance / total_variance if total_variance > 0 else 1.0,
        "graph_tv_pca": graph_tv_pca,
        "graph_tv": graph_tv,
        "lambda": lam,
        "n_items": n_items,
        "dim_in": dim_in,
        "dim_out": n_components,
        "n_isolated": int(n_items - connected.sum()),
        **solver_info,
        "seconds": seconds,
    }
    return RecPCAResult(
        embeddings=projected.astype(np.float32),
        components=components,
        mean=mean,
        eigenvalues=eigenvalues,
        stats=stats,
    )
