"""Run one leaderboard cell with run_tfllmer's building blocks and return its record.

Steps: quick_start.prepare (config -> dataset -> splits -> model -> trainer, as for every
run of the plugin) -> Trainer.fit (best model by the validation metric, progress saved after
every evaluation) -> Trainer.evaluate(test). Around them the runner records what the
leaderboard needs: loss and validation score per epoch, epoch times, preprocessing times,
peak memory, the Hessian conditioning diagnostic on a fixed sample of training rows (at
initialisation and for the best model), and per-user test ranks for the long-tail table.

`python -m recbole_tfllmer.leaderboard.runner JOB.json` runs one job file in a fresh
process (what the leaderboard command does per cell, so peak memory is per cell and a
crash loses one cell only).
"""

import json
import logging
import os
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
def conditioning_stats(model, interaction, exclude_rows=(0,)):
    """Mean / median / quantiles of the softmax-CE Hessian condition number over the sample,
    plus the item-norm spread that drives it."""
    from recbole_tfllmer.diagnostics.conditioning import hessian_condition_numbers
    from recbole_tfllmer.diagnostics.model_views import scoring_item_vectors, sequence_representation

    was_training = model.training
    model.eval()
    try:
        h = sequence_representation(model, interaction.to(next(model.parameters()).device))
        items = scoring_item_vectors(model)
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


RECORDED_CONFIG_KEYS = (
    "model",
    "backbone",
    "dataset",
    "seed",
    "epochs",
    "stopping_step",
    "eval_step",
    "learning_rate",
    "train_batch_size",
    "eval_batch_size",
    "MAX_ITEM_LIST_LENGTH",
    "hidden_size",
    "embedding_size",
    "item_init",
    "item_norm",
    "item_norm_scale",
    "item_norm_learnable",
    "init_scale",
    "rec_pca_alpha",
    "rec_pca_formulation",
    "graph_window",
    "graph_weighting",
    "text_encoder",
    "text_encoder_type",
    "text_pooling",
    "text_normalize",
    "llmemb_scft",
    "llmemb_pca_dim",
    "llmemb_align_alpha",
    "llmemb_align_tau",
    "scft_epochs",
    "scft_max_steps",
    "valid_metric",
    "topk",
    "eval_args",
    "loss_type",
    "reproducibility",
    "device",
)


class _FitLog:
    """What the runner records while RecBole's Trainer.fit runs, and carries across a resume."""

    def __init__(self, saved=None):
        saved = saved or {}
        self.valid_scores = list(saved.get("valid_scores", []))
        self.best_epoch = saved.get("best_epoch")
        self.best_state_dict = saved.get("best_state_dict")
        self.train_seconds = list(saved.get("epoch_train_seconds", []))
        self.valid_seconds = list(saved.get("epoch_valid_seconds", []))
        self.train_loss = {int(k): float(v) for k, v in (saved.get("train_loss") or {}).items()}
        self.fit_seconds = float(saved.get("fit_seconds", 0.0))
        self.stopped = bool(saved.get("stopped", False))
        self.resumes = list(saved.get("resumes", []))
        self.code_fingerprints = list(saved.get("code_fingerprints", []))
        self.cond_init = saved.get("cond_init")
        self.replay = dict(saved.get("replay") or {})  # an export replay's standing (_Replay)

    def state(self, trainer, fit_seconds):
        return {
            "valid_scores": self.valid_scores,
            "best_epoch": self.best_epoch,
            "best_state_dict": self.best_state_dict,
            "epoch_train_seconds": self.train_seconds + list(trainer.epoch_train_seconds),
            "epoch_valid_seconds": self.valid_seconds + list(trainer.epoch_valid_seconds),
            "train_loss": {int(k): float(v) for k, v in trainer.train_loss_dict.items()},
            "fit_seconds": fit_seconds,
            "stopped": self.stopped,
            "resumes": self.resumes,
            "code_fingerprints": self.code_fingerprints,
            "cond_init": self.cond_init,
            "replay": self.replay,
        }


class _ReplayReached(Exception):
    """Raised from the epoch callback to leave RecBole's fit at the replayed best epoch."""


class _Replay:
    """Training a finished cell again only as far as its recorded best epoch, to export its model.

    A cell that finished before another cell needed its export (its item table or checkpoint)
    has no weights left. Its training is deterministic (same seed, same shuffles, same dropout
    masks: what mid-cell resume relies on), so the best model comes back after best_epoch + 1
    epochs instead of the whole run with its patience tail. Every replayed validation score must
    equal the recorded one; at the first that does not (the code changed what it computes), the
    replay is dropped and the cell continues as a full run whose record replaces the old one."""

    def __init__(self, spec, fit_log):
        self.best_epoch = int(spec["best_epoch"])  # the epoch whose weights the record's test used
        self.recorded = {int(v["epoch"]): float(v["score"]) for v in spec["valid_scores"]}
        self.fit_log = fit_log
        fit_log.replay.setdefault("diverged_at", None)

    @property
    def active(self):
        return self.fit_log.replay.get("diverged_at") is None

    def reached(self, epoch_idx, valid_score):
        """Check this epoch against the record; True once the best epoch is replayed exactly."""
        if not self.active:
            return False
        recorded = self.recorded.get(int(epoch_idx))
        if recorded is None or float(valid_score) != recorded:
            self.fit_log.replay["diverged_at"] = int(epoch_idx)
            getLogger().warning(
                f"[leaderboard] replay diverged at epoch {epoch_idx}: valid {float(valid_score)!r}, recorded "
                f"{recorded!r}; the cell runs in full and its new record replaces the old one"
            )
            return False
        if epoch_idx >= self.best_epoch:
            self.fit_log.replay["reached"] = int(epoch_idx)
            return True
        return False


def _prepare(job, config_dict):
    """quick_start.prepare, with the config the job describes."""
    from recbole.utils import init_logger, init_seed

    from recbole_tfllmer.quick_start import build_config, prepare

    config = build_config(config_file_list=list(job["config_files"]), config_dict=config_dict)
    if job.get("init_logger", True):
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
    return prepare(config)


def _fit(job, config, trainer, model, train_data, valid_data, fit_log, progress):
    """RecBole's Trainer.fit, saving the whole state to `progress` after every evaluation.

    The best model is a state_dict snapshot taken when RecBole's early stopping marks a new
    best (cur_step reset to 0), kept in memory and in the progress file, never a separate
    checkpoint file. With `job["replay"]`, fit ends at the recorded best epoch (_Replay)."""
    logger = getLogger()
    started = time.perf_counter()
    fit_seconds_before = fit_log.fit_seconds
    replay = _Replay(job["replay"], fit_log) if job.get("replay") else None

    def on_epoch(epoch_idx, valid_score):
        fit_log.valid_scores.append({"epoch": int(epoch_idx), "score": float(valid_score)})
        if trainer.cur_step == 0:
            fit_log.best_epoch = int(epoch_idx)
            fit_log.best_state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
        replayed = replay is not None and replay.reached(epoch_idx, valid_score)
        # RecBole stops when cur_step exceeds stopping_step; it breaks right after this callback
        fit_log.stopped = replayed or trainer.cur_step > trainer.stopping_step or epoch_idx + 1 >= trainer.epochs
        if progress is not None:
            progress.save(
                trainer, epoch_idx, fit_log.state(trainer, fit_seconds_before + time.perf_counter() - started)
            )
        logger.info(f"[leaderboard] {job['cell_id']} epoch {epoch_idx} valid {valid_score:.5f}")
        if replayed:
            raise _ReplayReached

    if fit_log.stopped:  # resumed after its last evaluation: only what fit() sets up for evaluate()
        trainer.eval_collector.data_collect(train_data)
    else:
        try:
            trainer.fit(train_data, valid_data, saved=False, show_progress=False, callback_fn=on_epoch, verbose=True)
        except _ReplayReached:
            logger.info(f"[leaderboard] {job['cell_id']}: replayed to its best epoch {fit_log.best_epoch} exactly")
    fit_log.fit_seconds = fit_seconds_before + time.perf_counter() - started
    if fit_log.best_state_dict is not None:
        model.load_state_dict(fit_log.best_state_dict)
    return trainer.best_valid_score, trainer.best_valid_result


def _longtail_and_ranks(job, config, trainer, train_data, test_data, test_result):
    """Per-user test ranks (stored compactly for the paired intervals) and NDCG@k by popularity
    bucket, from our own full-sort pass, checked against RecBole's test metrics."""
    from recbole_tfllmer.leaderboard.longtail import (
        bucket_metrics,
        full_sort_ranks,
        hit_at_k,
        ndcg_at_k,
        training_popularity,
    )
    from recbole_tfllmer.leaderboard.paired import encode_ranks, rows_hash

    lt_cfg = job.get("longtail") or {"buckets": 5, "k": 10}
    k = int(lt_cfg.get("k", 10))
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    ranks, targets, users = full_sort_ranks(trainer, test_data, max(topk))
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
    test_ranks = {**encode_ranks(ranks), "rows_sha": rows_hash(users, targets)}
    return longtail, test_ranks


def _candidate_ranks(trainer):
    """Per-user ranks of the test targets among their candidates (candidate boards), stored as
    the full-ranking boards store theirs, for the same paired intervals."""
    from recbole_tfllmer.leaderboard.paired import encode_ranks, rows_hash

    users, targets, ranks = trainer.candidate_ranks["test"]
    return {**encode_ranks(ranks), "rows_sha": rows_hash(users, targets)}


def _export(job, trainer, model, dataset, fit_log):
    """What other cells of the board need from this one (the best model is loaded): its item
    table (LLMEmb aligns with it) and/or its checkpoint (A-LLMRec freezes it)."""
    if job.get("export_item_table"):
        from recbole_tfllmer.collab_tables import export_item_table

        export_item_table(model, dataset, job["export_item_table"])
    if job.get("export_checkpoint"):
        trainer.saved_model_file = job["export_checkpoint"]
        trainer._save_checkpoint(fit_log.best_epoch or 0, verbose=False)


def _replayed_record(job, trainer, model, dataset, fit_log, test_result):
    """The end of an export replay: the test metrics must equal the record's too; then the
    exports are written and the old record comes back unchanged but for a note of the replay."""
    from recbole_tfllmer.leaderboard.store import CellStore

    record = CellStore(job["results_dir"]).read(job["cell_id"])
    replayed = _metrics(test_result)
    differ = {k: (replayed[k], v) for k, v in record["test"].items() if k in replayed and replayed[k] != v}
    if differ:
        raise RuntimeError(
            f"{job['cell_id']}: the replay matched every validation score but not the test metrics {differ} "
            "(replayed, recorded); delete the cell's record to run it again in full"
        )
    _export(job, trainer, model, dataset, fit_log)
    record["export_replays"] = list(record.get("export_replays") or []) + [
        {
            "epochs": int(fit_log.replay["reached"]) + 1,
            "valid_scores_equal": True,
            "test_equal": True,
            "fit_seconds": round(fit_log.fit_seconds, 1),  # over every process of the replay
            "resumed": len(fit_log.resumes),
            "code_fingerprint": code_fingerprint(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    ]
    return record


def run_cell(job, workdir=None):
    """Run one cell described by `job` (see command.make_job) and return its record.

    With a `workdir`, the cell's training state is saved there after every evaluation
    (progress.py) and a half-finished cell continues from it; the caller removes it with
    `CellProgress.clear()` once the record is stored."""
    from recbole_tfllmer.leaderboard.progress import CellProgress

    start = time.perf_counter()
    own_tmp = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="tfllmer-cell-"))
    checkpoint_dir = workdir / "saved" / job["cell_id"]
    config_dict = dict(job["config_dict"], checkpoint_dir=str(checkpoint_dir))
    progress = CellProgress(workdir, job["cell_id"], job.get("fingerprint"))
    saved = progress.load()
    fit_log = _FitLog(saved["runner"] if saved else None)
    try:
        run = _prepare(job, config_dict)
        config, dataset, model, trainer = run.config, run.dataset, run.model, run.trainer
        train_data, valid_data, test_data = run.train_data, run.valid_data, run.test_data
        logger = getLogger()
        fit_log.code_fingerprints = sorted(set(fit_log.code_fingerprints) | {code_fingerprint()})

        from recbole_tfllmer.trainer import _candidate_phase

        candidates = _candidate_phase(test_data) is not None  # candidate board: no full-ranking diagnostics
        # the Hessian diagnostic differentiates the per-batch loss, which a model may not have (A-LLMRec)
        conditioned = not candidates and getattr(model, "has_batch_loss", True)
        cond_cfg = job.get("conditioning") or {"sample_size": 256, "seed": 0}
        sample_idx, sample = conditioning_sample(train_data._dataset, cond_cfg["sample_size"], cond_cfg["seed"])
        t0 = time.perf_counter()
        if saved is None:
            fit_log.cond_init = conditioning_stats(model, sample) if conditioned else None
        else:  # the state after the last evaluation: weights, optimizer, counters, RNG
            trainer.restore_training_state(saved, str(progress.path))
            trainer.train_loss_dict = dict(fit_log.train_loss)
            fit_log.resumes.append({"after_epoch": int(saved["epoch"]), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            logger.info(f"[leaderboard] {job['cell_id']}: resumed after epoch {saved['epoch']} from {progress.path}")
        cond_seconds = time.perf_counter() - t0

        best_valid_score, best_valid_result = _fit(
            job, config, trainer, model, train_data, valid_data, fit_log, progress if not own_tmp else None
        )
        t0 = time.perf_counter()
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        test_seconds = time.perf_counter() - t0
        if fit_log.replay.get("reached") is not None:
            return _replayed_record(job, trainer, model, dataset, fit_log, test_result)
        if candidates:
            cond_end, longtail, test_ranks = None, None, _candidate_ranks(trainer)
        else:
            cond_end = conditioning_stats(model, sample) if conditioned else None
            longtail, test_ranks = _longtail_and_ranks(job, config, trainer, train_data, test_data, test_result)
        _export(job, trainer, model, dataset, fit_log)

        scores = [v["score"] for v in fit_log.valid_scores]
        best_epoch = None
        if scores:
            best_epoch = fit_log.valid_scores[
                int(np.argmax(scores) if config["valid_metric_bigger"] else np.argmin(scores))
            ]["epoch"]
        train_seconds = fit_log.train_seconds + list(trainer.epoch_train_seconds)
        train_loss = [float(trainer.train_loss_dict[e]) for e in sorted(trainer.train_loss_dict)]
        info = model.init_report.as_dict() if hasattr(model, "init_report") else {}
        emb_info = getattr(dataset, "embedding_info", {}) or {}
        return {
            "version": RECORD_VERSION,
            "status": "done",
            "cell_id": job["cell_id"],
            **job["cell"],
            "leaderboard": job.get("leaderboard"),
            "fingerprint": job.get("fingerprint"),
            "config_files": [str(f) for f in job["config_files"]],
            "config_overrides": job["config_dict"],
            "config": {key: config[key] for key in RECORDED_CONFIG_KEYS if key in config},
            "best_valid_score": float(best_valid_score),
            "best_valid": _metrics(best_valid_result),
            "test": _metrics(test_result),
            "test_ranks": test_ranks,
            "best_epoch": best_epoch,
            "best_epoch_loaded": fit_log.best_epoch,
            "epochs_run": len(train_seconds),
            "epoch_cap": int(config["epochs"]),
            "stopped_early": len(train_seconds) < int(config["epochs"]),
            "train_loss": train_loss,
            "train_loss_per_batch": [v / max(len(train_data), 1) for v in train_loss],
            "valid_scores": fit_log.valid_scores,
            "epoch_train_seconds": train_seconds,
            "epoch_valid_seconds": fit_log.valid_seconds + list(trainer.epoch_valid_seconds),
            "n_train_batches": len(train_data),
            "n_train_rows": len(train_data._dataset),
            "resumes": fit_log.resumes,
            # an export replay that did not reproduce the old record became this full run
            **({"replay_diverged_at": fit_log.replay.get("diverged_at")} if fit_log.replay else {}),
            "conditioning": None
            if not conditioned
            else {
                "sample_size": len(sample_idx),
                "sample_seed": cond_cfg["seed"],
                "init": fit_log.cond_init,
                "end": cond_end,
            },
            "candidates": dict(trainer.candidate_hashes or {}) if candidates else None,
            "longtail": longtail,
            "timings": {
                **run.timings,
                "fit_seconds": fit_log.fit_seconds,
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
            "code_fingerprints": fit_log.code_fingerprints,
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "host": platform.node(),
                "machine": machine_description(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)


def machine_description():
    """CPU model and core count, or the GPU: stated next to every number."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} cores"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m recbole_tfllmer.leaderboard.runner JOB.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    from recbole_tfllmer.leaderboard.progress import CellProgress
    from recbole_tfllmer.leaderboard.store import CellStore

    store = CellStore(job["results_dir"])
    try:
        record = run_cell(job, workdir=job.get("workdir"))
    except Exception:
        store.write_failure(
            job["cell_id"], {"cell_id": job["cell_id"], "job": job, "traceback": traceback.format_exc()}
        )
        traceback.print_exc()
        return 1
    store.write(job["cell_id"], record)
    if job.get("workdir"):
        CellProgress(job["workdir"], job["cell_id"], job.get("fingerprint")).clear()
    logging.getLogger().info(f"[leaderboard] wrote {store.cell_path(job['cell_id'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
