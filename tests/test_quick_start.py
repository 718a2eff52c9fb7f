"""The plugin's quick start on real RecBole: config layering, runs, weights-only checkpoints."""

import pytest
import torch

from recbole_tfllmer.checkpoint import load_checkpoint
from recbole_tfllmer.quick_start import build_config, build_trainer, run_tfllmer
from tests.conftest import REPO_ROOT, slice_config


def test_backbone_yaml_loaded_under_the_wrapper():
    config = build_config(
        "TFLLMER",
        "ml-100k",
        config_file_list=[str(REPO_ROOT / "properties" / "ml-100k.yaml")],
        cmd_args=["--backbone=BERT4Rec", "--rec_pca_alpha=0.25"],
    )
    assert config["backbone"] == "BERT4Rec"
    assert config["transform"] == "mask_itemseq"  # only BERT4Rec.yaml sets it
    assert config["mask_ratio"] == 0.2
    assert config["rec_pca_alpha"] == 0.25  # command line beats the plugin yaml
    assert config["item_init"] == "rec_pca"  # plugin yaml default


def test_pairwise_backbones_keep_their_input_type():
    config = build_config(
        "TFLLMER",
        "ml-100k",
        config_dict={"backbone": "TransRec", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
    )
    assert config["MODEL_INPUT_TYPE"].name == "PAIRWISE"


def test_plain_recbole_models_still_resolve():
    config = build_config("GRU4Rec", "ml-100k", config_dict={"train_neg_sample_args": None})
    assert config["model"] == "GRU4Rec" and config["embedding_size"] == 64


def test_bad_command_line_is_rejected():
    from recbole_tfllmer.errors import ConfigError

    with pytest.raises(ConfigError, match="--key=value"):
        build_config("GRU4Rec", "ml-100k", cmd_args=["-x"])


def test_test_metrics_come_from_the_best_validation_model(ml_slice, in_tmp):
    """Train several epochs, then check that evaluate(load_best_model=True) reloads the best
    epoch's weights (on torch>=2.6, RecBole's own checkpoint cannot be reloaded at all)."""
    data_path, name = ml_slice
    result = run_tfllmer(
        "SASRec",
        name,
        config_dict=slice_config(data_path, name, in_tmp, epochs=4, learning_rate=0.01, seed=7),
    )
    assert set(result["test_result"]) == {"ndcg@10", "hit@10"}
    checkpoint = load_checkpoint(result["model_file"])
    assert checkpoint["best_valid_score"] == pytest.approx(result["best_valid_score"])
    losses = list(result["train_loss"].values())
    assert len(losses) == 4

    # Re-evaluate on validation with the reloaded checkpoint: same numbers as the best epoch.
    from recbole.data import data_preparation

    from recbole_tfllmer.data import create_dataset
    from recbole_tfllmer.quick_start import build_model

    config = build_config("SASRec", name, config_dict=slice_config(data_path, name, in_tmp, seed=7))
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    trainer = build_trainer(config, build_model(config, train_data))
    valid_result = trainer.evaluate(valid_data, load_best_model=True, model_file=result["model_file"])
    assert dict(valid_result) == pytest.approx(dict(result["best_valid_result"]))
    # And the plugin's checkpoints are plain data: torch's strictest loader accepts them.
    torch.load(result["model_file"], weights_only=True)


def test_runs_started_in_the_same_second_get_their_own_log_and_checkpoint(ml_slice, tmp_path, in_tmp):
    """RecBole names both by the time to the second; two runs from one directory must not share them."""
    from recbole_tfllmer.quick_start import prepare
    from tests.conftest import slice_config

    data_path, name = ml_slice
    runs = [prepare(build_config("TFLLMER", name, config_dict=slice_config(data_path, name, tmp_path))) for _ in "ab"]
    assert runs[0].trainer.saved_model_file != runs[1].trainer.saved_model_file
    assert all(f"-{r.config['run_id']}.pth" in r.trainer.saved_model_file for r in runs)
    # RecBole's log file is <model>-<dataset>-<time>-<md5 of the config values>.log
    config_strings = ["".join(str(v) for v in r.config.final_config_dict.values()) for r in runs]
    assert config_strings[0] != config_strings[1]
