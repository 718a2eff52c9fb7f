"""Distributed training on CPUs: `--nproc=2` without a GPU joins a gloo group (RecBole's own DDP
path is NCCL-only). Two real worker processes train TFLLMER for one epoch on a small slice."""

import os

import pytest

from recbole_tfllmer.quick_start import run
from tests.conftest import slice_config, write_ml100k_slice


@pytest.mark.parametrize(
    "model, options",
    [
        ("TFLLMER", {}),
        # LLMEmb's adapter is a parametrisation of the item table, like the normalisation: DDP syncs its weights
        ("LLMEmb", {"llmemb_scft": False, "llmemb_align_alpha": 0.0, "llmemb_pca_dim": 32, "item_norm": "always"}),
    ],
)
def test_two_cpu_workers_prepare_once_and_report_the_same_test_metrics(model, options, tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine --nproc uses RecBole's NCCL path")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data_path, name = write_ml100k_slice(tmp_path / "data", n_users=40)
    config = slice_config(
        data_path, name, tmp_path, backbone="GRU4Rec", embedding_cache_dir=str(tmp_path / "cache"), **options
    )
    result = run(model, name, config_dict=config, nproc=2, port=str(29500 + os.getpid() % 400 + len(options)))
    ranks = result["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["test_result"] == ranks[1]["test_result"] == result["test_result"]
    # the text embeddings were encoded by one worker; the other waited on the cache lock and hit it
    encoded = sorted(r["embedding_info"]["n_encoded"] for r in ranks)
    assert encoded == [0, ranks[0]["embedding_info"]["n_items"]] or encoded == [
        0,
        ranks[1]["embedding_info"]["n_items"],
    ]
    assert len({r["embedding_info"]["cache_file"] for r in ranks}) == 1
    assert len(list((tmp_path / "cache").glob("*.emb.npy"))) == 1
    # one checkpoint, written by rank 0 and read back by both for the test evaluation
    checkpoints = list((tmp_path / "saved").glob("*.pth"))
    assert len(checkpoints) == 1 and result["model_file"] == str(checkpoints[0])
