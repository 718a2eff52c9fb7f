"""Run one leaderboard cell with run_tfllmer's building blocks and return its record.

Steps (the same as `quick_start.run_tfllmer`): build_config -> create_dataset ->
data_preparation -> build_model -> build_trainer -> Trainer.fit (best model by the
validation metric) -> Trainer.evaluate(test). Around them the runner records what the
leaderboard needs: loss and validation score per epoch, epoch times, preprocessing times,
peak memory, the Hessian conditioning diagnostic on a fixed sample of training rows (at
initialisation and for the best model), and per-user test ranks for the long-tail table.

`python -m recbole_tfllmer.leaderboard.runner JOB.json` runs one job file in a fresh
process (what the leaderboard command does per cell, so peak memory is per cell and a
crash loses one cell only).
"""

import json
import logging
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from logging import getLogger
from pathlib import Path

import numpy as np
import torch

RECORD_VERSION = 1


def peak_rss_mb():
    """Peak resident memory of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # pragma: no cover
        return None


def conditioning_sample(train_dataset, sample_size, seed):
    """A fixed sample of training rows: `sample_size` indices drawn without replacement by a
    numpy Generator of its own (the global RNG is untouched), sorted."""
    n = len(train_dataset)
    size = min(int(sample_size), n)
    rng = np.random.default_rng(int(seed))
    idx = np.sort(rng.choice(n, size=size, replace=False))
    return idx, train_dataset.inter_feat[torch.as_tensor(idx)]


@torch.no_grad()
def sequence_vectors(model, interaction):
    """h as full_sort_predict uses it (see TFLLMER.sequence_representation)."""
    return model.sequence_representation(interaction)


@torch.no_grad()
def conditioning_stats(model, interaction, exclude_rows=(0,)):
    """Mean / median / quantiles of the softmax-CE Hessian condition number over the sample,
    plus the item-norm spread that drives it."""
    from recbole_tfllmer.diagnostics.conditioning import hessian_condition_numbers

    was_training = model.training
    model.eval()
    try:
        h = sequence_vectors(model, interaction.to(next(model.parameters()).device))
        items = model.scoring_item_vectors()
        kappa = hessian_condition_numbers(h, items, exclude_rows=exclude_rows)
        kappa = kappa.detach().double().cpu().numpy()
        norms = items[1:].norm(dim=1).detach().double().cpu().numpy()
    finally:
        model.train(was_training)
    finite = kappa[np.isfinite(kappa)]
    return {
        "n": int(kappa.size),
        "n_finite": int(finite.size),
        "mean": float(finite.mean()) if finite.size else None,
        "median": float(np.median(finite)) if finite.size else None,
        "q10": float(np.quantile(finite, 0.1)) if finite.size else None,
        "q90": float(np.quantile(finite, 0.9)) if finite.size else None,
        "log10_mean": float(np.log10(finite).mean()) if finite.size else None,
        "item_norm_mean": float(norms.mean()),
        "item_norm_std": float(norms.std()),
        "item_norm_cv": float(norms.std() / max(norms.mean(), 1e-12)),
        "h_norm_mean": float(h.norm(dim=-1).mean()),
    }


def code_fingerprint():
    """sha256 (16 hex) of the plugin's source files: which code produced a cell."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "leaderboard" in path.parts:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _metrics(result):
    return {str(k): float(v) for k, v in (result or {}).items()}


def run_cell(job, workdir=None):
    """Run one cell described by `job` (see LeaderboardRunner.job) and return its record."""
    from recbole.data import data_preparation
    from recbole.utils import init_logger, init_seed

    from recbole_tfllmer.data import create_dataset
    from recbole_tfllmer.leaderboard.longtail import (bucket_metrics, full_sort_ranks, hit_at_k, ndcg_at_k,
                                                   training_popularity)
    from recbole_tfllmer.quick_start import build_config, build_model, build_trainer

    start = time.perf_counter()
    own_tmp = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="tfllmer-cell-"))
    checkpoint_dir = workdir / "saved" / job["cell_id"]
    config_dict = dict(job["config_dict"], checkpoint_dir=str(checkpoint_dir))
    try:
        config = build_config(config_file_list=list(job["config_files"]), config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        if job.get("init_logger", True):
            init_logger(config)
        logger = getLogger()

        t0 = time.perf_counter()
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        data_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        model = build_model(config, train_data)
        model_seconds = time.perf_counter() - t0
        trainer = build_trainer(config, model)

        cond_cfg = job.get("conditioning") or {"sample_size": 256, "seed": 0}
        sample_idx, sample = conditioning_sample(train_data._dataset, cond_cfg["sample_size"], cond_cfg["seed"])
        t0 = time.perf_counter()
        cond_init = conditioning_stats(model, sample)
        cond_seconds = time.perf_counter() - t0

        valid_scores = []  # epoch times: the plugin trainer's epoch_train/valid_seconds
        best_state = {}

        def on_epoch(epoch_idx, valid_score):
            valid_scores.append({"epoch": int(epoch_idx), "score": float(valid_score)})
            if trainer.cur_step == 0:  # early_stopping just reset: this epoch is the new best (RecBole's update_flag)
                best_state["epoch"] = int(epoch_idx)
                best_state["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            logger.info(f"[leaderboard] {job['cell_id']} epoch {epoch_idx} valid {valid_score:.5f}")

        t0 = time.perf_counter()
        # The best model is kept in memory (a state_dict snapshot taken when RecBole's early
        # stopping marks a new best), not in a checkpoint file: a cell never depends on the
        # checkpoint format, and nothing is left on disk.
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=False, show_progress=False, callback_fn=on_epoch, verbose=True
        )
        fit_seconds = time.perf_counter() - t0
        if best_state:
            model.load_state_dict(best_state["state_dict"])
        t0 = time.perf_counter()
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        test_seconds = time.perf_counter() - t0

        cond_end = conditioning_stats(model, sample)

        # long tail: our own full-sort pass over the test loader with the best model
        lt_cfg = job.get("longtail") or {"buckets": 5, "k": 10}
        k = int(lt_cfg.get("k", 10))
        topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
        ranks, targets = full_sort_ranks(trainer, test_data, max(topk))
        popularity = training_popularity(train_data._dataset)
        own = {}
        for kk in topk:
            own[f"ndcg@{kk}"] = float(ndcg_at_k(ranks, kk).mean())
            own[f"hit@{kk}"] = float(hit_at_k(ranks, kk).mean())
        diffs = [abs(v - float(test_result[m])) for m, v in own.items() if m in test_result]
        longtail = {
            "k": k,
            "buckets": bucket_metrics(ranks, popularity[targets], int(lt_cfg.get("buckets", 5)), k),
            "own_overall": own,
            "abs_diff": max(diffs) if diffs else None,
            "n_test_rows": int(len(ranks)),
            "metric_decimal_place": int(config["metric_decimal_place"]),
            "popularity": "times the item is a training target",
        }

        best_epoch = None
        if valid_scores:
            scores = [v["score"] for v in valid_scores]
            best_epoch = valid_scores[int(np.argmax(scores) if config["valid_metric_bigger"] else np.argmin(scores))]["epoch"]

        info = dict(getattr(model, "tfllmer_info", {}) or {})
        emb_info = getattr(dataset, "embedding_info", {}) or {}
        record = {
            "version": RECORD_VERSION,
            "status": "done",
            "cell_id": job["cell_id"],
            **job["cell"],
            "leaderboard": job.get("leaderboard"),
            "fingerprint": job.get("fingerprint"),
            "config_files": [str(f) for f in job["config_files"]],
            "config_overrides": job["config_dict"],
            "config": {
                key: config[key]
                for key in [
                    "model", "backbone", "dataset", "seed", "epochs", "stopping_step", "learning_rate",
                    "train_batch_size", "eval_batch_size", "MAX_ITEM_LIST_LENGTH", "hidden_size",
                    "embedding_size", "item_init", "item_norm", "item_norm_scale", "item_norm_learnable",
                    "init_scale", "rec_pca_lambda", "graph_window", "graph_weighting", "text_encoder",
                    "text_encoder_type", "text_pooling", "text_normalize", "valid_metric", "topk", "eval_args",
                    "loss_type", "reproducibility", "device",
                ]
                if key in config
            },
            "best_valid_score": float(best_valid_score),
            "best_valid": _metrics(best_valid_result),
            "test": _metrics(test_result),
            "best_epoch": best_epoch,
            "best_epoch_loaded": best_state.get("epoch"),
            "epochs_run": len(trainer.epoch_train_seconds),
            "train_loss": [float(trainer.train_loss_dict[e]) for e in sorted(trainer.train_loss_dict)],
            "train_loss_per_batch": [
                float(trainer.train_loss_dict[e]) / max(len(train_data), 1) for e in sorted(trainer.train_loss_dict)
            ],
            "valid_scores": valid_scores,
            "epoch_train_seconds": list(trainer.epoch_train_seconds),
            "epoch_valid_seconds": list(trainer.epoch_valid_seconds),
            "n_train_batches": len(train_data),
            "n_train_rows": len(train_data._dataset),
            "conditioning": {
                "sample_size": len(sample_idx),
                "sample_seed": cond_cfg["seed"],
                "init": cond_init,
                "end": cond_end,
            },
            "longtail": longtail,
            "timings": {
                "data_seconds": data_seconds,
                "model_build_seconds": model_seconds,
                "fit_seconds": fit_seconds,
                "test_seconds": test_seconds,
                "conditioning_seconds": cond_seconds,
                "cell_seconds": time.perf_counter() - start,
                **{f"embedding_{k}": v for k, v in emb_info.items() if isinstance(v, (int, float, bool))},
                **{k: v for k, v in info.items() if k.endswith("_seconds")},
            },
            "tfllmer_info": {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, dict))},
            "embedding_info": {k: v for k, v in emb_info.items() if isinstance(v, (int, float, str, bool))},
            "memory": {"peak_rss_mb": peak_rss_mb(), "end_rss_mb": current_rss_mb()},
            "code_fingerprint": code_fingerprint(),
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "host": platform.node(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }
        return record
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m recbole_tfllmer.leaderboard.runner JOB.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    from recbole_tfllmer.leaderboard.store import CellStore

    store = CellStore(job["results_dir"])
    try:
        record = run_cell(job, workdir=job.get("workdir"))
    except Exception:
        store.write_failure(job["cell_id"], {"cell_id": job["cell_id"], "job": job, "traceback": traceback.format_exc()})
        traceback.print_exc()
        return 1
    store.write(job["cell_id"], record)
    logging.getLogger().info(f"[leaderboard] wrote {store.cell_path(job['cell_id'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
