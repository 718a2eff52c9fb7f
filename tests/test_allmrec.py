"""A-LLMRec in the pipeline: the frozen collaborative model, stage 1 against a recomputation,
stage 2 with a tiny config-built OPT, RecBole's candidate evaluation, and its option errors.

The LM here is a 2-layer OPT built from a config with the MiniLM tokenizer (nothing is
downloaded): it checks the plumbing (soft tokens, likelihood ranking, generation), not accuracy.
"""

import os

import numpy as np
import pytest
import torch

from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.quick_start import build_config, prepare, run_tfllmer
from tests.conftest import run_tiny_board, slice_config, write_ml100k_slice, write_tiny_opt

CANDIDATES = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni19"}


def candidate_config(data_path, name, tmp_path, **overrides):
    options = {
        "eval_args": CANDIDATES,
        "metrics": ["Hit", "NDCG"],
        "topk": [1, 5, 10],
        "allmrec_title_field": "movie_title",
        "allmrec_latent_dim": 16,
        "allmrec_stage1_epochs": 2,
        "allmrec_stage1_batch_size": 16,
        "allmrec_stage1_lr": 1e-3,
        **overrides,
    }
    return slice_config(data_path, name, tmp_path, **options)


@pytest.fixture(scope="module")
def small_slice(tmp_path_factory):
    return write_ml100k_slice(tmp_path_factory.mktemp("allmrec-data"), n_users=15)


def train_cf(data_path, name, root):
    """A one-epoch RandInit SASRec (hidden 32): A-LLMRec's frozen collaborative model."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        config = slice_config(data_path, name, root, item_init="random", item_norm="none")
        return run_tfllmer("TFLLMER", name, config_dict=config)["model_file"]
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def cf_checkpoint(small_slice, tmp_path_factory):
    return train_cf(*small_slice, tmp_path_factory.mktemp("cf"))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return str(write_tiny_opt(tmp_path_factory.mktemp("tiny-opt")))


def build(small_slice, tmp_path, cf_checkpoint, **overrides):
    data_path, name = small_slice
    config = build_config(
        "ALLMRec",
        name,
        config_dict=candidate_config(data_path, name, tmp_path, allmrec_cf_checkpoint=cf_checkpoint, **overrides),
    )
    return prepare(config)


def test_stage1_terms_match_a_recomputation_and_the_collaborative_model_stays_frozen(
    small_slice, tmp_path, cf_checkpoint
):
    from torch.nn import functional as F

    run = build(small_slice, tmp_path, cf_checkpoint)
    model = run.model
    cf_before = {k: v.clone() for k, v in model.cf.model.state_dict().items()}
    sample, seen = model._user_samples(run.train_data._dataset)
    assert len(seen) == 15 and all(int(t) in s for t, s in zip(sample["item_id"], seen))
    users = model.cf.user_vectors(sample)
    positives, negatives = (
        sample["item_id"],
        torch.tensor([next(i for i in range(1, model.n_items) if i not in s) for s in seen]),
    )
    loss, terms = model._stage1_batch(users, positives, negatives)
    align, e, q = model.alignment, model.cf.item_vectors, model.text_vectors
    expected = 0.0
    for items, label in ((positives, 1.0), (negatives, 0.0)):
        z, t = align.item_encoder(e[items]), align.text_encoder(q[items])
        decoded = align.item_decoder(z)
        logits = (users * decoded).sum(-1) / e.shape[1]
        expected = expected + F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))
        expected = expected + F.mse_loss(z, t) + 0.5 * F.mse_loss(decoded, e[items])
        expected = expected + 0.2 * F.mse_loss(align.text_decoder(t), q[items])
    torch.testing.assert_close(loss, expected)
    assert set(terms) == {"rec", "match", "item", "text"}
    losses = model.train_stage1(run.train_data._dataset, log=lambda m: None)
    assert len(losses) == 2 and all(np.isfinite(losses))
    for key, value in model.cf.model.state_dict().items():
        assert torch.equal(value, cf_before[key]), key


def test_stage1_only_run_ranks_recboles_candidates_with_the_same_candidates_for_every_method(
    small_slice, in_tmp, cf_checkpoint
):
    """Without an LM, ALLMRec scores the 20 candidates with stage 1's recommendation head; the
    candidate lists are the ones a TFLLMER run is scored on (same candidate_seed)."""
    data_path, name = small_slice
    config = candidate_config(data_path, name, in_tmp, allmrec_cf_checkpoint=cf_checkpoint)
    run = prepare(build_config("ALLMRec", name, config_dict=config))
    run.trainer.fit(run.train_data, run.valid_data, saved=False, verbose=False)
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    result = run.trainer.evaluate(run.test_data, load_best_model=False)
    assert (np.random.get_state()[1] == state).all()  # training randomness untouched
    assert set(result) == {"hit@1", "hit@5", "hit@10", "ndcg@1", "ndcg@5", "ndcg@10"}
    other = prepare(
        build_config("TFLLMER", name, config_dict=candidate_config(data_path, name, in_tmp, item_init="pca"))
    )
    other.trainer.evaluate(other.test_data, load_best_model=False)
    assert other.trainer.candidate_hashes["test"] == run.trainer.candidate_hashes["test"]
    assert run.trainer.candidate_hashes["valid"] != run.trainer.candidate_hashes["test"]


def test_stage2_trains_only_the_projections_and_ranks_candidates_by_title_likelihood(
    small_slice, in_tmp, cf_checkpoint, tiny_lm
):
    data_path, name = small_slice
    config = candidate_config(
        data_path,
        name,
        in_tmp,
        allmrec_cf_checkpoint=cf_checkpoint,
        allmrec_llm=tiny_lm,
        allmrec_stage1_epochs=1,
        allmrec_stage2_epochs=1,
        allmrec_stage2_batch_size=4,
        allmrec_max_new_tokens=6,
    )
    run = prepare(build_config("ALLMRec", name, config_dict=config))
    lm_before = {k: v.clone() for k, v in run.model.soft_prompt.lm.model.state_dict().items()}
    projections_before = {k: v.clone() for k, v in run.model.soft_prompt.state_dict().items()}
    run.trainer.fit(run.train_data, run.valid_data, saved=True, verbose=False)
    for key, value in run.model.soft_prompt.lm.model.state_dict().items():
        assert torch.equal(value, lm_before[key]), key
    changed = [k for k, v in run.model.soft_prompt.state_dict().items() if not torch.equal(v, projections_before[k])]
    assert changed and all(k.split(".")[0] in ("user_projection", "item_projection") for k in changed)
    result = run.trainer.evaluate(run.test_data, load_best_model=False)
    assert 0 <= result["hit@1"] <= 1 and 0 <= result["hit@1_gen"] <= 1 and "ndcg@10" in result
    # the scores are the LM's title log-likelihoods (negative), per candidate
    batch = next(iter(run.test_data))[0]
    scores = run.model.predict(batch)
    assert scores.shape == (len(batch),) and torch.all(scores < 0)
    # the checkpoint holds the trained projections but not the frozen LM
    saved = torch.load(run.trainer.saved_model_file, weights_only=True)["state_dict"]
    assert any(k.startswith("soft_prompt.") for k in saved) and not any(".lm." in k for k in saved)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({}, "set `allmrec_cf_checkpoint` to the .pth of an ID-only backbone"),
        (
            {"allmrec_cf_checkpoint": "/nonexistent.pth"},
            "option `allmrec_cf_checkpoint`: checkpoint '/nonexistent.pth'",
        ),
        (
            {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}, "allmrec_llm": "."},
            "set `eval_args.mode: uni19`",
        ),
        (
            {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "pop49"}},
            "without `allmrec_llm`, stage 1 alone also ranks every item (`mode: full`)",
        ),
        (
            {"allmrec_llm": "/no/such/lm"},
            "model directory '/no/such/lm' does not exist (a local path; nothing is downloaded); to train a small "
            "stand-in LM on the item text here: recbole-tfllmer train-local-lm --config_files <your properties> "
            "--out /no/such/lm",
        ),
        ({"allmrec_domain": "book"}, "option `allmrec_domain` must be one of item, movie, game"),
    ],
)
def test_bad_options_fail_before_any_data_is_read(overrides, message, small_slice, tmp_path, cf_checkpoint):
    data_path, name = small_slice
    options = {"allmrec_cf_checkpoint": cf_checkpoint, **overrides} if overrides else {}
    with pytest.raises(ConfigError) as err:
        build_config("ALLMRec", name, config_dict=candidate_config(data_path, name, tmp_path, **options))
    assert message in str(err.value)


def test_a_collaborative_model_of_other_data_is_refused(small_slice, tmp_path, ml_slice):
    other = train_cf(*ml_slice, tmp_path)  # the 60-user slice, same dataset name: other items
    with pytest.raises(ConfigError, match="another version or filtering"):
        build(small_slice, tmp_path, other)


def test_candidate_board_scores_every_method_on_the_same_candidates_and_freezes_the_randinit_cell(
    small_slice, tmp_path, in_tmp
):
    from recbole_tfllmer.leaderboard.paired import decode_ranks, per_user_metric

    data_path, name = small_slice
    base = candidate_config(data_path, name, tmp_path, metric_decimal_place=10, allmrec_stage1_epochs=1)
    board = {
        "name": "cand-tiny",
        "backbones": ["GRU4Rec"],
        "collab_backbone": "GRU4Rec",
        "methods": ["ALLMRec-stage1", "TFLLMER", "RandInit"],
        "seeds": [4],
        "vector_kinds": ["st"],
        "overrides": {"epochs": 1},
    }
    store, results, _ = run_tiny_board(tmp_path, base, board)
    records = {
        m: store.read(f"{name}__GRU4Rec__{m}__{v}__seed4")
        for m, v in (("ALLMRec-stage1", "st"), ("TFLLMER", "st"), ("RandInit", "none"))
    }
    source = results / "artifacts" / f"{name}__GRU4Rec__RandInit__none__seed4.pth"
    assert source.is_file() and records["ALLMRec-stage1"]["config_overrides"]["allmrec_cf_checkpoint"] == str(source)
    hashes = {m: r["candidates"]["test"] for m, r in records.items()}
    assert len(set(hashes.values())) == 1  # the same 20 candidates per user for every method
    for record in records.values():
        assert record["status"] == "done" and record["conditioning"] is None and record["longtail"] is None
        ranks = decode_ranks(record["test_ranks"])
        assert len(ranks) == 15 and ranks.min() >= 1 and ranks.max() <= 20
        assert per_user_metric(ranks, "ndcg@10").mean() == pytest.approx(record["test"]["ndcg@10"], abs=1e-9)
    assert (results / "leaderboard.md").is_file()


def test_stage1_can_fine_tune_the_text_encoder_on_raw_item_text(small_slice, tmp_path, cf_checkpoint):
    run = build(
        small_slice,
        tmp_path,
        cf_checkpoint,
        allmrec_finetune_text_encoder=True,
        text_encoder_type="transformers",
        text_max_length=32,
        allmrec_stage1_epochs=1,
    )
    model = run.model
    assert not hasattr(model, "text_vectors") and model.text_encoder.dim == 384
    assert model.text_encoder.texts[1].startswith("Title: ")  # the data hook's template
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    losses = model.train_stage1(run.train_data._dataset, log=lambda m: None)
    assert np.isfinite(losses[0])
    changed = [k for k, v in model.text_encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the encoder trained with the autoencoders


def test_cli_runs_allmrec_with_the_candidate_properties_file(small_slice, in_tmp, cf_checkpoint, capsys):
    """`run_recbole_tfllmer.py -m ALLMRec --config_files "<dataset>.yaml properties/candidates.yaml"`."""
    import yaml

    from recbole_tfllmer.cli import main
    from tests.conftest import REPO_ROOT

    data_path, name = small_slice
    dataset_file = in_tmp / "slice.yaml"
    config = slice_config(data_path, name, in_tmp, allmrec_title_field="movie_title", allmrec_latent_dim=16)
    config.pop("eval_args"), config.pop("topk"), config.pop("metrics")
    dataset_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    files = f"{dataset_file} {REPO_ROOT / 'properties' / 'candidates.yaml'}"
    argv = ["-m", "ALLMRec", "-d", name, f"--config_files={files}", f"--allmrec_cf_checkpoint={cf_checkpoint}"]
    assert main([*argv, "--allmrec_stage1_epochs=1"]) == 0
    # without an LLM, stage 1 alone also runs on the full-ranking protocol (its head scores every item)
    config["eval_args"] = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}
    dataset_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main([*argv[:4], f"--config_files={dataset_file}", argv[5], "--allmrec_stage1_epochs=1"]) == 0
    assert "recbole-tfllmer: error" not in capsys.readouterr().err


def test_joint_item_vectors_export_as_an_item_table_for_any_backbone(small_slice, in_tmp, cf_checkpoint):
    """ALLMRec-S1 on a full-ranking board: stage 1's joint vectors, exported by token, initialise
    another backbone through `precomputed_embeddings` (items the CF model never trained on get
    the text side)."""
    from recbole_tfllmer.cli import main

    data_path, name = small_slice
    config = candidate_config(data_path, name, in_tmp, allmrec_cf_checkpoint=cf_checkpoint, allmrec_stage1_epochs=1)
    result = run_tfllmer("ALLMRec", name, config_dict=config)
    out = in_tmp / "joint.npy"
    assert main(["export-item-table", result["model_file"], str(out)]) == 0
    table = np.load(out)
    assert table.shape[1] == 16 and np.isfinite(table).all()
    full = slice_config(
        data_path,
        name,
        in_tmp,
        precomputed_embeddings=str(out),
        item_init="pca",
        item_norm="none",
        hidden_size=8,
        embedding_size=8,
    )
    run = prepare(build_config("TFLLMER", name, config_dict=full))
    assert run.model.init_report.rec_pca["retained_variance"] > 0


def test_full_ranking_board_runs_the_chain_randinit_then_stage1_then_backbones_from_its_joint_table(
    small_slice, tmp_path, in_tmp
):
    """`table_sources: {ALLMRec-S1: ALLMRec-stage1}`: RandInit SASRec -> ALLMRec stage 1 (frozen on it,
    ranking every item with its head) -> SASRec and GRU4Rec initialised from its exported z_i."""
    data_path, name = small_slice
    base = slice_config(
        data_path,
        name,
        tmp_path,
        metric_decimal_place=10,
        allmrec_title_field="movie_title",
        allmrec_latent_dim=64,
        allmrec_stage1_epochs=1,
    )
    board = {
        "name": "s1-tiny",
        "backbones": ["SASRec", "GRU4Rec"],
        "methods": ["RandInit", "ALLMRec-stage1", "ALLMRec-S1"],
        "table_sources": {"ALLMRec-S1": "ALLMRec-stage1"},
        "seeds": [4],
        "vector_kinds": ["st"],
        "overrides": {"epochs": 1},
    }
    store, results, _ = run_tiny_board(tmp_path, base, board)
    cells = sorted(p.stem for p in (results / "cells").glob("*.json"))
    assert cells == sorted(
        f"{name}__{b}__{m}__seed4"
        for b, m in [
            ("SASRec", "RandInit__none"),
            ("GRU4Rec", "RandInit__none"),
            ("SASRec", "ALLMRec-stage1__st"),  # A-LLMRec's backbone is its frozen model's: no GRU4Rec copy
            ("SASRec", "ALLMRec-S1__st"),
            ("GRU4Rec", "ALLMRec-S1__st"),
        ]
    )
    stage1 = store.read(f"{name}__SASRec__ALLMRec-stage1__st__seed4")
    assert stage1["status"] == "done" and stage1["conditioning"] is None  # no per-batch loss to differentiate
    assert stage1["longtail"] is not None and 0 <= stage1["test"]["ndcg@10"] <= 1  # ranked every item
    joint = results / "artifacts" / f"{name}__SASRec__ALLMRec-stage1__st__seed4.npy"
    assert joint.is_file() and np.load(joint).shape[1] == 64  # z_i, keyed by item token
    for backbone in ("SASRec", "GRU4Rec"):
        record = store.read(f"{name}__{backbone}__ALLMRec-S1__st__seed4")
        assert record["status"] == "done" and record["config_overrides"]["precomputed_embeddings"] == str(joint)
