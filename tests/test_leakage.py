"""No leakage: validation and test targets never reach the co-occurrence graph.

On RecBole's real leave-one-out split (ml-100k slice and Amazon_Beauty slice), for every
window option: for each user's validation and test row (history h, target t), no pair
(i, t) with i in h is an edge of the graph unless the same pair also occurs within the
training rows under that window. The graph is also compared, edge for edge, with a
plain-Python listing of the training rows' pairs; and a graph wrongly built from every
row would contain held-out pairs, so the check can fail.
"""

import itertools
from pathlib import Path

import numpy as np
import pytest
from recbole.data import data_preparation

from recbole_tfllmer.data import create_dataset
from recbole_tfllmer.quick_start import build_config
from recbole_tfllmer.tfllmer.cooccurrence import build_cooccurrence_graph
from recbole_tfllmer.tfllmer.tfllmer import cooccurrence_graph_from_split
from tests.conftest import SHARED_DATASETS, slice_config, write_ml100k_slice

WINDOWS = (1, 3, 0)
BEAUTY = SHARED_DATASETS / "Amazon_Beauty" / "Amazon_Beauty.inter"


def write_beauty_slice(root, n_users=800):
    """The first `n_users` users of Amazon_Beauty (rows are grouped by user), interactions only."""
    target = Path(root) / "beauty-slice"
    target.mkdir(parents=True)
    out, users = [], set()
    with open(BEAUTY, encoding="utf-8") as f:
        out.append(next(f).rstrip("\n"))
        for line in f:
            user = line.split("\t", 1)[0]
            if user not in users and len(users) == n_users:
                break
            users.add(user)
            out.append(line.rstrip("\n"))
    (target / "beauty-slice.inter").write_text("\n".join(out) + "\n", encoding="utf-8")
    return Path(root), "beauty-slice"


def rows(dataset):
    """(history, target) of every row of a RecBole split, histories without padding."""
    seqs = dataset.inter_feat[dataset.iid_field + dataset.config["LIST_SUFFIX"]].numpy()
    lens = dataset.inter_feat[dataset.item_list_length_field].numpy()
    targets = dataset.inter_feat[dataset.iid_field].numpy()
    return [(seq[:n].tolist(), int(t)) for seq, n, t in zip(seqs, lens, targets)]


def pairs(split_rows, window):
    """Unordered (i, t) pairs of distinct items, i among the last `window` history items (0: all)."""
    out = set()
    for history, target in split_rows:
        for item in history[-window:] if window else history:
            if item != target and item and target:
                out.add((min(item, target), max(item, target)))
    return out


def edges(graph):
    coo = graph.tocoo()
    return {(int(i), int(j)) for i, j in zip(coo.row, coo.col) if i < j and graph[i, j] != 0}


@pytest.fixture(scope="module", params=["ml-100k", "Amazon_Beauty"])
def split(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "ml-100k":
        data_path, name = write_ml100k_slice(root / "data", n_users=100)
    else:
        if not BEAUTY.is_file():
            pytest.skip(f"{BEAUTY} is not available")
        data_path, name = write_beauty_slice(root / "data")
    config = build_config(
        "TFLLMER", name, config_dict=slice_config(data_path, name, root, item_init="random", MAX_ITEM_LIST_LENGTH=20)
    )
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    return config, train_data, valid_data, test_data


@pytest.mark.parametrize("window", WINDOWS)
def test_held_out_pairs_are_not_edges(split, window):
    config, train_data, valid_data, test_data = split
    config["graph_window"] = window
    config["graph_weighting"] = "count"
    adjacency, _ = cooccurrence_graph_from_split(config, train_data.dataset)

    train_rows = rows(train_data.dataset)
    train_pairs = pairs(train_rows, window)
    held_out = [r for data in (valid_data, test_data) for r in rows(data.dataset)]
    assert len(held_out) >= train_data.dataset.user_num - 1  # one valid + one test row per user (most users)

    leaked, only_held_out = [], 0
    for history, target in held_out:
        for item in set(history):  # every history item, whatever the window
            if item == target:
                continue
            pair = (min(item, target), max(item, target))
            if pair in train_pairs:
                continue  # also a training pair: allowed
            only_held_out += 1
            if adjacency[item, target] != 0 or adjacency[target, item] != 0:
                leaked.append((item, target))
    assert not leaked, f"{len(leaked)} held-out pairs are graph edges, e.g. {leaked[:5]}"
    assert only_held_out > 100  # the check is not vacuous

    # The graph is exactly the training rows' pairs, with their counts.
    assert edges(adjacency) == train_pairs
    counts = {}
    for history, target in train_rows:
        for item in history[-window:] if window else history:
            if item != target and item and target:
                key = (min(item, target), max(item, target))
                counts[key] = counts.get(key, 0) + 1
    i, j = np.array(sorted(counts)).T
    assert np.array_equal(np.asarray(adjacency[i, j]).ravel(), np.array([counts[k] for k in sorted(counts)]))

    # A graph built from every row (the leak this guards against) does contain held-out pairs.
    everything = train_rows + held_out
    width = max(len(h) for h, _ in everything)
    seqs = np.array([h + [0] * (width - len(h)) for h, _ in everything])
    leaky = build_cooccurrence_graph(
        seqs,
        np.array([len(h) for h, _ in everything]),
        np.array([t for _, t in everything]),
        n_items=train_data.dataset.item_num,
        window=window,
    )
    assert edges(leaky) - train_pairs


def test_targets_are_held_out_per_user(split):
    """RecBole's leave-one-out as the graph sees it: each user's validation row extends
    their last training row by one item, and the test row extends the validation row."""
    config, train_data, valid_data, test_data = split
    uid = train_data.dataset.uid_field

    def last_rows(dataset):
        users = dataset.inter_feat[uid].numpy()
        return {int(u): r for u, r in zip(users, rows(dataset))}  # rows are in time order per user

    train_last, valid, test = last_rows(train_data.dataset), last_rows(valid_data.dataset), last_rows(test_data.dataset)
    max_len = config["MAX_ITEM_LIST_LENGTH"]
    for user, (history, target) in itertools.islice(valid.items(), 200):
        t_history, t_target = train_last[user]
        assert history == (t_history + [t_target])[-max_len:]
        assert test[user][0] == (history + [target])[-max_len:]
