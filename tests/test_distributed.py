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


@pytest.mark.parametrize("solver", ["exact", "iterative"])
def test_sharded_pca_over_two_ranks_equals_pca_of_the_whole_catalogue(solver, tmp_path):
    """`torchrun --nproc_per_node 2 -m recbole_tfllmer.tfllmer.sharded_pca`: each rank memory-maps its
    rows, the sums are all-reduced, and the written vectors are the one-process PCA's."""
    import subprocess
    import sys

    import numpy as np

    from recbole_tfllmer.tfllmer.rec_pca import rec_pca_projection

    rng = np.random.default_rng(5)
    X = (rng.standard_normal((301, 40)) @ rng.standard_normal((40, 40)) + 3.0).astype(np.float32)
    np.save(tmp_path / "vectors.npy", X)
    (tmp_path / "vectors.tokens.txt").write_text("".join(f"item{i}\n" for i in range(301)), encoding="utf-8")
    output = tmp_path / "reduced.npy"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "recbole_tfllmer.tfllmer.sharded_pca", "--input", str(tmp_path / "vectors.npy")]
    command += ["--output", str(output), "--components", "6", "--row-normalize", "--solver", solver]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"301 x 6 PCA vectors from 2 ranks ({solver} solver" in done.stdout
    expected = rec_pca_projection(X, None, 6, alpha=0.0, row_normalize=True, solver=solver, tol=1e-5).embeddings
    reduced = np.load(output)
    signs = np.sign(np.sum(reduced * expected, axis=0))
    np.testing.assert_allclose(reduced, expected * signs, atol=1e-4 * np.abs(expected).max())
    names = sorted(p.name for p in tmp_path.iterdir())  # no partial file left; the tokens travel along
    assert names == ["reduced.npy", "reduced.tokens.txt", "vectors.npy", "vectors.tokens.txt"]
    assert (tmp_path / "reduced.tokens.txt").read_bytes() == (tmp_path / "vectors.tokens.txt").read_bytes()


def test_sharded_pca_refuses_without_a_process_group_or_input(tmp_path, capsys):
    import numpy as np

    from recbole_tfllmer.tfllmer.sharded_pca import main, shard_rows, sharded_pca

    assert [shard_rows(10, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 7), slice(7, 10)]
    with pytest.raises(ValueError, match="needs an initialised torch.distributed process group"):
        sharded_pca(np.ones((4, 3)), 2)
    assert main(["--input", str(tmp_path / "missing.npy"), "--output", str(tmp_path / "z.npy")]) == 2
    assert "--input" in capsys.readouterr().err and not (tmp_path / "z.npy").exists()
