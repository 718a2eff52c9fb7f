"""Rec-PCA (tfllmer/rec_pca.py): both formulations against brute force on small dense matrices."""

import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import PCA

from recbole_tfllmer.tfllmer.cooccurrence import graph_total_variation, normalized_adjacency
from recbole_tfllmer.tfllmer.rec_pca import RecPCAResult, rec_pca_projection

N_ITEMS, DIM, ISOLATED = 300, 24, (0, 7, 150)


def planted_problem(seed=0, n=N_ITEMS, dim=DIM):
    """Semantic clusters (strong, dims 0-2) that disagree with collaborative clusters
    (weaker, dims 3-5); the graph links items of the same collaborative cluster."""
    rng = np.random.default_rng(seed)
    semantic, collaborative = rng.integers(0, 3, n), rng.integers(0, 3, n)
    X = 0.3 * rng.standard_normal((n, dim))
    X[np.arange(n), semantic] += 5.0
    X[np.arange(n), 3 + collaborative] += 1.5
    X += 2.0  # a common offset, as LLM vectors have
    same_cluster = collaborative[:, None] == collaborative[None, :]
    upper = np.triu((rng.random((n, n)) < np.where(same_cluster, 0.1, 0.005)) * rng.integers(1, 5, (n, n)), k=1)
    adjacency = (upper + upper.T).astype(float)
    adjacency[list(ISOLATED), :] = 0
    adjacency[:, list(ISOLATED)] = 0
    return X, normalized_adjacency(sp.csr_matrix(adjacency))


def prepared(X, row_normalize=False):
    if row_normalize:
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return X - X.mean(axis=0)


def top(matrix, k):
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return values[::-1][:k], vectors[:, ::-1][:, :k]


def dense_projection(X, graph, d, alpha, row_normalize=False):
    """Brute force of the projection formulation: W = top-d of (1-a) C/s_C + a G/s_G."""
    Xp = prepared(X, row_normalize)
    C, G = Xp.T @ Xp, Xp.T @ graph.toarray() @ Xp
    M = (1 - alpha) * C / top(C, d)[0].sum() + alpha * G / top(G, d)[0].sum()
    values, W = top(M, d)
    return values, W, M


def dense_item_space(X, graph, d, alpha, row_normalize=False):
    """Brute force of the item-space formulation on the dense n x n operator."""
    Xp = prepared(X, row_normalize)
    K, A = Xp @ Xp.T, graph.toarray()
    s_k = top(K, d)[0].sum()
    T = (1 - alpha) * K / s_k + alpha * A / top(A, d)[0].sum()
    values, U = top(T, d)
    return values, U, U * np.sqrt(s_k * values)


def projector(W):
    return W @ W.T


def same_columns_up_to_sign(a, b, atol):
    signs = np.sign(np.sum(a * b, axis=0))
    np.testing.assert_allclose(a, b * signs, atol=atol)


@pytest.fixture(scope="module")
def problem():
    return planted_problem()


FORMS = ("item_space", "projection")


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_projection_components_are_orthonormal_and_embeddings_are_the_projection(problem, alpha, row_normalize):
    X, graph = problem
    result = rec_pca_projection(X, graph, 5, alpha=alpha, formulation="projection", row_normalize=row_normalize)
    assert isinstance(result, RecPCAResult)
    W = result.components
    assert W.shape == (DIM, 5) and W.dtype == np.float64
    np.testing.assert_allclose(W.T @ W, np.eye(5), atol=1e-12)
    Xn = prepared(X, row_normalize) + (X / np.linalg.norm(X, axis=1, keepdims=True) if row_normalize else X).mean(0)
    np.testing.assert_allclose(result.mean, Xn.mean(axis=0), atol=1e-12)
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (N_ITEMS, 5)
    np.testing.assert_allclose(result.embeddings, prepared(X, row_normalize) @ W, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(result.eigenvalues) <= 0)


@pytest.mark.parametrize("formulation", FORMS)
def test_alpha_zero_is_exactly_pca(problem, formulation):
    X, graph = problem
    d = 6
    result = rec_pca_projection(X, graph, d, alpha=0.0, formulation=formulation)
    sk = PCA(n_components=d, svd_solver="full").fit(X)
    _, singular, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    for reference in (sk.components_.T, vt[:d].T):
        np.testing.assert_allclose(projector(result.components), projector(reference), atol=1e-10)
    np.testing.assert_allclose(result.eigenvalues, singular[:d] ** 2, rtol=1e-10)
    same_columns_up_to_sign(result.embeddings.astype(float), sk.transform(X), atol=1e-5)
    assert result.stats["retained_variance"] == pytest.approx(sk.explained_variance_ratio_.sum(), rel=1e-10)
    assert result.stats["max_sine_to_pca"] == 0.0 and result.stats["tv_ratio"] == result.stats["tv_ratio_pca"]
    # no graph takes the same path: bit-identical results
    no_graph = rec_pca_projection(X, None, d, alpha=0.7, formulation=formulation)
    assert np.array_equal(no_graph.components, result.components)
    assert np.array_equal(no_graph.embeddings, result.embeddings)
    assert no_graph.stats["graph_tv"] is None and result.stats["graph_tv"] == result.stats["graph_tv_pca"]


@pytest.mark.parametrize("alpha", [0.3, 1.0])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_projection_matches_the_dense_eigenproblem(problem, alpha, row_normalize):
    X, graph = problem
    d = 4
    values, W, M = dense_projection(X, graph, d, alpha, row_normalize)
    result = rec_pca_projection(X, graph, d, alpha=alpha, formulation="projection", row_normalize=row_normalize)
    np.testing.assert_allclose(result.eigenvalues, values, rtol=1e-9)
    np.testing.assert_allclose(projector(result.components), projector(W), atol=1e-8)
    best = np.trace(result.components.T @ M @ result.components)
    rng = np.random.default_rng(0)
    for _ in range(5):  # it maximises tr(W^T M W) over orthonormal bases
        q, _ = np.linalg.qr(rng.standard_normal((DIM, d)))
        assert best >= np.trace(q.T @ M @ q)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_item_space_matches_the_dense_operator(problem, alpha, row_normalize):
    X, graph = problem
    d = 4
    values, U, Z = dense_item_space(X, graph, d, alpha, row_normalize)
    result = rec_pca_projection(X, graph, d, alpha=alpha, formulation="item_space", row_normalize=row_normalize)
    assert result.components is None
    np.testing.assert_allclose(result.eigenvalues, values, rtol=1e-8)
    same_columns_up_to_sign(result.embeddings.astype(float), Z, atol=1e-5)
    Xp = prepared(X, row_normalize)
    kept = np.sum((Xp.T @ U) ** 2) / np.sum(Xp**2)
    assert result.stats["retained_variance"] == pytest.approx(kept, rel=1e-8)


@pytest.mark.parametrize("formulation", FORMS)
def test_variance_and_graph_tv_fall_monotonically_over_the_whole_range(problem, formulation):
    X, graph = problem
    alphas = np.linspace(0.0, 1.0, 11)
    results = [rec_pca_projection(X, graph, 3, alpha=a, formulation=formulation) for a in alphas]
    kept = np.array([r.stats["retained_variance"] for r in results])
    ratio = np.array([r.stats["tv_ratio"] for r in results])
    assert np.all(np.diff(kept) <= 1e-10), kept
    assert np.all(np.diff(ratio) <= 1e-10), ratio
    if formulation == "projection":
        tv = np.array([r.stats["graph_tv"] for r in results])
        assert np.all(np.diff(tv) <= 1e-9 * tv[0]), tv
    # the trade-off is real, not flat, and no value reaches the least-variance directions
    # (projection reaches much less: few directions linear in X are smooth on the graph)
    assert ratio[-1] < (0.95 if formulation == "projection" else 0.8) * ratio[0] and kept[-1] < kept[0] - 0.05
    C = np.linalg.eigvalsh(prepared(X).T @ prepared(X))
    least = C[:3].sum() / C.sum()
    assert kept.min() > 5 * least, (kept.min(), least)


def test_projection_moves_from_semantic_to_collaborative_dimensions(problem):
    X, graph = problem

    def mass(result, dims):
        return float(np.sum(result.components[dims] ** 2))

    pca = rec_pca_projection(X, graph, 3, alpha=0.0, formulation="projection")
    smooth = rec_pca_projection(X, graph, 3, alpha=1.0, formulation="projection")
    # (3 centred cluster means span 2 dims, so PCA's third component is collaborative)
    assert mass(pca, [0, 1, 2]) > 1.9 and mass(pca, [3, 4, 5]) < 1.1
    assert mass(smooth, [3, 4, 5]) > 1.9


@pytest.mark.parametrize("alpha", [-0.1, 1.0001, 2.0, 5.0, float("nan"), float("inf"), "0.5", None, True])
def test_alpha_outside_zero_one_is_refused_with_the_option_name(problem, alpha):
    X, graph = problem
    with pytest.raises(ValueError, match=r"rec_pca_alpha must be a number in \[0, 1\]"):
        rec_pca_projection(X, graph, 3, alpha=alpha)


def test_unknown_formulation_is_refused(problem):
    X, graph = problem
    with pytest.raises(ValueError, match="rec_pca_formulation must be one of item_space, projection"):
        rec_pca_projection(X, graph, 3, formulation="laplacian")


def test_isolated_items_keep_a_linear_function_of_their_own_vector(problem):
    X, graph = problem
    alpha, d = 0.6, 3
    result = rec_pca_projection(X, graph, d, alpha=alpha)
    assert result.stats["n_isolated"] == len(ISOLATED)
    _, U, _ = dense_item_space(X, graph, d, alpha)
    Xp = prepared(X)
    s_k = np.linalg.eigvalsh(Xp.T @ Xp)[::-1][:d].sum()
    theta = result.eigenvalues
    # their row of the eigen-equation has no graph term: u_i = (1 - a) x_i^T (X_p^T U) / (s_K theta)
    rows = list(ISOLATED)
    expected = (1 - alpha) * Xp[rows] @ (Xp.T @ U) / (s_k * theta)
    same_columns_up_to_sign(U[rows], expected, atol=1e-10)
    # a graph without edges leaves only isolated items: plain PCA and zero total variation
    empty = sp.csr_matrix((N_ITEMS, N_ITEMS))
    for formulation in FORMS:
        result_empty = rec_pca_projection(X, empty, 3, alpha=0.8, formulation=formulation)
        assert np.array_equal(result_empty.components, rec_pca_projection(X, None, 3).components)
        assert result_empty.stats["graph_tv"] == 0.0 and result_empty.stats["n_isolated"] == N_ITEMS


@pytest.mark.parametrize("formulation", FORMS)
def test_output_size_equal_to_input_size_works(problem, formulation):
    X, graph = problem
    result = rec_pca_projection(X, graph, DIM, alpha=0.5, formulation=formulation)
    assert result.embeddings.shape == (N_ITEMS, DIM) and np.all(np.isfinite(result.embeddings))
    if formulation == "projection":
        assert result.stats["retained_variance"] == pytest.approx(1.0, rel=1e-10)


def test_output_size_above_input_size_names_the_option(problem):
    X, graph = problem
    with pytest.raises(ValueError, match=r"embedding_size / hidden_size \(25\).*dimension \(24\)") as info:
        rec_pca_projection(X, graph, DIM + 1)
    assert "encoder" in str(info.value)
    for bad in (0, -2, 2.5, "8"):
        with pytest.raises(ValueError, match="embedding_size"):
            rec_pca_projection(X, graph, bad)


def test_tiny_catalogue_warns_that_trailing_components_carry_no_variance():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 12))
    with pytest.warns(UserWarning, match="no variance"):
        result = rec_pca_projection(X, None, 8)
    np.testing.assert_allclose(result.components.T @ result.components, np.eye(8), atol=1e-10)
    assert np.all(np.isfinite(result.embeddings))
    np.testing.assert_allclose(result.eigenvalues[4:], 0.0, atol=1e-10)  # centred: rank 4
    assert result.stats["retained_variance"] == pytest.approx(1.0)


@pytest.mark.parametrize("formulation", FORMS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_calls_are_bit_identical(problem, dtype, formulation):
    X, graph = problem
    first = rec_pca_projection(X.astype(dtype), graph, 4, alpha=0.7, formulation=formulation)
    second = rec_pca_projection(X.astype(dtype), graph, 4, alpha=0.7, formulation=formulation)
    for name in ("embeddings", "mean", "eigenvalues"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    # sign convention: each column of W (projection) or Z (item_space) has a positive largest entry
    V = first.components if formulation == "projection" else first.embeddings
    assert np.all(V[np.argmax(np.abs(V), axis=0), np.arange(4)] > 0)


@pytest.mark.parametrize("formulation", FORMS)
def test_float32_input_agrees_with_float64(problem, formulation):
    X, graph = problem
    r32 = rec_pca_projection(X.astype(np.float32), graph, 4, alpha=0.7, formulation=formulation)
    r64 = rec_pca_projection(X, graph, 4, alpha=0.7, formulation=formulation)
    assert r32.embeddings.dtype == np.float32
    np.testing.assert_allclose(r32.embeddings, r64.embeddings, atol=1e-4 * np.abs(r64.embeddings).max())
    np.testing.assert_allclose(r32.eigenvalues, r64.eigenvalues, rtol=1e-5)


@pytest.mark.parametrize("formulation", FORMS)
def test_whitening_scales_columns_only(problem, formulation):
    X, graph = problem
    plain = rec_pca_projection(X, graph, 4, alpha=0.5, formulation=formulation)
    white = rec_pca_projection(X, graph, 4, alpha=0.5, formulation=formulation, whiten=True)
    np.testing.assert_allclose(np.sqrt(np.mean(white.embeddings.astype(float) ** 2, axis=0)), 1.0, rtol=1e-5)
    assert white.stats["graph_tv"] == plain.stats["graph_tv"]
    scale = np.sqrt(np.mean(plain.embeddings.astype(float) ** 2, axis=0))
    np.testing.assert_allclose(white.embeddings, plain.embeddings / scale, rtol=1e-5, atol=1e-6)


def test_without_centring_matches_uncentred_svd(problem):
    X, _ = problem
    result = rec_pca_projection(X, None, 3, center=False)
    assert not result.mean.any()
    _, singular, vt = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(projector(result.components), projector(vt[:3].T), atol=1e-10)
    np.testing.assert_allclose(result.eigenvalues, singular[:3] ** 2, rtol=1e-10)


@pytest.mark.parametrize("formulation", FORMS)
def test_row_normalisation_equals_normalising_first_and_keeps_zero_rows(problem, formulation):
    X, graph = problem
    X = X.copy()
    X[3] = 0.0
    result = rec_pca_projection(X, graph, 4, alpha=0.5, formulation=formulation, row_normalize=True)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    normalised = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    reference = rec_pca_projection(normalised, graph, 4, alpha=0.5, formulation=formulation)
    np.testing.assert_allclose(result.embeddings, reference.embeddings, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_non_finite_embeddings_are_rejected(problem, bad, dtype):
    X, graph = problem
    X = X.astype(dtype)
    X[11, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        rec_pca_projection(X, graph, 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        rec_pca_projection(X, graph, 3, row_normalize=True, center=False)


def test_bad_inputs_are_rejected(problem):
    X, graph = problem
    with pytest.raises(ValueError, match="rows"):
        rec_pca_projection(X[1:], graph, 3)  # graph does not match the rows of X
    raw_counts = sp.csr_matrix(np.array([[0, 3.0], [3.0, 0]]))
    with pytest.raises(ValueError, match="normalized_adjacency"):
        rec_pca_projection(X[:2], raw_counts, 1)
    asymmetric = sp.csr_matrix(np.array([[0, 0.5], [0.1, 0]]))
    with pytest.raises(ValueError, match="symmetric"):
        rec_pca_projection(X[:2], asymmetric, 1)
    with pytest.raises(ValueError, match="2-D"):
        rec_pca_projection(X[0], None, 1)
    with pytest.raises(ValueError, match="numeric"):
        rec_pca_projection(np.array([["a", "b"]]), None, 1)


@pytest.mark.parametrize("formulation", FORMS)
def test_stats_report_the_geometry(problem, formulation):
    X, graph = problem
    d, alpha = 4, 0.5
    result = rec_pca_projection(X, graph, d, alpha=alpha, formulation=formulation)
    stats = result.stats
    assert (stats["n_items"], stats["dim_in"], stats["dim_out"], stats["alpha"]) == (N_ITEMS, DIM, d, alpha)
    assert stats["formulation"] == formulation and stats["seconds"]["total"] > 0
    Z = result.embeddings.astype(float)
    connected = np.ones(N_ITEMS, bool)
    connected[list(ISOLATED)] = False
    tv = graph_total_variation(Z, graph)
    assert stats["graph_tv"] == pytest.approx(tv, rel=1e-5)
    assert stats["tv_ratio"] == pytest.approx(tv / np.sum(Z[connected] ** 2), rel=1e-5)
    pca = rec_pca_projection(X, None, d)
    assert stats["retained_variance_pca"] == pytest.approx(pca.stats["retained_variance"], rel=1e-10)
    assert stats["tv_ratio_pca"] == pytest.approx(
        graph_total_variation(pca.embeddings.astype(float), graph)
        / np.sum(pca.embeddings[connected].astype(float) ** 2),
        rel=1e-5,
    )
    # principal angles to PCA's subspace (feature space for projection, item space otherwise)
    if formulation == "projection":
        a, b = result.components, pca.components
    else:
        a, b = np.linalg.qr(Z)[0], np.linalg.qr(pca.embeddings.astype(float))[0]
    sines = np.sqrt(np.clip(1 - np.linalg.svd(a.T @ b, compute_uv=False) ** 2, 0, 1))
    assert stats["max_sine_to_pca"] == pytest.approx(sines.max(), abs=1e-5)
    assert stats["mean_sine_to_pca"] == pytest.approx(sines.mean(), abs=1e-5)
    assert 0 < stats["mean_sine_to_pca"] <= stats["max_sine_to_pca"] <= 1
    assert stats["tv_ratio"] < stats["tv_ratio_pca"] and stats["retained_variance"] < stats["retained_variance_pca"]


@pytest.mark.parametrize("formulation", [None, *FORMS])
def test_peak_memory_stays_below_three_times_the_embeddings(formulation):
    """tracemalloc sees every numpy/scipy buffer; X is allocated before tracing starts."""
    rng = np.random.default_rng(0)
    n, dim = 10_000, 512
    X = rng.standard_normal((n, dim), dtype=np.float32)
    graph = None
    if formulation is not None:
        rows = rng.integers(0, n, 100_000)
        cols = rng.integers(0, n, 100_000)
        counts = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
        counts = counts + counts.T
        counts.setdiag(0)
        counts.eliminate_zeros()
        graph = normalized_adjacency(counts)
    graph_bytes = 0 if graph is None else graph.data.nbytes + graph.indices.nbytes + graph.indptr.nbytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracemalloc.start()
        try:
            rec_pca_projection(X, graph, 16, alpha=0.5, formulation=formulation or "item_space")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    extra = (peak - graph_bytes) / X.nbytes  # the graph's own float32 copy is counted
    # projection: the smoothed copy A~ X (1x) plus chunk temporaries; otherwise chunks and thin blocks
    assert extra < (1.6 if formulation == "projection" else 0.6), f"peak temporaries {extra:.2f}x X"


def test_large_inputs_use_the_rank_2d_semantic_kernel(problem, monkeypatch):
    """Above _ITEM_SPACE_FULL_KERNEL_MAX the kernel is P P^T over the top 2d PCA directions:
    exact when 2d >= D, and close to the full kernel otherwise."""
    from recbole_tfllmer.tfllmer import rec_pca as module

    X, graph = problem
    full_small = rec_pca_projection(X, graph, 12, alpha=0.4)
    full = rec_pca_projection(X, graph, 4, alpha=0.4)
    monkeypatch.setattr(module, "_ITEM_SPACE_FULL_KERNEL_MAX", 0)
    reduced_small = rec_pca_projection(X, graph, 12, alpha=0.4)  # 2d = 24 = D: the same kernel
    assert full_small.stats["kernel_rank"] == DIM and reduced_small.stats["kernel_rank"] == DIM
    np.testing.assert_allclose(reduced_small.embeddings, full_small.embeddings, atol=1e-5)
    reduced = rec_pca_projection(X, graph, 4, alpha=0.4)
    assert reduced.stats["kernel_rank"] == 8
    for key in ("retained_variance", "tv_ratio"):
        assert reduced.stats[key] == pytest.approx(full.stats[key], abs=0.02)


def test_inputs_are_left_untouched(problem):
    X, graph = problem
    X_before, graph_before = X.copy(), graph.copy()
    for formulation in FORMS:
        rec_pca_projection(X, graph, 3, alpha=0.5, formulation=formulation, row_normalize=True)
    assert np.array_equal(X, X_before)
    assert (graph != graph_before).nnz == 0 and np.array_equal(graph.indices, graph_before.indices)


# --------------------------------------------------------------------------------------
# the iterative solver (rec_pca_solver: iterative / auto on large catalogues)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("formulation", FORMS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_iterative_solver_reaches_the_exact_result(problem, formulation, alpha, row_normalize):
    X, graph = problem
    kwargs = dict(alpha=alpha, formulation=formulation, row_normalize=row_normalize)
    exact = rec_pca_projection(X, graph, 5, solver="exact", **kwargs)
    iterative = rec_pca_projection(X, graph, 5, solver="iterative", tol=1e-9, **kwargs)
    # item_space's graph scale s_A is computed to 1e-2 relative eigenvalue accuracy in iterative
    # mode (it is only a scale), so its eigenvalues agree to ~1e-6 rather than to rec_pca_tol
    rtol = 1e-7 if formulation == "projection" or alpha == 0 else 1e-5
    np.testing.assert_allclose(iterative.eigenvalues, exact.eigenvalues, rtol=rtol)
    same_columns_up_to_sign(iterative.embeddings.astype(float), exact.embeddings.astype(float), atol=1e-4)
    stats = iterative.stats
    assert stats["solver"] == "iterative" and stats["relative_residual"] <= 1e-9
    assert 1 <= stats["iterations"] < 100 and stats["block_size"] == 21  # max(2d, d + 16), at most D
    assert exact.stats["solver"] == "exact"
    for key in ("retained_variance", "tv_ratio"):
        assert stats[key] == pytest.approx(exact.stats[key], rel=1e-6)


def test_iterative_solver_is_deterministic_and_float32_agrees(problem):
    X, graph = problem
    first = rec_pca_projection(X, graph, 5, alpha=0.5, formulation="projection", solver="iterative")
    second = rec_pca_projection(X, graph, 5, alpha=0.5, formulation="projection", solver="iterative")
    assert np.array_equal(first.embeddings, second.embeddings)
    single = rec_pca_projection(X.astype(np.float32), graph, 5, alpha=0.5, formulation="projection", solver="iterative")
    np.testing.assert_allclose(projector(single.components), projector(first.components), atol=1e-4)


def test_iterative_solver_warns_when_it_runs_out_of_steps(problem):
    X, graph = problem
    with pytest.warns(UserWarning, match=r"stopped after rec_pca_max_iter=1 steps .* > rec_pca_tol=1e-12"):
        result = rec_pca_projection(X, graph, 5, alpha=0.0, solver="iterative", tol=1e-12, max_iter=1)
    assert result.stats["iterations"] == 1 and result.stats["relative_residual"] > 1e-12


def test_auto_solver_is_exact_unless_the_eigh_outweighs_the_passes(problem):
    """auto follows the flop estimate: exact on every catalogue shape the benchmark measured it
    faster on (and on our datasets), iterative for few items with very wide vectors."""
    from recbole_tfllmer.tfllmer.rec_pca import _auto_solver

    for shape in ((100_000, 4096), (200_000, 4096), (1_000_000, 1024), (12_101, 384), (1_682, 384)):
        assert _auto_solver(*shape, 64) == "exact", shape
    assert _auto_solver(2_000, 4096, 64) == "iterative"
    assert _auto_solver(300, 384, 32) == "exact"  # tiny: exact whatever the ratio (0.1 s of work at most)
    X, graph = problem
    assert rec_pca_projection(X, graph, 5, alpha=0.5).stats["solver"] == "exact"
    wide_X, wide_graph = planted_problem(n=160, dim=2000)  # 160 items x 2,000 dims: the eigh dominates
    wide = rec_pca_projection(wide_X, wide_graph, 5, alpha=0.5, formulation="projection")
    assert wide.stats["solver"] == "iterative"
    exact = rec_pca_projection(wide_X, wide_graph, 5, alpha=0.5, formulation="projection", solver="exact")
    np.testing.assert_allclose(projector(wide.components), projector(exact.components), atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"solver": "fast"}, "rec_pca_solver must be one of auto, exact, iterative"),
        ({"solver": "iterative", "tol": 0.0}, r"rec_pca_tol must be a number in \(0, 1\)"),
        ({"solver": "iterative", "tol": 1.5}, r"rec_pca_tol must be a number in \(0, 1\)"),
        ({"solver": "iterative", "max_iter": 0}, "rec_pca_max_iter must be an integer >= 1"),
        ({"solver": "iterative", "max_iter": 2.5}, "rec_pca_max_iter must be an integer >= 1"),
    ],
)
def test_invalid_solver_options_name_the_option(problem, kwargs, message):
    X, graph = problem
    with pytest.raises(ValueError, match=message):
        rec_pca_projection(X, graph, 5, alpha=0.5, **kwargs)


def test_progress_gets_one_line_per_phase(problem):
    X, graph = problem
    lines = []
    rec_pca_projection(X, graph, 4, alpha=0.5, progress=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith(f"Rec-PCA: PCA part of {N_ITEMS} x {DIM} done (exact solver) after ")
    assert lines[0].endswith("trade-off next") and lines[1].startswith("Rec-PCA: item_space trade-off done after ")
    lines.clear()
    rec_pca_projection(X, graph, 4, alpha=0.0, progress=lines.append)  # plain PCA: one phase
    assert len(lines) == 1 and "trade-off" not in lines[0]


# --------------------------------------------------------------------------------------
# the torch passes (rec_pca_device: a GPU when the run has one; torch on the CPU here)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["exact", "iterative"])
@pytest.mark.parametrize("formulation", FORMS)
@pytest.mark.parametrize("alpha,row_normalize", [(0.0, False), (0.5, False), (0.5, True)])
def test_torch_passes_give_the_numpy_result(problem, solver, formulation, alpha, row_normalize):
    """The same arithmetic through torch: equal to the numpy path up to float32 rounding."""
    X, graph = problem
    X = X.astype(np.float32)
    kwargs = dict(alpha=alpha, formulation=formulation, row_normalize=row_normalize, solver=solver)
    on_numpy = rec_pca_projection(X, graph, 5, **kwargs)
    on_torch = rec_pca_projection(X, graph, 5, device="cpu", **kwargs)
    assert on_numpy.stats["device"] == "numpy" and on_torch.stats["device"] == "cpu"
    np.testing.assert_allclose(on_torch.eigenvalues, on_numpy.eigenvalues, rtol=1e-5)
    scale = np.abs(on_numpy.embeddings).max()
    same_columns_up_to_sign(on_torch.embeddings / scale, on_numpy.embeddings / scale, atol=1e-5)
    for key in ("retained_variance", "tv_ratio"):
        assert on_torch.stats[key] == pytest.approx(on_numpy.stats[key], rel=1e-5)


def test_torch_passes_read_a_read_only_memory_map_in_place(problem, tmp_path):
    X, graph = problem
    path = tmp_path / "vectors.npy"
    np.save(path, X.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning would be one
        result = rec_pca_projection(mapped, graph, 5, alpha=0.5, row_normalize=True, device="cpu")
    expected = rec_pca_projection(X.astype(np.float32), graph, 5, alpha=0.5, row_normalize=True, device="cpu")
    np.testing.assert_array_equal(result.embeddings, expected.embeddings)
    np.testing.assert_array_equal(np.load(path), X.astype(np.float32))  # the file is untouched


@pytest.mark.parametrize(
    "device,message",
    [
        ("tpu", r"device must be a torch device such as cuda:0 or cpu, got 'tpu'"),
        ("cuda:99", r"device 'cuda:99': this machine has"),
    ],
)
def test_an_unusable_device_is_refused_before_any_work(problem, device, message):
    X, graph = problem
    with pytest.raises(ValueError, match=message):
        rec_pca_projection(X, graph, 5, alpha=0.5, device=device)


# --------------------------------------------------------------------------------------
# the item-space trade-off on a torch device: Chebyshev-filtered block subspace iteration
# --------------------------------------------------------------------------------------
def _clustered_operator(n=400, k=6, seed=0):
    """A dense symmetric indefinite matrix whose top eigenvalues come in near-ties (as the graph's
    do), with its exact top-k eigenpairs."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0]
    values = np.concatenate([[1.0, 0.999, 0.998, 0.9, 0.8999, 0.7], rng.uniform(-0.6, 0.65, n - k)])
    matrix = (basis * values) @ basis.T
    order = np.argsort(values)[::-1][:k]
    return (matrix + matrix.T) / 2, values[order], basis[:, order]


def test_chebyshev_solver_finds_the_top_eigenpairs_of_a_clustered_indefinite_spectrum():
    import torch

    from recbole_tfllmer.tfllmer.chebyshev import chebyshev_top_eigenpairs

    matrix, values, vectors = _clustered_operator()
    operator = torch.as_tensor(matrix)
    found, basis, info = chebyshev_top_eigenpairs(lambda V: operator @ V, 400, 6, lower=-0.61, device="cpu")
    np.testing.assert_allclose(found, values, atol=1e-12)
    cosines = np.linalg.svd(basis.T @ vectors, compute_uv=False)
    assert np.sqrt(max(0.0, 1 - cosines.min() ** 2)) < 1e-7  # the same subspace
    assert info["relative_residual"] <= 1e-10 and info["operator_columns"] > 0
    again = chebyshev_top_eigenpairs(lambda V: operator @ V, 400, 6, lower=-0.61, device="cpu")
    np.testing.assert_array_equal(again[1], basis)  # a fixed start block: deterministic
    stopped = chebyshev_top_eigenpairs(lambda V: operator @ V, 400, 6, lower=-0.61, device="cpu", max_iter=1)
    assert stopped[2]["iterations"] == 1 and stopped[2]["relative_residual"] > 1e-10


@pytest.mark.parametrize("full_kernel", [True, False])
def test_item_space_on_a_torch_device_solves_the_same_eigenproblem_as_arpack(problem, monkeypatch, full_kernel):
    """rec_pca_device runs the item-space trade-off with the block solver: the eigenvalues, the
    subspace and the geometry report equal ARPACK's on the CPU, with the full and the rank-2d kernel."""
    from recbole_tfllmer.tfllmer import rec_pca as module

    X, graph = problem
    if not full_kernel:
        monkeypatch.setattr(module, "_ITEM_SPACE_FULL_KERNEL_MAX", 0)
    on_cpu = rec_pca_projection(X, graph, 4, alpha=0.6)
    on_device = rec_pca_projection(X, graph, 4, alpha=0.6, device="cpu")
    assert on_cpu.stats["tradeoff_eigensolver"] == "arpack"
    # ARPACK's cost split: each of its two solves applies at least d + 1 columns
    assert on_cpu.stats["tradeoff_operator_columns"] >= 2 * (4 + 1)
    assert 0 < on_cpu.stats["tradeoff_product_seconds"] <= on_cpu.stats["seconds"]["tradeoff"]
    assert on_device.stats["tradeoff_eigensolver"] == "chebyshev" and on_device.stats["tradeoff_operator_columns"] > 0
    assert on_device.stats["kernel_rank"] == on_cpu.stats["kernel_rank"] == (DIM if full_kernel else 8)
    np.testing.assert_allclose(on_device.eigenvalues, on_cpu.eigenvalues, rtol=1e-9)
    same_columns_up_to_sign(on_device.embeddings, on_cpu.embeddings, atol=1e-5 * np.abs(on_cpu.embeddings).max())
    for key in ("graph_scale", "retained_variance", "tv_ratio", "max_sine_to_pca"):
        assert on_device.stats[key] == pytest.approx(on_cpu.stats[key], rel=1e-6, abs=1e-9)


def test_item_space_on_a_device_warns_when_the_block_solver_runs_out_of_steps(problem, monkeypatch):
    from recbole_tfllmer.tfllmer import chebyshev

    X, graph = problem
    solver = chebyshev.chebyshev_top_eigenpairs
    monkeypatch.setattr(chebyshev, "chebyshev_top_eigenpairs", lambda *a, **kw: solver(*a, **{**kw, "max_iter": 1}))
    with pytest.warns(UserWarning, match=r"item_space .* on cpu: the Chebyshev solver stopped after 1 steps"):
        rec_pca_projection(X, graph, 4, alpha=0.6, device="cpu")
