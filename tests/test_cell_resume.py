"""A board killed in the middle of a cell continues that cell and gets the uninterrupted result."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from recbole_tfllmer.leaderboard.progress import CellProgress
from recbole_tfllmer.leaderboard.store import CellStore

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 40


def board(tmp_path, data_path, dataset):
    spec = {
        "name": "resume",
        "datasets": {
            dataset: {
                "properties": str(REPO / "properties" / "ml-100k.yaml"),
                "overrides": {"data_path": str(data_path), "dataset": dataset},
            }
        },
        "backbones": ["GRU4Rec"],
        "methods": ["RandInit"],
        "seeds": [3],
        "overrides": {
            "epochs": EPOCHS,
            "stopping_step": EPOCHS,
            "eval_step": 1,
            "MAX_ITEM_LIST_LENGTH": 10,
            "train_batch_size": 64,
            "eval_batch_size": 256,
            "embedding_size": 16,
            "hidden_size": 16,
            "metric_decimal_place": 10,
            "show_progress": False,
            "use_gpu": False,
            "save_dataset": False,
            "save_dataloaders": False,
        },
        "conditioning": {"sample_size": 16, "seed": 0},
        "longtail": {"buckets": 2, "k": 10},
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def command(spec_path, results, workdir):
    return [
        sys.executable,
        "-m",
        "recbole_tfllmer.leaderboard",
        "--config",
        str(spec_path),
        "--results-root",
        str(results),
        "--workdir",
        str(workdir),
        "--threads",
        "1",
        "--no-plots",
    ]


def run_to_end(argv, cwd, env):
    subprocess.run(
        argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300
    )


def saved_epoch(path):
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not written yet, or replaced while we read it
        return -1


def test_killed_board_resumes_mid_cell_with_the_uninterrupted_result(tmp_path):
    from tests.conftest import write_ml100k_slice

    data_path, dataset = write_ml100k_slice(tmp_path / "data", n_users=150)
    spec_path = board(tmp_path, data_path, dataset)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cell_id = f"{dataset}__GRU4Rec__RandInit__none__seed3"

    # the interrupted board: SIGKILL to the whole process group once a few evaluations are saved
    workdir = tmp_path / "work-killed"
    progress = CellProgress(workdir, cell_id, None).path
    proc = subprocess.Popen(
        command(spec_path, tmp_path / "results-killed", workdir),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    killed_after = -1
    while time.monotonic() < deadline and proc.poll() is None:
        killed_after = saved_epoch(progress) if progress.exists() else -1
        if killed_after >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert 2 <= killed_after < EPOCHS - 1, "the board was not killed in the middle of its cell"
    assert not CellStore(tmp_path / "results-killed" / "resume").is_done(cell_id)

    # --list tells a paused cell (progress file, the claiming worker dead) from a fresh one, and where it stands
    listing = subprocess.run(
        command(spec_path, tmp_path / "results-killed", workdir) + ["--list"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    line = next(row for row in listing.splitlines() if cell_id in row)
    assert line.startswith(f"paused  {cell_id}  (epoch "), line
    listed_epochs = int(line.split("(epoch ")[1].split()[0])
    assert killed_after + 1 <= listed_epochs < EPOCHS and f"of at most {EPOCHS} done" in line
    assert f"/{EPOCHS} evaluations since" in line and "s per epoch lately" in line

    # restart: the same command continues the cell from its last evaluation
    run_to_end(command(spec_path, tmp_path / "results-killed", workdir), tmp_path, env)
    resumed = CellStore(tmp_path / "results-killed" / "resume").read(cell_id)
    assert not progress.exists(), "the progress file is removed once the cell is stored"

    # the uninterrupted board
    run_to_end(command(spec_path, tmp_path / "results-whole", tmp_path / "work-whole"), tmp_path, env)
    whole = CellStore(tmp_path / "results-whole" / "resume").read(cell_id)

    assert whole["resumes"] == []
    assert [r["after_epoch"] for r in resumed["resumes"]] and resumed["resumes"][0]["after_epoch"] >= killed_after
    assert resumed["epochs_run"] == whole["epochs_run"] == EPOCHS
    assert len(resumed["epoch_train_seconds"]) == EPOCHS
    assert resumed["valid_scores"] == whole["valid_scores"]
    assert resumed["train_loss"] == whole["train_loss"]
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert resumed["test"] == whole["test"]
    assert resumed["test_ranks"] == whole["test_ranks"]
    assert resumed["conditioning"]["init"] == whole["conditioning"]["init"]


def test_a_finished_cell_whose_export_is_gone_replays_to_its_best_epoch_and_exports_the_same_model(
    ml_slice, tmp_path, in_tmp, capsys
):
    import numpy as np

    from recbole_tfllmer.leaderboard import command
    from tests.conftest import run_tiny_board, slice_config

    data_path, name = ml_slice
    board = {
        "name": "replay",
        "backbones": ["SASRec"],
        "methods": ["RandInit", "LLMEmb"],  # LLMEmb aligns with RandInit's exported table
        "seeds": [3],
        "vector_kinds": ["st"],
        "overrides": {"epochs": 6, "stopping_step": 1},
        "method_overrides": {"LLMEmb": {"llmemb_scft": False, "llmemb_pca_dim": 32}},
        "conditioning": {"sample_size": 16},
    }
    store, results, board_file = run_tiny_board(
        tmp_path, slice_config(data_path, name, tmp_path, metric_decimal_place=10), board
    )
    source = f"{name}__SASRec__RandInit__none__seed3"
    table, checkpoint = results / "artifacts" / f"{source}.npy", results / "artifacts" / f"{source}.pth"
    original = store.read(source)
    original_table = np.load(table)
    original_weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    best = original["best_epoch_loaded"]
    args = ["--config", str(board_file), "--results-root", str(tmp_path / "results"), "--workdir", str(tmp_path / "w")]

    dependent = store.cells_dir / f"{name}__SASRec__LLMEmb__st__seed3.json"

    def lose_exports_and_rerun():
        table.unlink()
        checkpoint.unlink()
        capsys.readouterr()
        if dependent.exists():  # every cell finished: nothing still to run needs the exports
            assert command.main([*args, "--list"]) == 0
            assert f"done    {source}" in capsys.readouterr().out.splitlines()
            dependent.unlink()  # as if LLMEmb had been added to the board after RandInit ran
        assert command.main([*args, "--list"]) == 0
        listing = capsys.readouterr().out
        assert command.main([*args, "--in-process", "--no-plots", "--only", "method=RandInit"]) == 0
        assert np.array_equal(np.load(table), original_table)
        weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        assert weights.keys() == original_weights.keys()
        assert all(torch.equal(weights[k], original_weights[k]) for k in weights)
        return listing, store.read(source)

    # the recorded curve is reproduced exactly: training stops at the best epoch, the record stays
    listing, replayed = lose_exports_and_rerun()
    expected = f"rerun   {source}  (finished, but a cell still to run needs its export {source}.npy: "
    assert f"{expected}replays up to its best epoch {best}, last)" in listing
    note = replayed.pop("export_replays")
    assert replayed == original
    assert len(note) == 1 and note[0]["epochs"] == best + 1 and note[0]["valid_scores_equal"] and note[0]["test_equal"]

    # a curve the code no longer reproduces (here: a tampered record) makes the replay a full run
    tampered = dict(original, valid_scores=[dict(v) for v in original["valid_scores"]])
    tampered["valid_scores"][0]["score"] += 1e-3
    store.write(source, tampered)
    _, rerun = lose_exports_and_rerun()
    assert "export_replays" not in rerun and rerun["replay_diverged_at"] == 0
    assert rerun["valid_scores"] == original["valid_scores"] and rerun["test"] == original["test"]
    assert rerun["epochs_run"] == original["epochs_run"]
