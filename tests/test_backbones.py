"""Every RecBole sequential model is either wrapped or refused with its reason, and every
supported backbone trains one epoch through the command line on a small real slice of
ml-100k with real MiniLM item embeddings.

The end-to-end runs go through `recbole_tfllmer.cli.main` in-process (a temp yaml with the
slice config, `--backbone=X` and `--key=value` overrides), in a temporary working directory
so RecBole's ./log and ./saved stay out of the repository. Model, data loaders and result are
observed by wrapping quick_start's own steps, so the code path is exactly the CLI's.
"""

import importlib
import logging
import math
import pkgutil
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch.nn.utils import parametrize

from recbole_tfllmer import cli, quick_start
from recbole_tfllmer.backbones import (
    SUPPORTED_BACKBONES,
    UNSUPPORTED_BACKBONES,
    backbone_spec,
    needs_sampled_negatives,
)
from recbole_tfllmer.errors import UnsupportedBackboneError
from recbole_tfllmer.item_tables import raw_item_weight
from tests.conftest import slice_config, write_ml100k_slice

DATASET = "ml-s30"
N_USERS = 30
MAX_INTERACTIONS_PER_USER = 40  # the earliest 40 of each user: one epoch is a handful of batches
NORM = 1.5  # item_norm_scale, not 1, so that "rows have the configured norm" means something

SMALL = {
    "MAX_ITEM_LIST_LENGTH": 8,
    "hidden_size": 16,
    "embedding_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "item_norm_scale": NORM,
}
INTER_COLUMNS = ["user_id", "item_id", "timestamp"]
ITEM_FEATURES = {"load_col": {"inter": INTER_COLUMNS, "item": ["item_id", "class"]}}
NEGATIVES = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}

# What a backbone needs beyond SMALL: tiny sizes its options allow, or what it needs to run.
BACKBONE_OPTIONS = {
    "NextItNet": {"block_num": 1},
    "FEARec": {"n_layers": 2},  # HybridAttention divides by n_layers - 1
    "SINE": {"prototype_size": 8},
    "TransRec": NEGATIVES,
    "GRU4RecF": ITEM_FEATURES,
    "SASRecF": ITEM_FEATURES,
    "FDSA": ITEM_FEATURES,
}
CE_ONLY = {"CORE"}  # raises NotImplementedError for BPR
PAIRWISE_ONLY = {"TransRec"}  # has no CE branch


# -- fixtures -----------------------------------------------------------------------------
def write_small_slice(root):
    """`write_ml100k_slice` with N_USERS users, cut to each user's earliest interactions."""
    data_path, name = write_ml100k_slice(root, DATASET, n_users=N_USERS)
    folder = Path(data_path) / name
    header, *rows = (folder / f"{name}.inter").read_text(encoding="utf-8").splitlines()
    by_user = {}
    for row in rows:
        by_user.setdefault(row.split("\t")[0], []).append(row)
    kept = []
    for user_rows in by_user.values():
        kept += sorted(user_rows, key=lambda r: float(r.split("\t")[3]))[:MAX_INTERACTIONS_PER_USER]
    (folder / f"{name}.inter").write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    items = {r.split("\t")[1] for r in kept}
    item_header, *item_rows = (folder / f"{name}.item").read_text(encoding="utf-8").splitlines()
    item_rows = [r for r in item_rows if r.split("\t")[0] in items]
    (folder / f"{name}.item").write_text("\n".join([item_header, *item_rows]) + "\n", encoding="utf-8")
    return data_path, name


@pytest.fixture(scope="module")
def cli_slice(tmp_path_factory):
    """(config yaml, dataset name): the slice config in a yaml, with one embedding cache for
    the whole module so MiniLM encodes the slice once."""
    shared = tmp_path_factory.mktemp("backbones")
    data_path, name = write_small_slice(shared / "data")
    config = slice_config(data_path, name, shared, **SMALL)
    config_file = shared / "slice.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    return config_file, name


def cli_args(cli_slice, backbone, workdir, **overrides):
    config_file, name = cli_slice
    options = {"checkpoint_dir": str(workdir / "saved"), **overrides}
    return [
        "-m",
        "TFLLMER",
        "-d",
        name,
        f"--config_files={config_file}",
        f"--backbone={backbone}",
        *[f"--{key}={value!r}" for key, value in options.items()],
    ]


@pytest.fixture
def observed(monkeypatch):
    """Record what the CLI's run builds and returns, without changing any step.

    Only one thing is sped up: RecBole's get_environment (logged after each run) samples the
    CPU load for a blocking second; it gets psutil's non-blocking reading instead.
    """
    import psutil

    cpu_percent = psutil.cpu_percent
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None, percpu=False: cpu_percent(None, percpu))
    seen = {}

    def wrap(name, record):
        original = getattr(quick_start, name)

        def wrapper(*args, **kwargs):
            value = original(*args, **kwargs)
            record(value)
            return value

        monkeypatch.setattr(quick_start, name, wrapper)

    wrap("data_preparation", lambda loaders: seen.update(zip(("train", "valid", "test"), loaders)))
    wrap("build_model", lambda model: seen.update(model=model))
    wrap("run_tfllmer", lambda result: seen.update(result=result))
    return seen


# -- the table is complete and its refusals are clear ---------------------------------------
def recbole_sequential_models():
    import recbole.model.sequential_recommender as package

    found = set()
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, SequentialRecommender)
                and value.__module__ == module.__name__
            ):
                found.add(value.__name__)
    return found


def test_every_recbole_sequential_model_is_in_exactly_one_table():
    models = recbole_sequential_models()
    assert len(models) >= 31  # RecBole 1.2.1 ships 31
    supported, unsupported = set(SUPPORTED_BACKBONES), set(UNSUPPORTED_BACKBONES)
    assert not supported & unsupported
    assert supported | unsupported == models, (
        f"missing from the table: {sorted(models - supported - unsupported)}; "
        f"not RecBole sequential models: {sorted((supported | unsupported) - models)}"
    )
    assert all(name == spec.name for name, spec in SUPPORTED_BACKBONES.items())


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_BACKBONES))
def test_unsupported_backbone_error_names_the_option_and_the_reason(name):
    with pytest.raises(UnsupportedBackboneError) as info:
        backbone_spec(name)
    message = str(info.value)
    assert f"backbone '{name}'" in message and UNSUPPORTED_BACKBONES[name] in message
    assert "Set `backbone` to one of: SASRec" in message


def test_unknown_backbone_is_rejected():
    with pytest.raises(UnsupportedBackboneError, match="'Pop' is not a RecBole sequential model"):
        backbone_spec("Pop")


def test_when_sampled_negatives_are_needed():
    def needs(name, loss_type):
        return needs_sampled_negatives(SUPPORTED_BACKBONES[name], {"loss_type": loss_type})

    assert needs("TransRec", "CE") and needs("GRU4Rec", "BPR") and needs("SINE", "BPR")
    assert not needs("GRU4Rec", "CE") and not needs("SINE", "CE")
    assert not needs("BERT4Rec", "BPR")  # its mask_itemseq transform draws them


def test_unsupported_backbone_fails_clearly_through_the_cli(cli_slice, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(cli_args(cli_slice, "FPMC", tmp_path)) == 2
    err = capsys.readouterr().err
    assert "error: backbone 'FPMC' is not supported by TFLLMER" in err
    assert "three separate item tables" in err and "Set `backbone` to one of:" in err


def test_pairwise_backbone_without_negatives_fails_clearly_through_the_cli(cli_slice, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(cli_args(cli_slice, "TransRec", tmp_path)) == 2  # the slice config sets `train_neg_sample_args: ~`
    err = capsys.readouterr().err
    assert "backbone 'TransRec' needs sampled negative items" in err and "`train_neg_sample_args`" in err


# -- one epoch per supported backbone through the CLI ----------------------------------------
@torch.no_grad()
def model_outputs(model, train_batch, test_batch, bpr):
    """calculate_loss (CE, and BPR where the backbone has it), predict and full_sort_predict,
    in eval mode (no dropout) and with fixed seeds (FEARec samples in its loss)."""
    backbone = model.backbone
    model.eval()
    outputs = {}
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    outputs["loss"] = model.calculate_loss(train_batch)
    if bpr and getattr(backbone, "loss_type", "BPR") != "BPR":
        # The BPR branch of the same calculate_loss: RecBole's backbones read `loss_type` at
        # every call and build `loss_fct` from it once, in __init__.
        saved = backbone.loss_type, getattr(backbone, "loss_fct", None)
        backbone.loss_type = "BPR"
        if saved[1] is not None:
            backbone.loss_fct = BPRLoss()
        random.seed(0), np.random.seed(0), torch.manual_seed(0)
        try:
            outputs["loss/BPR"] = model.calculate_loss(train_batch)
        finally:
            backbone.loss_type = saved[0]
            if saved[1] is not None:
                backbone.loss_fct = saved[1]
    outputs["predict"] = model.predict(test_batch)
    outputs["full_sort_predict"] = model.full_sort_predict(test_batch)
    return outputs


def assert_every_use_is_normalised(model, spec, train_data, test_data):
    """Rescale each raw row of the item table(s) by a random positive factor: if the backbone
    reads its items only through the normalising parametrization, nothing it computes changes."""
    train_batch = next(iter(train_data))
    if "neg_item_id" not in train_batch.interaction:  # random negatives for the BPR branch
        train_batch["neg_item_id"] = torch.randint(1, model.n_items, train_batch["item_id"].shape)
    test_batch = next(iter(test_data))[0]
    bpr = spec.name not in CE_ONLY
    before = model_outputs(model, train_batch, test_batch, bpr)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in spec.item_tables:
            raw = raw_item_weight(getattr(model.backbone, name))
            raw.mul_(torch.empty(raw.shape[0], 1).uniform_(0.25, 4.0, generator=generator))
    after = model_outputs(model, train_batch, test_batch, bpr)
    assert before.keys() == after.keys() and len(before) == (4 if bpr and spec.name not in PAIRWISE_ONLY else 3)
    for key in before:
        assert torch.isfinite(before[key]).all(), key
        torch.testing.assert_close(after[key], before[key], rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("backbone", list(SUPPORTED_BACKBONES))
def test_backbone_trains_one_epoch_through_the_cli(backbone, cli_slice, tmp_path, monkeypatch, observed, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    spec = SUPPORTED_BACKBONES[backbone]

    # the full method (a graph term), not the package default alpha 0, so that the graph is built
    options = {"rec_pca_alpha": 0.35, **BACKBONE_OPTIONS.get(backbone, {})}
    assert cli.main(cli_args(cli_slice, backbone, tmp_path, **options)) == 0

    # RecBole's test result is logged, and its metrics are finite.
    assert "test result" in caplog.text
    test_result = observed["result"]["test_result"]
    assert set(test_result) == {"ndcg@10", "hit@10"}
    assert all(math.isfinite(value) for value in test_result.values()), test_result
    assert math.isfinite(observed["result"]["train_loss"][0])

    # After training every item table row but padding has norm item_norm_scale.
    model = observed["model"]
    assert model.backbone_name == backbone and (model.init_report.graph_edges or 0) > 0
    input_table = spec.extra_tables[0] if spec.extra_tables else spec.item_table
    assert getattr(model.backbone, input_table).padding_idx == 0
    for name in spec.item_tables:
        table = getattr(model.backbone, name)
        assert parametrize.is_parametrized(table, "weight"), name
        weight = table.weight.detach()
        assert weight.shape[0] == model.n_items + spec.extra_rows
        assert not weight[0].any(), f"{name}: padding row is not zero"
        norms = weight[1:].norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, NORM), rtol=0, atol=1e-4)

    # Input lookups and every scoring path read the normalised table.
    assert_every_use_is_normalised(model, spec, observed["train"], observed["test"])


@pytest.mark.parametrize(
    "backbone, options",
    [("GRU4Rec", {"loss_type": "BPR"}), ("SASRec", {"loss_type": "BPR"}), ("TransRec", {}), ("SASRec", {})],
)
def test_configs_recbole_accepts_train_unchanged(cli_slice, backbone, options, tmp_path, monkeypatch, capsys):
    """RecBole's own sequential test configs set no `train_neg_sample_args`: BPR then samples
    RecBole's default negatives and CE samples none, through the wrapper as in plain RecBole."""
    config_file, name = cli_slice
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config.pop("train_neg_sample_args")
    own = tmp_path / "recbole-style.yaml"
    own.write_text(yaml.safe_dump({**config, **options, "epochs": 1}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert cli.main(cli_args((own, name), backbone, tmp_path)) == 0
    assert list((tmp_path / "saved").glob(f"TFLLMER-{backbone}-*.pth")), "trained and saved its best model"


@pytest.mark.parametrize("backbone", sorted(SUPPORTED_BACKBONES))
def test_width_option_is_the_option_that_sizes_the_item_table(backbone, cli_slice, tmp_path, monkeypatch):
    """The table's `width_option` is what the encoder-dimension check reads before any data."""
    from recbole_tfllmer.quick_start import build_config, prepare

    monkeypatch.chdir(tmp_path)
    config_file, name = cli_slice
    options = {**yaml.safe_load(config_file.read_text(encoding="utf-8")), **BACKBONE_OPTIONS.get(backbone, {})}
    options.update(backbone=backbone, item_init="random", item_norm="none", embedding_size=8, hidden_size=16)
    spec = SUPPORTED_BACKBONES[backbone]
    model = prepare(build_config("TFLLMER", name, config_dict=options), with_trainer=False).model
    assert getattr(model.backbone, spec.item_table).embedding_dim == options[spec.width_option]
