"""Co-occurrence graph, normalisation and graph total variation (method-notes, graph section)."""

import time
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from recbole_tfllmer.tfllmer.cooccurrence import (
    build_cooccurrence_graph,
    graph_total_variation,
    normalized_adjacency,
)

# Hand-made sequences; items 9..14 only ever appear as a user's last two items.
SEQUENCES = {
    "u1": [1, 2, 3, 4, 5, 9, 10],
    "u2": [2, 3, 6, 2, 7, 11, 12],
    "u3": [5, 1, 8, 13, 14],
}
MAX_LEN = 3  # RecBole's MAX_ITEM_LIST_LENGTH: histories keep their last 3 items
N_ITEMS = 15  # ids 0 (padding) .. 14
HELD_OUT_ONLY = {9, 10, 11, 12, 13, 14}


def augmented_rows(sequences, max_len, held_out_per_user=2):
    """RecBole-style prefix -> next rows, left-aligned and zero-padded; the last
    ``held_out_per_user`` rows of each user (validation, test) are left out."""
    seqs, lens, targets = [], [], []
    for items in sequences.values():
        rows = list(range(1, len(items)))
        for end in rows[: len(rows) - held_out_per_user]:
            history = items[max(0, end - max_len) : end]
            seqs.append(history + [0] * (max_len - len(history)))
            lens.append(len(history))
            targets.append(items[end])
    return np.array(seqs), np.array(lens), np.array(targets)


def as_pair_dict(graph):
    upper = sp.triu(graph, k=1).tocoo()
    return {(int(i), int(j)): float(w) for i, j, w in zip(upper.row, upper.col, upper.data)}


# Expected unordered pairs (i < j) with counts, worked out by hand from the ten train rows:
# [1]->2, [1,2]->3, [1,2,3]->4, [2,3,4]->5, [2]->3, [2,3]->6, [2,3,6]->2, [3,6,2]->7, [5]->1, [5,1]->8
EXPECTED_WINDOW_1 = {(1, 2): 1, (2, 3): 2, (3, 4): 1, (4, 5): 1, (3, 6): 1, (2, 6): 1, (2, 7): 1, (1, 5): 1, (1, 8): 1}
EXPECTED_WINDOW_2 = {
    (1, 2): 1, (1, 3): 1, (2, 3): 3, (2, 4): 1, (3, 4): 1, (3, 5): 1, (4, 5): 1,
    (2, 6): 2, (3, 6): 1, (6, 7): 1, (2, 7): 1, (1, 5): 1, (5, 8): 1, (1, 8): 1,
}  # fmt: skip
EXPECTED_WHOLE = {
    (1, 2): 1, (1, 3): 1, (2, 3): 3, (1, 4): 1, (2, 4): 1, (3, 4): 1, (2, 5): 1, (3, 5): 1,
    (4, 5): 1, (2, 6): 2, (3, 6): 1, (3, 7): 1, (6, 7): 1, (2, 7): 1, (1, 5): 1, (5, 8): 1, (1, 8): 1,
}  # fmt: skip


@pytest.fixture
def train_rows():
    return augmented_rows(SEQUENCES, MAX_LEN)


def test_split_helper_matches_hand_listing(train_rows):
    seqs, lens, targets = train_rows
    assert targets.tolist() == [2, 3, 4, 5, 3, 6, 2, 7, 1, 8]
    assert seqs[3].tolist() == [2, 3, 4] and seqs[7].tolist() == [3, 6, 2]  # truncated histories
    assert seqs[0].tolist() == [1, 0, 0] and lens.tolist() == [1, 2, 3, 3, 1, 2, 3, 3, 1, 2]


@pytest.mark.parametrize(
    "window, expected", [(1, EXPECTED_WINDOW_1), (2, EXPECTED_WINDOW_2), (0, EXPECTED_WHOLE), (None, EXPECTED_WHOLE)]
)
def test_hand_example_exact_pairs(train_rows, window, expected):
    graph = build_cooccurrence_graph(*train_rows, N_ITEMS, window=window)
    assert as_pair_dict(graph) == {pair: float(c) for pair, c in expected.items()}
    assert graph.shape == (N_ITEMS, N_ITEMS) and graph.dtype == np.float64
    assert abs(graph - graph.T).max() == 0
    assert graph.diagonal().max() == 0  # the repeated item 2 in u2 gave no self-pair
    assert graph[0].nnz == 0 and graph[:, 0].nnz == 0


def test_held_out_targets_never_enter_the_graph(train_rows):
    for window in (1, 2, 0):
        graph = build_cooccurrence_graph(*train_rows, N_ITEMS, window=window)
        degree = np.asarray(graph.sum(axis=1)).ravel()
        assert not degree[sorted(HELD_OUT_ONLY)].any()
    # Sanity check of the check: with validation/test rows included they would appear.
    leaky = build_cooccurrence_graph(*augmented_rows(SEQUENCES, MAX_LEN, held_out_per_user=0), N_ITEMS)
    assert np.asarray(leaky.sum(axis=1)).ravel()[sorted(HELD_OUT_ONLY)].all()


def naive_pair_counts(seqs, lens, targets, window):
    counts = {}
    for history, length, target in zip(seqs, lens, targets):
        start = 0 if not window else max(0, length - window)
        for item in history[start:length]:
            if item and target and item != target:
                key = (min(item, target), max(item, target))
                counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("window", [1, 3, 0])
def test_vectorised_counts_match_a_naive_loop(window):
    rng = np.random.default_rng(1)
    n_rows, width, n_items = 400, 6, 30
    lens = rng.integers(0, width + 1, n_rows)
    seqs = rng.integers(0, n_items, (n_rows, width))
    seqs[np.arange(width)[None, :] >= lens[:, None]] = 0
    targets = rng.integers(0, n_items, n_rows)
    graph = build_cooccurrence_graph(seqs, lens, targets, n_items, window=window)
    expected = naive_pair_counts(seqs, lens, targets, window)
    assert as_pair_dict(graph) == {pair: float(c) for pair, c in expected.items()}


def test_log_weighting(train_rows):
    counts = build_cooccurrence_graph(*train_rows, N_ITEMS, window=0)
    logged = build_cooccurrence_graph(*train_rows, N_ITEMS, window=0, weighting="log")
    assert np.array_equal(logged.indices, counts.indices)
    np.testing.assert_allclose(logged.data, np.log1p(counts.data))


def test_inverse_popularity_uses_training_frequencies(train_rows):
    counts = build_cooccurrence_graph(*train_rows, N_ITEMS, window=0)
    damped = build_cooccurrence_graph(*train_rows, N_ITEMS, window=0, weighting="inv_pop")
    # Training frequency = occurrences in each user's sequence without its last two items.
    popularity = np.zeros(N_ITEMS)
    for items in SEQUENCES.values():
        np.add.at(popularity, items[:-2], 1)
    assert popularity[2] == 3 and popularity[1] == 2
    expected = counts.multiply(1.0 / np.sqrt(np.outer(np.maximum(popularity, 1), np.maximum(popularity, 1))))
    np.testing.assert_allclose(damped.toarray(), expected.toarray())
    assert damped.max() < counts.max()  # the popular pair (2, 3) is damped


def reference_topk(dense, k):
    keep = np.zeros_like(dense, dtype=bool)
    for i, row in enumerate(dense):
        neighbours = [j for j in np.lexsort((np.arange(len(row)), -row)) if row[j] > 0][:k]
        keep[i, neighbours] = True
    keep |= keep.T
    return np.where(keep, dense, 0.0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk_keeps_each_items_strongest_edges_then_max_symmetrises(train_rows, k):
    full = build_cooccurrence_graph(*train_rows, N_ITEMS, window=0)
    pruned = build_cooccurrence_graph(*train_rows, N_ITEMS, window=0, topk=k)
    np.testing.assert_array_equal(pruned.toarray(), reference_topk(full.toarray(), k))
    assert abs(pruned - pruned.T).max() == 0
    assert pruned.nnz < full.nnz
    # Item 2's strongest neighbour (3, count 3) survives even at k = 1.
    assert pruned[2, 3] == 3


def test_topk_larger_than_degree_keeps_everything(train_rows):
    full = build_cooccurrence_graph(*train_rows, N_ITEMS, window=1)
    pruned = build_cooccurrence_graph(*train_rows, N_ITEMS, window=1, topk=100)
    assert (full != pruned).nnz == 0


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"window": -1}, "graph_window"),
        ({"window": 1.5}, "graph_window"),
        ({"window": True}, "graph_window"),
        ({"weighting": "tfidf"}, "graph_weighting"),
        ({"weighting": None}, "graph_weighting"),
        ({"topk": 0}, "graph_topk"),
        ({"topk": -3}, "graph_topk"),
        ({"topk": 2.5}, "graph_topk"),
    ],
)
def test_invalid_options_name_the_config_key(train_rows, kwargs, option):
    with pytest.raises(ValueError, match=option):
        build_cooccurrence_graph(*train_rows, N_ITEMS, **kwargs)


def test_invalid_arrays_are_rejected(train_rows):
    seqs, lens, targets = train_rows
    with pytest.raises(ValueError, match="outside"):
        build_cooccurrence_graph(seqs, lens, targets, 8)  # ids up to 8 need n_items >= 9
    with pytest.raises(ValueError, match="same number of rows"):
        build_cooccurrence_graph(seqs, lens[:-1], targets, N_ITEMS)
    with pytest.raises(ValueError, match="seq_lens"):
        build_cooccurrence_graph(seqs, lens + 5, targets, N_ITEMS)
    with pytest.raises(ValueError, match="integer"):
        build_cooccurrence_graph(seqs.astype(float), lens, targets, N_ITEMS)


def test_no_rows_gives_an_empty_graph():
    graph = build_cooccurrence_graph(np.zeros((0, 4), int), np.zeros(0, int), np.zeros(0, int), 5)
    assert graph.shape == (5, 5) and graph.nnz == 0


def test_large_input_is_vectorised():
    """~200k rows x 50-item histories (10M pair slots) must build in seconds."""
    rng = np.random.default_rng(0)
    n_rows, width, n_items = 200_000, 50, 20_000
    seqs = rng.integers(1, n_items, (n_rows, width), dtype=np.int64)
    lens = np.full(n_rows, width)
    targets = rng.integers(1, n_items, n_rows)
    started = time.perf_counter()
    graph = build_cooccurrence_graph(seqs, lens, targets, n_items, window=0)
    elapsed = time.perf_counter() - started
    assert graph.sum() == pytest.approx(2 * (n_rows * width - (seqs == targets[:, None]).sum()))
    assert elapsed < 20.0, f"took {elapsed:.1f} s"  # ~2-4 s on 2 cores; generous for shared machines


# ------------------------------------------------------------------------------------------
# normalisation and total variation
# ------------------------------------------------------------------------------------------
@pytest.fixture
def graph_with_isolated_items():
    rng = np.random.default_rng(3)
    dense = np.triu(rng.integers(0, 4, (12, 12)) * (rng.random((12, 12)) < 0.4), k=1).astype(float)
    dense = dense + dense.T
    dense[[0, 5, 9], :] = 0
    dense[:, [0, 5, 9]] = 0
    return dense


def test_normalized_adjacency_matches_dense_formula(graph_with_isolated_items):
    dense = graph_with_isolated_items
    degree = dense.sum(axis=1)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        normalized = normalized_adjacency(sp.csr_matrix(dense))
    connected = degree > 0
    inv = np.zeros_like(degree)
    inv[connected] = degree[connected] ** -0.5
    np.testing.assert_allclose(normalized.toarray(), inv[:, None] * dense * inv[None, :])
    assert not normalized.toarray()[~connected].any() and not normalized.toarray()[:, ~connected].any()
    eigenvalues = np.linalg.eigvalsh(normalized.toarray())
    assert eigenvalues.max() <= 1 + 1e-12 and eigenvalues.min() >= -1 - 1e-12
    # the normalised Laplacian restricted to connected items has the constant-in-sqrt(degree) null vector
    np.testing.assert_allclose(normalized @ np.sqrt(degree), np.sqrt(degree), atol=1e-12)


def test_normalized_adjacency_accepts_dense_and_rejects_bad_graphs(graph_with_isolated_items):
    dense = graph_with_isolated_items
    np.testing.assert_allclose(
        normalized_adjacency(dense).toarray(), normalized_adjacency(sp.csr_matrix(dense)).toarray()
    )
    asymmetric = dense.copy()
    asymmetric[1, 2] += 1
    with pytest.raises(ValueError, match="symmetric"):
        normalized_adjacency(asymmetric)
    with pytest.raises(ValueError, match="non-negative"):
        normalized_adjacency(-dense)
    with pytest.raises(ValueError, match="square"):
        normalized_adjacency(np.ones((3, 4)))


def test_graph_total_variation_definition(graph_with_isolated_items):
    dense = graph_with_isolated_items
    normalized = normalized_adjacency(dense)
    degree = dense.sum(axis=1)
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((12, 3))
    connected = degree > 0
    scaled = np.zeros_like(Z)
    scaled[connected] = Z[connected] / np.sqrt(degree[connected])[:, None]
    pairwise = 0.5 * sum(dense[i, j] * np.sum((scaled[i] - scaled[j]) ** 2) for i in range(12) for j in range(12))
    laplacian = np.diag(connected.astype(float)) - normalized.toarray()
    tv = graph_total_variation(Z, normalized)
    assert tv == pytest.approx(pairwise, rel=1e-12)
    assert tv == pytest.approx(np.trace(Z.T @ laplacian @ Z), rel=1e-12)
    assert tv > 0
    # isolated items contribute nothing
    moved = Z.copy()
    moved[[0, 5, 9]] += 100.0
    assert graph_total_variation(moved, normalized) == pytest.approx(tv, rel=1e-12)
    # a signal proportional to sqrt(degree) is perfectly smooth
    smooth = np.sqrt(degree)[:, None] * np.array([[1.0, -2.0]])
    assert abs(graph_total_variation(smooth, normalized)) < 1e-10
    # a vector input is treated as one column
    assert graph_total_variation(Z[:, 0], normalized) == pytest.approx(graph_total_variation(Z[:, :1], normalized))
