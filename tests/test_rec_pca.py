"""Rec-PCA projection (method-notes, "Rec-PCA as we formulate it")."""

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


def dense_rec_pca_matrix(X, norm_adjacency, lam, row_normalize=False):
    """Brute force M = X_p^T (I - lam L_c) X_p with L_c = C - A~ (C: connected items)."""
    if row_normalize:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    Xp = X - X.mean(axis=0)
    A = norm_adjacency.toarray()
    laplacian = np.diag((np.abs(A).sum(axis=1) > 0).astype(float)) - A
    return Xp.T @ (np.eye(len(X)) - lam * laplacian) @ Xp


def projector(W):
    return W @ W.T


@pytest.fixture(scope="module")
def problem():
    return planted_problem()


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_components_are_orthonormal_and_embeddings_are_the_projection(problem, lam, row_normalize):
    X, graph = problem
    result = rec_pca_projection(X, graph, 5, lam=lam, row_normalize=row_normalize)
    assert isinstance(result, RecPCAResult)
    W = result.components
    assert W.shape == (DIM, 5) and W.dtype == np.float64
    np.testing.assert_allclose(W.T @ W, np.eye(5), atol=1e-12)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True) if row_normalize else X
    np.testing.assert_allclose(result.mean, Xn.mean(axis=0), atol=1e-12)
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (N_ITEMS, 5)
    np.testing.assert_allclose(result.embeddings, (Xn - result.mean) @ W, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(result.eigenvalues) <= 0)


def test_lambda_zero_is_exactly_pca(problem):
    X, graph = problem
    d = 6
    result = rec_pca_projection(X, graph, d, lam=0.0)
    sk = PCA(n_components=d, svd_solver="full").fit(X)
    _, singular, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    for reference in (sk.components_.T, vt[:d].T):
        np.testing.assert_allclose(projector(result.components), projector(reference), atol=1e-10)
        cosines = np.abs(np.sum(result.components * reference, axis=0))  # per component, up to sign
        np.testing.assert_allclose(cosines, 1.0, atol=1e-10)
    np.testing.assert_allclose(result.eigenvalues, singular[:d] ** 2, rtol=1e-10)
    signs = np.sign(np.sum(result.components * sk.components_.T, axis=0))
    np.testing.assert_allclose(result.embeddings, sk.transform(X) * signs, rtol=1e-5, atol=1e-5)
    assert result.stats["retained_variance"] == pytest.approx(sk.explained_variance_ratio_.sum(), rel=1e-10)
    # no graph, or a graph with lam = 0, take the same path: bit-identical results
    no_graph = rec_pca_projection(X, None, d, lam=0.7)
    assert np.array_equal(no_graph.components, result.components)
    assert np.array_equal(no_graph.embeddings, result.embeddings)
    assert no_graph.stats["graph_tv"] is None and result.stats["graph_tv"] == result.stats["graph_tv_pca"]


@pytest.mark.parametrize("lam", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_matches_the_dense_eigenproblem(problem, lam, row_normalize):
    X, graph = problem
    d = 4
    M = dense_rec_pca_matrix(X, graph, lam, row_normalize)
    values, vectors = np.linalg.eigh(M)
    result = rec_pca_projection(X, graph, d, lam=lam, row_normalize=row_normalize)
    np.testing.assert_allclose(result.eigenvalues, values[::-1][:d], rtol=1e-9, atol=1e-9 * values.max())
    np.testing.assert_allclose(projector(result.components), projector(vectors[:, ::-1][:, :d]), atol=1e-8)
    # it maximises tr(W^T M W): better than PCA's W and than random orthonormal bases
    best = np.trace(result.components.T @ M @ result.components)
    pca_w = rec_pca_projection(X, None, d, row_normalize=row_normalize).components
    assert best >= np.trace(pca_w.T @ M @ pca_w) - 1e-9
    rng = np.random.default_rng(0)
    for _ in range(5):
        q, _ = np.linalg.qr(rng.standard_normal((DIM, d)))
        assert best >= np.trace(q.T @ M @ q)


def test_graph_tv_falls_and_variance_falls_as_lambda_grows(problem):
    X, graph = problem
    lams = [0.0, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0]
    results = [rec_pca_projection(X, graph, 3, lam=lam) for lam in lams]
    tv = np.array([r.stats["graph_tv"] for r in results])
    kept = np.array([r.stats["retained_variance"] for r in results])
    assert np.all(np.diff(tv) <= 1e-9 * tv[0]), tv
    assert np.all(np.diff(kept) <= 1e-12), kept
    assert tv[-1] < 0.5 * tv[0] and kept[-1] < kept[0] - 0.1  # the trade-off is real, not flat
    for r in results:  # the PCA reference is the lam = 0 projection, and never smoother
        assert r.stats["graph_tv_pca"] == pytest.approx(tv[0], rel=1e-9)
        assert r.stats["graph_tv"] <= r.stats["graph_tv_pca"] * (1 + 1e-9)
        assert r.stats["graph_tv"] == pytest.approx(
            graph_total_variation((X - X.mean(axis=0)) @ r.components, graph), rel=1e-9
        )

    # With a strong penalty the subspace moves from the semantic dims (0-2) to the
    # collaborative dims (3-5) that the graph is smooth on.
    def mass(W, dims):
        return float(np.sum(W[dims] ** 2))

    # (3 centred cluster means span 2 dims, so PCA's third component is collaborative)
    assert mass(results[0].components, [0, 1, 2]) > 1.9 and mass(results[0].components, [3, 4, 5]) < 1.1
    assert mass(results[lams.index(2.0)].components, [3, 4, 5]) > 1.9
    assert mass(results[-1].components, [0, 1, 2]) < 0.1


def test_isolated_items_are_allowed_and_counted(problem):
    X, graph = problem
    result = rec_pca_projection(X, graph, 3, lam=0.8)
    assert result.stats["n_isolated"] == len(ISOLATED)
    # isolated items have no graph term: moving them along the penalised directions changes
    # only the variance term, exactly as the dense L_c formulation says (checked above too)
    M = dense_rec_pca_matrix(X, graph, 0.8)
    np.testing.assert_allclose(result.eigenvalues, np.linalg.eigvalsh(M)[::-1][:3], rtol=1e-9)
    # a graph without edges leaves only isolated items: plain PCA and zero total variation
    empty = sp.csr_matrix((N_ITEMS, N_ITEMS))
    result_empty = rec_pca_projection(X, empty, 3, lam=0.8)
    assert np.array_equal(result_empty.components, rec_pca_projection(X, None, 3).components)
    assert result_empty.stats["graph_tv"] == 0.0 and result_empty.stats["n_isolated"] == N_ITEMS


def test_output_size_equal_to_input_size_works(problem):
    X, graph = problem
    result = rec_pca_projection(X, graph, DIM, lam=0.5)
    np.testing.assert_allclose(result.components.T @ result.components, np.eye(DIM), atol=1e-12)
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_calls_are_bit_identical(problem, dtype):
    X, graph = problem
    first = rec_pca_projection(X.astype(dtype), graph, 4, lam=0.7)
    second = rec_pca_projection(X.astype(dtype), graph, 4, lam=0.7)
    for name in ("embeddings", "components", "mean", "eigenvalues"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    # sign convention: each component's largest-magnitude entry is positive
    W = first.components
    assert np.all(W[np.argmax(np.abs(W), axis=0), np.arange(4)] > 0)


def test_float32_input_agrees_with_float64(problem):
    X, graph = problem
    r32 = rec_pca_projection(X.astype(np.float32), graph, 4, lam=0.7)
    r64 = rec_pca_projection(X, graph, 4, lam=0.7)
    assert r32.embeddings.dtype == np.float32 and r32.components.dtype == np.float64
    np.testing.assert_allclose(projector(r32.components), projector(r64.components), atol=1e-5)
    np.testing.assert_allclose(r32.eigenvalues, r64.eigenvalues, rtol=1e-5)


def test_whitening_scales_columns_only(problem):
    X, graph = problem
    plain = rec_pca_projection(X, graph, 4, lam=0.5)
    white = rec_pca_projection(X, graph, 4, lam=0.5, whiten=True)
    np.testing.assert_allclose(np.sqrt(np.mean(white.embeddings.astype(float) ** 2, axis=0)), 1.0, rtol=1e-5)
    assert np.array_equal(white.components, plain.components)
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


def test_row_normalisation_equals_normalising_first_and_keeps_zero_rows(problem):
    X, graph = problem
    X = X.copy()
    X[3] = 0.0
    result = rec_pca_projection(X, graph, 4, lam=0.5, row_normalize=True)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    normalised = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    reference = rec_pca_projection(normalised, graph, 4, lam=0.5)
    np.testing.assert_allclose(projector(result.components), projector(reference.components), atol=1e-10)
    np.testing.assert_allclose(result.embeddings, reference.embeddings, atol=1e-6)


def test_lambda_above_one_is_allowed(problem):
    X, graph = problem
    result = rec_pca_projection(X, graph, 3, lam=5.0)
    assert result.stats["lambda"] == 5.0 and np.all(np.isfinite(result.embeddings))
    assert np.all(np.diff(result.eigenvalues) <= 0)


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf"), "0.5", None, True])
def test_invalid_lambda_names_the_option(problem, lam):
    X, graph = problem
    with pytest.raises(ValueError, match="rec_pca_lambda"):
        rec_pca_projection(X, graph, 3, lam=lam)


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


def test_stats_report_the_run(problem):
    X, graph = problem
    stats = rec_pca_projection(X, graph, 4, lam=0.5).stats
    assert {
        "retained_variance",
        "graph_tv_pca",
        "graph_tv",
        "lambda",
        "n_items",
        "dim_in",
        "dim_out",
        "n_isolated",
    } <= set(stats)
    assert (stats["n_items"], stats["dim_in"], stats["dim_out"], stats["lambda"]) == (N_ITEMS, DIM, 4, 0.5)
    assert 0 < stats["retained_variance"] < 1


@pytest.mark.parametrize("with_graph, reference_budget", [(True, None), (True, 0), (False, None)])
def test_peak_memory_stays_below_three_times_the_embeddings(with_graph, reference_budget, monkeypatch):
    """tracemalloc sees every numpy/scipy buffer; X is allocated before tracing starts."""
    rng = np.random.default_rng(0)
    n, dim = 10_000, 512
    X = rng.standard_normal((n, dim), dtype=np.float32)
    if reference_budget is not None:  # the large-input path (Gram folded into M)
        from recbole_tfllmer.tfllmer import rec_pca as module

        monkeypatch.setattr(module, "_PCA_REFERENCE_MAX_WORK", reference_budget)
    graph = None
    if with_graph:
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
            rec_pca_projection(X, graph, 16, lam=0.5)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    extra = (peak - graph_bytes) / X.nbytes  # the graph's own float32 copy is counted
    # with a graph: the smoothed copy A~ X (1x) plus chunk temporaries; without: chunks only
    assert extra < (1.6 if with_graph else 0.5), f"peak temporaries {extra:.2f}x X"


def test_large_input_path_without_pca_reference_gives_the_same_projection(problem, monkeypatch):
    """Above the work budget the Gram matrix is folded into M (no separate PCA reference)."""
    from recbole_tfllmer.tfllmer import rec_pca as module

    X, graph = problem
    with_reference = rec_pca_projection(X, graph, 4, lam=0.7, row_normalize=True)
    monkeypatch.setattr(module, "_PCA_REFERENCE_MAX_WORK", 0)
    folded = rec_pca_projection(X, graph, 4, lam=0.7, row_normalize=True)
    np.testing.assert_allclose(folded.components, with_reference.components, atol=1e-10)
    np.testing.assert_allclose(folded.eigenvalues, with_reference.eigenvalues, rtol=1e-10)
    assert folded.stats["graph_tv"] == pytest.approx(with_reference.stats["graph_tv"], rel=1e-9)
    assert folded.stats["retained_variance"] == pytest.approx(with_reference.stats["retained_variance"], rel=1e-10)
    assert folded.stats["graph_tv_pca"] is None and with_reference.stats["graph_tv_pca"] is not None
    # lam = 0 still reports the PCA number, whatever the size
    assert rec_pca_projection(X, graph, 4, lam=0.0, row_normalize=True).stats["graph_tv_pca"] == pytest.approx(
        with_reference.stats["graph_tv_pca"], rel=1e-9
    )


def test_inputs_are_left_untouched(problem):
    X, graph = problem
    X_before, graph_before = X.copy(), graph.copy()
    rec_pca_projection(X, graph, 3, lam=0.5, row_normalize=True)
    assert np.array_equal(X, X_before)
    assert (graph != graph_before).nnz == 0 and np.array_equal(graph.indices, graph_before.indices)


# --------------------------------------------------------------------------------------
# the iterative solver (rec_pca_solver: iterative / auto on large catalogues)
# --------------------------------------------------------------------------------------
def rec_pca_objective(M, W):
    return float(np.trace(W.T @ M @ W))


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5])
@pytest.mark.parametrize("row_normalize", [False, True])
def test_iterative_solver_reaches_the_exact_optimum(problem, lam, row_normalize):
    X, graph = problem
    exact = rec_pca_projection(X, graph, 5, lam=lam, row_normalize=row_normalize, solver="exact")
    iterative = rec_pca_projection(X, graph, 5, lam=lam, row_normalize=row_normalize, solver="iterative", tol=1e-8)
    M = dense_rec_pca_matrix(X, graph, lam, row_normalize=row_normalize)
    W = iterative.components
    np.testing.assert_allclose(W.T @ W, np.eye(5), atol=1e-10)
    # the objective is the exact maximum, the Ritz values are M's top eigenvalues
    assert rec_pca_objective(M, W) == pytest.approx(rec_pca_objective(M, exact.components), rel=1e-9)
    np.testing.assert_allclose(iterative.eigenvalues, exact.eigenvalues, rtol=1e-8)
    # M's top-5 eigenvalues are well separated here, so the subspace itself is the exact one
    np.testing.assert_allclose(projector(W), projector(exact.components), atol=1e-5)
    stats = iterative.stats
    assert stats["solver"] == "iterative" and stats["relative_residual"] <= 1e-8
    assert 1 <= stats["iterations"] < 100 and stats["block_size"] == 21  # max(2d, d + 16), at most D
    assert exact.stats["solver"] == "exact"
    for key in ("retained_variance", "graph_tv"):
        if stats[key] is not None:
            assert stats[key] == pytest.approx(exact.stats[key], rel=1e-6)


def test_iterative_solver_is_deterministic_and_float32_agrees(problem):
    X, graph = problem
    first = rec_pca_projection(X, graph, 5, lam=0.5, solver="iterative")
    second = rec_pca_projection(X, graph, 5, lam=0.5, solver="iterative")
    assert np.array_equal(first.embeddings, second.embeddings)
    assert np.array_equal(first.components, second.components)
    single = rec_pca_projection(X.astype(np.float32), graph, 5, lam=0.5, solver="iterative")
    np.testing.assert_allclose(projector(single.components), projector(first.components), atol=1e-4)


def test_iterative_solver_warns_when_it_runs_out_of_steps(problem):
    X, graph = problem
    with pytest.warns(UserWarning, match=r"stopped after rec_pca_max_iter=1 steps .* > rec_pca_tol=1e-12"):
        result = rec_pca_projection(X, graph, 5, lam=0.5, solver="iterative", tol=1e-12, max_iter=1)
    assert result.stats["iterations"] == 1 and result.stats["relative_residual"] > 1e-12


def test_iterative_solver_refuses_lambda_above_one_half(problem):
    X, graph = problem
    with pytest.raises(
        ValueError, match=r"rec_pca_solver 'iterative' needs rec_pca_lambda <= 0.5 .* got rec_pca_lambda 0.9"
    ):
        rec_pca_projection(X, graph, 5, lam=0.9, solver="iterative")


def test_auto_solver_is_exact_on_small_catalogues_and_iterative_on_large(problem, monkeypatch):
    from recbole_tfllmer.tfllmer import rec_pca as module

    X, graph = problem
    assert rec_pca_projection(X, graph, 5, lam=0.5).stats["solver"] == "exact"
    monkeypatch.setattr(module, "_AUTO_EXACT_MAX_WORK", 1.0)  # as if X were 100k x 4096
    large = rec_pca_projection(X, graph, 5, lam=0.5)
    assert large.stats["solver"] == "iterative"
    # above lambda 0.5 the matrix can be indefinite: auto stays exact whatever the size
    assert rec_pca_projection(X, graph, 5, lam=2.0).stats["solver"] == "exact"
    exact = rec_pca_projection(X, graph, 5, lam=0.5, solver="exact")
    np.testing.assert_allclose(projector(large.components), projector(exact.components), atol=1e-3)


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
        rec_pca_projection(X, graph, 5, lam=0.5, **kwargs)
