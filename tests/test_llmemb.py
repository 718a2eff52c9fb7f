"""LLMEmb's stage 2 (RAT) and its place in the pipeline: the adapted item table, the alignment
loss, the collaborative table joined by token, options, checkpoints and the leaderboard.

SCFT itself is tested in test_llmemb_scft.py; here `llmemb_scft: false` (the base encoder's
vectors of the attribute prompts) keeps each model build to the cached MiniLM encoding, except
in the end-to-end runs that fine-tune for a step or two.
"""

import os

import numpy as np
import pytest
import torch
import yaml

from recbole_tfllmer.collab_tables import load_item_table_for
from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.llmemb.losses import soft_clip_contrastive
from recbole_tfllmer.quick_start import build_config, load_data_and_model, prepare, run_tfllmer
from tests.conftest import run_tiny_board, slice_config

TINY_SCFT = dict(
    scft_max_steps=2,
    scft_batch_size=4,
    scft_grad_accum=1,
    scft_lora_r=2,
    scft_lora_targets=["query", "value"],
    scft_max_length=32,
)


def rat_config(data_path, name, tmp_path, **overrides):
    options = {"llmemb_scft": False, "llmemb_pca_dim": 32, "llmemb_adapter_hidden": 16, **overrides}
    return slice_config(data_path, name, tmp_path, **options)


@pytest.fixture(scope="module")
def collab_run(ml_slice, tmp_path_factory):
    """A one-epoch RandInit SASRec on the slice (hidden 32): its checkpoint, and its item table
    exported by the command users run (`recbole-tfllmer export-item-table`)."""
    from recbole_tfllmer.cli import main

    data_path, name = ml_slice
    tmp = tmp_path_factory.mktemp("collab")
    config = slice_config(data_path, name, tmp, item_init="random", item_norm="none")
    cwd = os.getcwd()
    os.chdir(tmp)  # RecBole writes ./log
    try:
        result = run_tfllmer("TFLLMER", name, config_dict=config)
        assert main(["export-item-table", result["model_file"], str(tmp / "randinit_sasrec.npy")]) == 0
    finally:
        os.chdir(cwd)
    return str(tmp / "randinit_sasrec.npy"), result["model_file"]


def build(ml_slice, tmp_path, **overrides):
    data_path, name = ml_slice
    config = build_config("LLMEmb", name, config_dict=rat_config(data_path, name, tmp_path, **overrides))
    return prepare(config)


def test_exported_table_is_keyed_by_token_and_loads_back_aligned(collab_run):
    path, model_file = collab_run
    _, model, dataset, *_ = load_data_and_model(model_file)
    with open(path[: -len(".npy")] + ".tokens.txt", encoding="utf-8") as f:
        assert [line.strip() for line in f] == [str(t) for t in dataset.id2token("item_id", range(1, dataset.item_num))]
    table = load_item_table_for(path, dataset)
    assert np.all(table[0] == 0)
    np.testing.assert_array_equal(table[1:], model.item_table.weight[1:].detach().numpy())
    # the checkpoint itself is an equivalent `llmemb_collab`
    np.testing.assert_array_equal(load_item_table_for(model_file, dataset), table)


def test_item_table_is_the_adapter_of_the_frozen_pca_table(ml_slice, tmp_path, collab_run):
    from recbole_tfllmer.tfllmer.rec_pca import rec_pca_projection

    run = build(ml_slice, tmp_path, llmemb_collab=collab_run[0])
    model, dataset = run.model, run.dataset
    adapter = model.adapter
    vectors = dataset.item_text_embeddings[1:]
    # the centred PCA scores of the plugin's exact PCA (tested against scikit-learn in test_rec_pca)
    reference = rec_pca_projection(vectors, None, n_components=32, alpha=0.0, center=True)
    frozen = adapter.llm_table[1:].numpy()
    np.testing.assert_array_equal(frozen, reference.embeddings.astype(np.float32))
    np.testing.assert_allclose(frozen.mean(axis=0), 0, atol=1e-6)
    weight = model.item_table.weight
    assert weight.shape == (dataset.item_num, 32) and torch.all(weight[0] == 0)
    two_layers = adapter.second(adapter.first(adapter.llm_table[1:]))
    torch.testing.assert_close(weight[1:], two_layers, rtol=1e-5, atol=1e-6)
    assert model.init_report.pca_dim == 32 and model.init_report.adapter_hidden == 16


def test_gradients_reach_the_adapter_and_not_the_frozen_table(ml_slice, tmp_path, collab_run):
    run = build(ml_slice, tmp_path, llmemb_collab=collab_run[0])
    model = run.model
    batch = next(iter(run.train_data))
    model.calculate_loss(batch).backward()
    assert model.adapter.first.weight.grad.abs().sum() > 0 and model.adapter.second.bias.grad.abs().sum() > 0
    assert not model.adapter.llm_table.requires_grad
    assert model.item_table.parametrizations.weight.original.grad is None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("original" in n for n in trainable)


def test_the_trainable_ablation_trains_the_table_and_keeps_padding_zero(ml_slice, tmp_path, collab_run):
    """`LLMEmb-trainable` (their "w/o frozen"): the PCA table is a parameter, so a step moves it;
    row 0 (padding) is never read from it, and the table round-trips through the state dict."""
    run = build(ml_slice, tmp_path, llmemb_collab=collab_run[0], llmemb_freeze_llm_table=False)
    model = run.model
    table = model.adapter.llm_table
    assert isinstance(table, torch.nn.Parameter) and table.requires_grad
    before = table.detach().clone()
    optimizer = torch.optim.SGD([table], lr=1.0)
    model.calculate_loss(next(iter(run.train_data))).backward()
    assert table.grad[1:].abs().sum() > 0 and table.grad[0].abs().sum() == 0
    optimizer.step()
    assert not torch.equal(table.detach(), before) and torch.all(model.item_table.weight[0] == 0)
    assert any(k.endswith("llm_table") for k in model.state_dict())  # saved with the model, unlike the buffer
    assert not any(
        k.endswith("llm_table") for k in build(ml_slice, tmp_path, llmemb_collab=collab_run[0]).model.state_dict()
    )


def test_loss_is_the_backbone_loss_plus_alpha_times_the_alignment(ml_slice, tmp_path, collab_run):
    run = build(ml_slice, tmp_path, llmemb_collab=collab_run[0], llmemb_align_alpha=0.3, llmemb_align_tau=1.5)
    model = run.model
    model.eval()  # no dropout: both computations see the same network
    batch = next(iter(run.train_data))
    with torch.no_grad():
        total = model.calculate_loss(batch)
        rec = model.backbone.calculate_loss(batch)
        ids = batch["item_id"]
        collab = torch.from_numpy(load_item_table_for(collab_run[0], run.dataset))[ids]
        align = soft_clip_contrastive(collab, model.adapter.item_rows(ids), 1.5)
    assert float(align) > 0
    torch.testing.assert_close(total, rec + 0.3 * align)


def test_full_sort_scores_are_sequence_vectors_times_the_adapted_table(ml_slice, tmp_path, collab_run):
    from recbole_tfllmer.diagnostics.model_views import sequence_representation

    run = build(ml_slice, tmp_path, llmemb_collab=collab_run[0])
    model = run.model.eval()
    batch = next(iter(run.test_data))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        expected = sequence_representation(model, batch) @ model.item_table.weight.T
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def test_bert4rec_mask_row_is_a_trainable_vector(ml_slice, tmp_path):
    run = build(ml_slice, tmp_path, backbone="BERT4Rec", llmemb_align_alpha=0.0)
    model = run.model
    weight = model.item_table.weight
    assert weight.shape[0] == run.dataset.item_num + 1
    torch.testing.assert_close(weight[-1], model.adapter.extra[0])
    assert model.adapter.extra.requires_grad and torch.all(weight[0] == 0)
    batch = next(iter(run.train_data))
    model.calculate_loss(batch).backward()
    assert model.adapter.extra.grad.abs().sum() > 0  # [mask] positions are looked up in training


def test_gru4rec_with_stacked_normalisation(ml_slice, tmp_path):
    run = build(ml_slice, tmp_path, backbone="GRU4Rec", llmemb_align_alpha=0.0, item_norm="always", item_norm_scale=3.0)
    norms = run.model.item_table.weight[1:].norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 3.0))
    assert run.model.init_report.item_norm_scale == 3.0


def test_pca_width_is_clipped_to_the_encoder_and_logged(ml_slice, tmp_path, caplog):
    caplog.set_level("INFO")
    run = build(ml_slice, tmp_path, llmemb_pca_dim=1536, llmemb_adapter_hidden=None, llmemb_align_alpha=0.0)
    assert run.model.init_report.pca_dim == 384 and run.model.init_report.adapter_hidden == 192
    assert "llmemb_pca_dim 1536 clipped to 384" in caplog.text


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"llmemb_collab": "/nonexistent/table.npy"}, "option `llmemb_collab`: file '/nonexistent/table.npy'"),
        ({"llmemb_align_alpha": 0.0, "item_norm": "init"}, "`item_norm: init`"),
        ({"llmemb_align_alpha": 0.0, "scft_lora_targets": 3}, "option `scft_lora_targets`"),
        ({"llmemb_align_alpha": 0.0, "llmemb_attr_template": "{name}"}, "must contain {value}"),
        ({"llmemb_align_alpha": 0.0, "scft_drop_ratio": 1.0}, "option `scft_drop_ratio` must be <= 0.99"),
    ],
)
def test_bad_options_fail_before_any_data_is_read(overrides, message, ml_slice, tmp_path):
    data_path, name = ml_slice
    with pytest.raises(ConfigError) as err:
        build_config("LLMEmb", name, config_dict=rat_config(data_path, name, tmp_path, **overrides))
    assert message in str(err.value)


def test_collaborative_table_of_another_width_or_other_items_is_refused(ml_slice, tmp_path, collab_run):
    with pytest.raises(ConfigError, match="has 32 columns but the backbone's item vectors have 16"):
        build(ml_slice, tmp_path, llmemb_collab=collab_run[0], hidden_size=16, llmemb_pca_dim=16)
    matrix = np.load(collab_run[0])
    tokens = open(collab_run[0][: -len(".npy")] + ".tokens.txt", encoding="utf-8").read().split()
    partial = tmp_path / "partial.npy"
    np.save(partial, matrix[:10])
    (tmp_path / "partial.tokens.txt").write_text("\n".join(tokens[:10]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="has no row for .* items .*trained on other data"):
        build(ml_slice, tmp_path, llmemb_collab=str(partial))


def test_run_trains_with_scft_then_reloads_with_identical_scores_and_the_second_run_fine_tunes_nothing(
    ml_slice, in_tmp, collab_run, caplog
):
    """`-m LLMEmb` end to end: SCFT (2 steps), RAT (1 epoch), RecBole's test; then the same
    config again is a cache hit (no fine-tuning, nothing encoded)."""
    data_path, name = ml_slice
    config = rat_config(
        data_path,
        name,
        in_tmp,
        llmemb_scft=True,
        llmemb_collab=collab_run[0],
        embedding_cache_dir=str(in_tmp / "c"),
        **TINY_SCFT,
    )
    caplog.set_level("INFO")
    result = run_tfllmer("LLMEmb", name, config_dict=config)
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
    assert list((in_tmp / "c").glob(f"{name}-scft-*"))  # the LoRA adapter beside the cache
    _, model, dataset, _, _, test_data = load_data_and_model(result["model_file"])
    batch = next(iter(test_data))[0]
    trained = torch.load(result["model_file"], weights_only=True)["state_dict"]
    model.eval()
    with torch.no_grad():
        reloaded = model.full_sort_predict(batch)
        model.load_state_dict(trained)
        np.testing.assert_array_equal(reloaded.numpy(), model.full_sort_predict(batch).numpy())
    caplog.clear()
    again = build_config("LLMEmb", name, config_dict=config)
    run = prepare(again, with_trainer=False)
    assert run.dataset.embedding_info["cache_hit"] and run.dataset.embedding_info["n_encoded"] == 0
    assert "embedding cache hit" in caplog.text


def test_board_runs_the_collaborative_cell_first_and_aligns_with_its_exported_table(ml_slice, tmp_path, in_tmp, capsys):
    from recbole_tfllmer.leaderboard.spec import SpecError, load_spec

    data_path, name = ml_slice
    board = {
        "name": "llmemb-tiny",
        "backbones": ["SASRec"],
        "methods": ["LLMEmb", "RandInit"],  # listed first: it must still wait for RandInit
        "seeds": [3],
        "vector_kinds": ["st"],
        "overrides": {"epochs": 1},
        "method_overrides": {"LLMEmb": {"llmemb_scft": False, "llmemb_pca_dim": 32}},
        "conditioning": {"sample_size": 16},
    }
    store, results, board_file = run_tiny_board(
        tmp_path, slice_config(data_path, name, tmp_path, metric_decimal_place=10), board
    )
    source = f"{name}__SASRec__RandInit__none__seed3"
    llmemb = store.read(f"{name}__SASRec__LLMEmb__st__seed3")
    artifact = results / "artifacts" / f"{source}.npy"
    assert artifact.is_file() and (artifact.parent / f"{source}.tokens.txt").is_file()
    # ... and its checkpoint, which no cell here needs: a later A-LLMRec method finds it (no re-run)
    assert (artifact.parent / f"{source}.pth").is_file()
    assert llmemb["status"] == "done" and llmemb["config_overrides"]["llmemb_collab"] == str(artifact)
    assert llmemb["tfllmer_info"]["pca_dim"] == 32
    # a finished source whose export is gone is listed for a re-run, not as done or todo
    from recbole_tfllmer.leaderboard import command

    listing = [
        "--config",
        str(board_file),
        "--results-root",
        str(tmp_path / "results"),
        "--workdir",
        str(tmp_path / "w"),
    ]
    artifact.unlink()
    capsys.readouterr()
    assert command.main([*listing, "--list"]) == 0  # the cell that needed it has run: nothing to redo
    lines = capsys.readouterr().out.splitlines()
    assert f"done    {source}" in lines and f"done    {name}__SASRec__LLMEmb__st__seed3" in lines
    (store.cells_dir / f"{name}__SASRec__LLMEmb__st__seed3.json").unlink()  # as if it had not run yet
    assert command.main([*listing, "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rerun = f"rerun   {source}  (finished, but a cell still to run needs its export {source}.npy: "
    rerun += "replays up to its best epoch 0, last)"
    assert rerun in lines
    waiting = f"waits   {name}__SASRec__LLMEmb__st__seed3  (needs the export of {source}: runs once that cell is done)"
    assert waiting in lines
    # the LLMEmb cell is stale when its source changes
    spec = load_spec(board_file)
    cell = next(c for c in spec.cells() if c.method == "LLMEmb")
    before = spec.fingerprint(cell)
    spec.method_overrides["RandInit"] = {"learning_rate": 0.01}
    assert spec.fingerprint(cell) != before
    # a board without the source cell is refused when it is loaded
    written = yaml.safe_load(board_file.read_text(encoding="utf-8"))
    board_file.write_text(yaml.safe_dump({**written, "methods": ["LLMEmb"]}), encoding="utf-8")
    with pytest.raises(SpecError, match="add RandInit to `methods`"):
        load_spec(board_file)


def test_scft_without_peft_names_the_package_before_any_data_is_read(ml_slice, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    data_path, name = ml_slice
    config = rat_config(data_path, name, tmp_path, llmemb_scft=True, llmemb_align_alpha=0.0)
    with pytest.raises(ConfigError, match=r"needs the peft library: pip install 'peft>=0.21,<0.22'"):
        build_config("LLMEmb", name, config_dict=config)
    build_config("LLMEmb", name, config_dict={**config, "llmemb_scft": False})  # w/o SCFT needs no peft


def test_without_a_collaborative_table_a_randinit_sasrec_is_trained_first_and_cached(ml_slice, in_tmp, caplog):
    """`-m LLMEmb` with no `llmemb_collab`: their pipeline's first step (an ID-only SASRec on the
    same data, split and seed) runs once, its table is cached, and the LLMEmb model is the same
    as with that table named explicitly."""
    data_path, name = ml_slice
    config = rat_config(data_path, name, in_tmp, embedding_cache_dir=str(in_tmp / "cache"), seed=11)
    caplog.set_level("INFO")
    first = prepare(build_config("LLMEmb", name, config_dict=config))
    assert "training the ID-only SASRec (RandInit)" in caplog.text
    (table,) = (in_tmp / "cache").glob(f"{name}-collab-*.npy")
    caplog.clear()
    again = prepare(build_config("LLMEmb", name, config_dict=config))
    assert "collaborative table cache hit" in caplog.text and "training the ID-only" not in caplog.text
    named = prepare(build_config("LLMEmb", name, config_dict={**config, "llmemb_collab": str(table)}))
    for run in (again, named):
        torch.testing.assert_close(run.model.collab_table, first.model.collab_table)
        for key, value in first.model.state_dict().items():
            assert torch.equal(value, run.model.state_dict()[key]), key
