"""TFLLMER on real RecBole: initialisation, normalisation in scoring, graph from the train split, save/reload."""

import logging

import numpy as np
import pytest
import torch
from recbole.data import data_preparation

from recbole_tfllmer.data import create_dataset
from recbole_tfllmer.diagnostics.model_views import sequence_representation
from recbole_tfllmer.errors import ConfigError, GraphError, UnsupportedBackboneError
from recbole_tfllmer.quick_start import build_config, build_model, build_trainer, load_data_and_model, run_tfllmer
from recbole_tfllmer.tfllmer.tfllmer import TFLLMER, cooccurrence_graph_from_split
from tests.conftest import slice_config


def prepared(ml_slice, tmp_path, **overrides):
    data_path, name = ml_slice
    config = build_config("TFLLMER", name, config_dict=slice_config(data_path, name, tmp_path, **overrides))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, train_data, valid_data, test_data


def test_item_table_starts_at_the_rec_pca_projection(ml_slice, tmp_path):
    config, dataset, train_data, *_ = prepared(
        ml_slice, tmp_path, item_norm="none", init_scale=None, rec_pca_alpha=0.35
    )
    model = build_model(config, train_data)
    from recbole_tfllmer.tfllmer.rec_pca import rec_pca_projection

    _, norm_adjacency = cooccurrence_graph_from_split(config, train_data.dataset)
    expected = rec_pca_projection(
        dataset.item_text_embeddings[1:], norm_adjacency[1:, 1:], n_components=32, alpha=config["rec_pca_alpha"]
    ).embeddings
    table = model.item_table.weight.detach().numpy()
    np.testing.assert_allclose(table[1:], expected, rtol=1e-5, atol=1e-6)
    assert not table[0].any()
    assert model.init_report.graph_edges > 0


def test_rec_pca_device_runs_the_passes_on_that_torch_device(ml_slice, tmp_path, caplog):
    """`rec_pca_device: cpu` (torch) builds the table numpy builds, to float32 rounding, with the
    item-space trade-off solved there (block Chebyshev); the default `auto` on a run without a GPU
    is numpy with ARPACK. The geometry log line says which ran."""
    caplog.set_level(logging.INFO)
    tables, reports = [], []
    for device in ("cpu", "auto"):
        config, _, train_data, *_ = prepared(
            ml_slice, tmp_path, item_norm="none", init_scale=None, rec_pca_alpha=0.35, rec_pca_device=device
        )
        model = build_model(config, train_data)
        tables.append(model.item_table.weight.detach().numpy()[1:])
        reports.append(model.init_report.rec_pca)
    assert [r["device"] for r in reports] == ["cpu", "numpy"]
    assert [r["tradeoff_eigensolver"] for r in reports] == ["chebyshev", "arpack"]
    assert "trade-off eigensolver chebyshev (cpu)" in caplog.text
    assert "trade-off eigensolver arpack (numpy)" in caplog.text
    scale = np.abs(tables[1]).max()
    signs = np.sign(np.sum(tables[0] * tables[1], axis=0))
    np.testing.assert_allclose(tables[0] / scale, tables[1] * signs / scale, atol=1e-4)


def test_iterative_solver_option_reaches_the_exact_projection(ml_slice, tmp_path):
    """`rec_pca_solver: iterative` through the config: the same subspace as the exact solver."""
    config, dataset, train_data, *_ = prepared(
        ml_slice, tmp_path, item_norm="none", init_scale=None, rec_pca_solver="iterative", rec_pca_tol=1e-6
    )
    model = build_model(config, train_data)
    info = model.init_report.rec_pca
    assert info["solver"] == "iterative" and info["relative_residual"] <= 1e-6
    exact_config, _, exact_train, *_ = prepared(ml_slice, tmp_path, item_norm="none", init_scale=None)
    exact = build_model(exact_config, exact_train)
    assert exact.init_report.rec_pca["solver"] == "exact"  # auto on a small catalogue
    table, exact_table = (m.item_table.weight.detach().double().numpy()[1:] for m in (model, exact))
    # same column space, up to the sign/rotation freedom of near-equal eigenvalues
    basis = np.linalg.qr(exact_table)[0]
    residual = table - basis @ (basis.T @ table)
    assert np.linalg.norm(residual) <= 1e-3 * np.linalg.norm(table)


def test_random_init_is_exactly_the_plain_backbone(ml_slice, tmp_path):
    config, _, train_data, *_ = prepared(ml_slice, tmp_path, item_init="random", item_norm="none")
    wrapped = build_model(config, train_data)
    data_path, name = ml_slice
    plain_config = build_config("SASRec", name, config_dict=slice_config(data_path, name, tmp_path))
    plain_train, *_ = data_preparation(plain_config, create_dataset(plain_config))
    plain = build_model(plain_config, plain_train)
    for (name, a), (_, b) in zip(wrapped.backbone.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


def test_scores_use_normalised_items_after_training(ml_slice, in_tmp):
    config, _, train_data, valid_data, test_data = prepared(
        ml_slice, in_tmp, item_norm_scale=2.0, epochs=2, learning_rate=0.01
    )
    model = build_model(config, train_data)
    trainer = build_trainer(config, model)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    model.eval()
    weight = model.item_table.weight
    assert torch.allclose(weight[1:].norm(dim=1), torch.full((weight.shape[0] - 1,), 2.0), atol=1e-4)
    assert torch.count_nonzero(weight[0]) == 0
    # full_sort_predict scores are h . e_i with |e_i| = 2: recompute them from h.
    interaction = next(iter(test_data))[0]
    scores = model.full_sort_predict(interaction)
    h = sequence_representation(model, interaction)
    assert torch.allclose(scores, h @ weight[: model.n_items].T, atol=1e-4)


@pytest.mark.parametrize("backbone, expected_r", [("SASRec", 1.0), ("GRU4Rec", 8.0)])
def test_default_norm_follows_the_backbones_sequence_scale(ml_slice, tmp_path, backbone, expected_r):
    """`item_norm_scale: auto` gives r = 1 where the sequence vector leaves a LayerNorm (norm ~ sqrt(d)
    already) and sqrt(d) where it does not: the table's flag must match what the backbone computes."""
    config, _, train_data, _, test_data = prepared(
        ml_slice, tmp_path, backbone=backbone, item_init="pca", embedding_size=64, hidden_size=64
    )
    assert config["item_norm_scale"] == "auto"
    model = build_model(config, train_data).eval()
    assert model.init_report.item_norm_scale == expected_r
    weight = model.item_table.weight
    assert torch.allclose(weight[1:].norm(dim=1), torch.full((weight.shape[0] - 1,), expected_r), atol=1e-4)
    with torch.no_grad():
        h_norm = sequence_representation(model, next(iter(test_data))[0]).norm(dim=1).mean().item()
    if model.spec.sequence_layer_norm:
        assert 0.7 * 8.0 < h_norm < 1.3 * 8.0  # LayerNorm output: norm ~ sqrt(d)
    else:
        assert h_norm < 0.5 * 8.0  # GRU4Rec's dense projection of a tanh state: well below sqrt(d)


def test_graph_must_come_from_the_training_split(ml_slice, tmp_path):
    config, dataset, train_data, valid_data, _ = prepared(ml_slice, tmp_path, rec_pca_alpha=0.35)
    with pytest.raises(GraphError, match="training split"):
        TFLLMER(config, valid_data.dataset)
    with pytest.raises(GraphError, match="training split"):
        TFLLMER(config, dataset)


def test_unsupported_backbone_is_rejected_with_the_reason(ml_slice, tmp_path):
    data_path, name = ml_slice
    with pytest.raises(UnsupportedBackboneError, match="FPMC.*separate item tables"):
        build_config("TFLLMER", name, config_dict=slice_config(data_path, name, tmp_path, backbone="FPMC"))


def test_conflicting_normalisation_options(ml_slice, tmp_path):
    data_path, name = ml_slice
    with pytest.raises(ConfigError, match="item_norm_learnable"):
        build_config(
            "TFLLMER",
            name,
            config_dict=slice_config(data_path, name, tmp_path, item_norm="none", item_norm_learnable=True),
        )


def test_saved_model_reloads_with_identical_scores(ml_slice, in_tmp):
    data_path, name = ml_slice
    result = run_tfllmer("TFLLMER", name, config_dict=slice_config(data_path, name, in_tmp, backbone="GRU4Rec"))
    assert "TFLLMER-GRU4Rec-" in result["model_file"]
    config, model, _, _, _, test_data = load_data_and_model(result["model_file"])
    trainer = build_trainer(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]), abs=0)


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({"item_norm_scale": 1e6}, "`item_norm_scale: 1e+06`: every item vector has norm 1e+06"),
        ({"precomputed_embeddings": "same-vector"}, "items have the same LLM vector"),
    ],
)
def test_degenerate_settings_are_warned_about_with_numbers(overrides, says, ml_slice, tmp_path, caplog):
    import logging

    if overrides.get("precomputed_embeddings") == "same-vector":  # every item gets one vector
        data_path, name = ml_slice
        lines = (data_path / name / f"{name}.item").read_text(encoding="utf-8").splitlines()[1:]
        tokens = [line.split("\t")[0] for line in lines]
        np.save(tmp_path / "same.npy", np.ones((len(tokens), 48), dtype=np.float32))
        (tmp_path / "same.tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
        overrides = {"precomputed_embeddings": str(tmp_path / "same.npy")}
    config, _, train_data, *_ = prepared(ml_slice, tmp_path, **overrides)
    caplog.set_level(logging.WARNING)
    build_model(config, train_data)
    assert says in caplog.text
