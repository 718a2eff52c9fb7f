"""Train-only item-item co-occurrence graph for Rec-PCA (method-notes, "Co-occurrence graph").

Pure numpy/scipy: arrays in, a scipy CSR matrix out, no RecBole objects.  The wrapper hands
in RecBole's *training* interaction rows (after its prefix -> next-item augmentation), so
validation and test targets never reach the graph.

Conventions shared by every function here:

* item id 0 is padding; row/column 0 of every graph stays empty;
* graphs are symmetric with non-negative weights and no self-loops;
* the graph total variation is the quadratic form of the normalised Laplacian restricted to
  connected items, ``L_c = C - A~`` with ``C = diag(1[degree_i > 0])`` (see
  :func:`graph_total_variation`), which is exactly the penalty Rec-PCA uses.
"""

from __future__ import annotations

import numbers
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

__all__ = [
    "WEIGHTINGS",
    "build_cooccurrence_graph",
    "normalized_adjacency",
    "graph_total_variation",
]

WEIGHTINGS = ("count", "log", "inv_pop")
# graph_total_variation: rows of Z per block (~8 MiB of Z) and at most this many threads
_TV_BLOCK_BYTES, _TV_MAX_THREADS = 8 * 2**20, 8


# --------------------------------------------------------------------------------------
# argument checks (messages name the config keys users actually set)
# --------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_graph_window(window):
    """``graph_window``: None or 0 -> whole (truncated) history, k >= 1 -> last k items."""
    if window is None:
        return None
    if not _is_int(window) or window < 0:
        raise ValueError(
            f"graph_window must be a non-negative integer (1 = adjacent pairs, k = k-window, "
            f"0 or ~ = whole history), got {window!r}"
        )
    return None if window == 0 else int(window)


def check_graph_weighting(weighting):
    if not isinstance(weighting, str) or weighting not in WEIGHTINGS:
        raise ValueError(f"graph_weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    return weighting


def check_graph_topk(topk):
    if topk is None:
        return None
    if not _is_int(topk) or topk < 1:
        raise ValueError(f"graph_topk must be a positive integer or ~ (keep all neighbours), got {topk!r}")
    return int(topk)


def _as_int_array(name, value, ndim):
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer item ids / lengths, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def as_checked_csr(matrix, name="adjacency", n=None, copy=True) -> sp.csr_matrix:
    """Canonical float64 CSR of a symmetric, finite, non-negative square matrix.

    With ``copy=False`` a canonical float64 CSR input is returned as is (read-only use).
    """
    if sp.issparse(matrix):
        reusable = not copy and matrix.format == "csr" and matrix.dtype == np.float64
        csr = matrix if reusable else sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    else:
        arr = np.asarray(matrix)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (sparse) matrix, got shape {arr.shape}")
        csr = sp.csr_matrix(arr.astype(np.float64))
    rows, cols = csr.shape
    if rows != cols:
        raise ValueError(f"{name} must be square, got shape {csr.shape}")
    if n is not None and rows != n:
        raise ValueError(
            f"{name} has {rows} rows but the embedding matrix has {n}; pass the sub-graph whose "
            f"rows match the embedding rows (e.g. graph[1:, 1:] for X[1:])"
        )
    if not csr.has_canonical_format or (csr.nnz and not csr.data.all()):
        csr = csr.copy() if csr is matrix else csr
        csr.sum_duplicates()  # also sorts indices
        csr.eliminate_zeros()
    if not np.all(np.isfinite(csr.data)):
        raise ValueError(f"{name} contains NaN or inf weights")
    if csr.nnz and csr.data.min() < 0:
        raise ValueError(f"{name} must have non-negative weights (co-occurrence counts)")
    transposed = csr.T.tocsr()
    transposed.sum_duplicates()
    scale = float(np.abs(csr.data).max()) if csr.nnz else 0.0
    if not (
        np.array_equal(csr.indptr, transposed.indptr)
        and np.array_equal(csr.indices, transposed.indices)
        and np.allclose(csr.data, transposed.data, rtol=1e-5, atol=1e-7 * scale)
    ):
        raise ValueError(f"{name} must be symmetric (an undirected co-occurrence graph)")
    return csr


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask), for the threaded sparse products."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def connected_mask(adjacency) -> np.ndarray:
    """Items with at least one non-zero weight (degree > 0); isolated items get no graph term."""
    csr = sp.csr_matrix(adjacency)
    row_of = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    return np.bincount(row_of[csr.data != 0], minlength=csr.shape[0]) > 0


# --------------------------------------------------------------------------------------
# graph construction
# --------------------------------------------------------------------------------------
def build_cooccurrence_graph(
    item_seqs, seq_lens, targets, n_items, window=1, weighting="count", topk=None
) -> sp.csr_matrix:
    """Symmetric item-item co-occurrence weights from training rows only.

    Each row ``(history, target)`` adds one count to the unordered pair ``(target, h)`` for
    every one of the last ``window`` history items ``h`` (``window`` = 0 or None: the whole,
    possibly truncated, history).  Because RecBole augments a user sequence into all its
    prefix -> next-item rows, this counts every within-window pair of positions of the
    training sequence exactly once (windows wider than the history length L act as L), and
    held-out targets (validation/test rows) are never seen.  Repeated items
    (``h == target``) and padding (id 0) are dropped.

    Weighting (applied to the counts ``c_ij``):
      * ``count``: ``c_ij``;
      * ``log``: ``log1p(c_ij)``;
      * ``inv_pop``: ``c_ij / sqrt(pop_i pop_j)`` where ``pop_i`` is the number of training
        interactions of item i as seen in the rows: its occurrences as a target plus its
        occurrences as the first item of a sequence (the history of a length-1 row).
        Under RecBole's augmentation that is exactly the item's training frequency; it is
        floored at 1 for rows that were not produced by augmentation.

    ``topk``: per item keep its ``topk`` largest-weight neighbours (ties: smaller item id
    first), then re-symmetrise with the element-wise max, i.e. an edge survives if *either*
    endpoint keeps it; degrees can therefore exceed ``topk``.

    Returns an ``n_items x n_items`` float64 CSR matrix (sorted indices, zero diagonal,
    row/column 0 empty) of raw weights; normalise it with :func:`normalized_adjacency`.
    """
    window = check_graph_window(window)
    weighting = check_graph_weighting(weighting)
    topk = check_graph_topk(topk)
    if not _is_int(n_items) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer (including the padding id 0), got {n_items!r}")
    n_items = int(n_items)

    seqs = _as_int_array("item_seqs", item_seqs, 2)
    lens = _as_int_array("seq_lens", seq_lens, 1)
    tgts = _as_int_array("targets", targets, 1)
    n_rows, max_len = seqs.shape
    if lens.shape[0] != n_rows or tgts.shape[0] != n_rows:
        raise ValueError(
            f"item_seqs, seq_lens and targets must have the same number of rows, got "
            f"{n_rows}, {lens.shape[0]} and {tgts.shape[0]}"
        )
    if n_rows and (lens.min() < 0 or lens.max() > max_len):
        raise ValueError(f"seq_lens must lie in [0, {max_len}] (the history width)")
    for name, arr in (("item_seqs", seqs), ("targets", tgts)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_items):
            raise ValueError(f"{name} holds item ids outside [0, n_items={n_items})")

    # Slots [start, len) of every row, flattened without a Python loop or an (m, L) mask:
    # slot k of the output belongs to row r and reads seqs.ravel()[r * L + start_r + k - first_r].
    start = np.zeros_like(lens) if window is None else np.maximum(lens - window, 0)
    per_row = lens - start
    first_slot = np.cumsum(per_row) - per_row
    offset = np.arange(n_rows, dtype=np.int64) * max_len + start - first_slot
    flat_position = np.arange(int(per_row.sum()), dtype=np.int64) + np.repeat(offset, per_row)
    history = seqs.ravel()[flat_position]
    target = np.repeat(tgts, per_row)
    del flat_position, offset

    keep = (history != 0) & (target != 0) & (history != target)
    history, target = history[keep], target[keep]
    low, high = np.minimum(history, target), np.maximum(history, target)
    del history, target, keep
    # Upper triangle of the counts; coo -> csr sums the duplicate pairs.
    upper = sp.csr_matrix((np.ones(low.shape[0]), (low, high)), shape=(n_items, n_items))
    del low, high
    upper.sum_duplicates()

    if weighting == "log":
        np.log1p(upper.data, out=upper.data)
    elif weighting == "inv_pop":
        popularity = np.bincount(tgts, minlength=n_items).astype(np.float64)
        if n_rows and max_len:
            popularity += np.bincount(seqs[lens == 1, 0], minlength=n_items)
        inv_sqrt_popularity = 1.0 / np.sqrt(np.maximum(popularity, 1.0))
        rows = np.repeat(np.arange(n_items), np.diff(upper.indptr))
        upper.data *= inv_sqrt_popularity[rows] * inv_sqrt_popularity[upper.indices]

    graph = (upper + upper.T.tocsr()).tocsr()
    graph.sum_duplicates()
    if topk is not None:
        graph = _keep_topk_neighbours(graph, topk)
    return graph


def _keep_topk_neighbours(graph: sp.csr_matrix, topk: int) -> sp.csr_matrix:
    """Per row keep the ``topk`` largest weights (ties -> smaller column), then max-symmetrise."""
    n = graph.shape[0]
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(graph.indptr))
    order = np.lexsort((graph.indices, -graph.data, row_of))  # last key is the primary one
    rank_in_row = np.arange(graph.nnz) - graph.indptr[row_of[order]]
    kept = order[rank_in_row < topk]
    pruned = sp.csr_matrix((graph.data[kept], (row_of[kept], graph.indices[kept])), shape=graph.shape)
    symmetric = pruned.maximum(pruned.T).tocsr()
    symmetric.sum_duplicates()
    return symmetric


# --------------------------------------------------------------------------------------
# normalisation and total variation
# --------------------------------------------------------------------------------------
def normalized_adjacency(adjacency) -> sp.csr_matrix:
    """``A~ = D^-1/2 A D^-1/2`` (method-notes: L = I - A~), as float64 CSR.

    Isolated items (degree 0) keep all-zero rows and columns; no division by zero happens.
    """
    csr = as_checked_csr(adjacency, "adjacency")
    degree = np.asarray(csr.sum(axis=1)).ravel()
    inv_sqrt_degree = np.zeros_like(degree)
    positive = degree > 0
    inv_sqrt_degree[positive] = 1.0 / np.sqrt(degree[positive])
    row_of = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    csr.data *= inv_sqrt_degree[row_of] * inv_sqrt_degree[csr.indices]
    return csr


def graph_total_variation(Z, norm_adjacency, connected=None) -> float:
    """Quadratic graph total variation ``tr(Z^T L_c Z)``, the Rec-PCA penalty.

    ``L_c = C - A~`` where ``C`` is the identity restricted to connected items (rows of
    ``A~`` with a non-zero entry; pass ``connected`` when it is already known).  For
    connected items ``L_c`` is the normalised Laplacian ``I - A~`` and
    ``tr(Z^T L_c Z) = 1/2 sum_ij A_ij ||z_i/sqrt(d_i) - z_j/sqrt(d_j)||^2``; isolated items
    contribute nothing (method-notes: "isolated items simply contribute no graph term").
    Computed as ``sum_{i connected} ||z_i||^2 - sum(Z * (A~ Z))`` in float64 over row blocks
    of ``A~`` (``A~[rows] @ Z``), so no second array of Z's size and never an ``n x n``
    dense matrix exists; blocks run in threads (scipy releases the GIL) and are summed in a
    fixed order, so the result does not depend on the thread count.
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim == 1:
        Z = Z[:, None]
    if Z.ndim != 2:
        raise ValueError(f"Z must be a 2-D array (items x dims), got shape {Z.shape}")
    adjacency = sp.csr_matrix(norm_adjacency)
    if adjacency.shape != (Z.shape[0], Z.shape[0]):
        raise ValueError(f"norm_adjacency has shape {adjacency.shape}, expected {(Z.shape[0], Z.shape[0])}")
    if connected is None:
        connected = connected_mask(adjacency)
    Z = np.ascontiguousarray(Z)

    def block_terms(rows):
        block = Z[rows]
        on_graph = block[connected[rows]]
        return float(np.einsum("ij,ij->", on_graph, on_graph)), float(np.einsum("ij,ij->", block, adjacency[rows] @ Z))

    step = max(1, _TV_BLOCK_BYTES // max(Z.shape[1] * Z.itemsize, 1))
    blocks = [slice(start, min(start + step, Z.shape[0])) for start in range(0, Z.shape[0], step)]
    workers = min(available_cores(), _TV_MAX_THREADS, len(blocks))
    if workers <= 1:
        terms = [block_terms(rows) for rows in blocks]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            terms = list(pool.map(block_terms, blocks))
    return sum(t[0] for t in terms) - sum(t[1] for t in terms)
