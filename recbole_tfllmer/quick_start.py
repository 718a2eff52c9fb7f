"""run / objective_function / load_data_and_model, built from RecBole's own parts.

RecBole's `recbole.quick_start` imports ray at module level (and ray 2.6 needs
pkg_resources and numpy<2), so the plugin never imports it: these functions follow the
same steps with RecBole's Config, create_dataset, data_preparation, get_model/get_trainer,
init_seed, init_logger and Trainer.
"""

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from logging import getLogger

import torch.distributed as dist
from recbole.data import data_preparation
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_tfllmer.checkpoint import checkpoint_config, load_checkpoint, load_model_state
from recbole_tfllmer.config import TFLLMERConfig
from recbole_tfllmer.data import create_dataset
from recbole_tfllmer.utils import get_model, get_trainer


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
    config = TFLLMERConfig(
        model=model,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=config_dict,
        cmd_args=cmd_args,
    )
    if config.backbone_class is not None:
        # Fail on bad options now, before any data is read or encoded; the typed records go
        # with the config to the data hook and the wrapper, which do not check them again.
        from recbole_tfllmer.backbones import validate_backbone_options
        from recbole_tfllmer.options import check_no_misspelt_options, validate_options

        check_no_misspelt_options(config.external_config_dict, config.internal_config_dict)
        validate_backbone_options(config)
        config.plugin_options = validate_options(config)
    if config["single_spec"] and "run_id" not in config:
        # RecBole names logs and checkpoints by the time to the second: two runs started together
        # from one directory would share them. A run id (pid + random bytes from the OS, so no
        # seeded RNG is touched) enters RecBole's log-name hash and the checkpoint name.
        config["run_id"] = f"{os.getpid()}-{os.urandom(3).hex()}"
    return config


def build_model(config, train_data):
    """The model on the training split (the wrapper builds its graph from that split only)."""
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_class = get_model(config["model"])
    return model_class(config, train_data._dataset).to(config["device"])


def build_trainer(config, model):
    backbone = config["backbone"] if "backbone" in config else None
    return get_trainer(config["MODEL_TYPE"], config["model"], backbone)(config, model)


@dataclass
class Prepared:
    """Everything one run needs, built by `prepare` in RecBole's order."""

    config: object
    dataset: object
    train_data: object
    valid_data: object
    test_data: object
    model: object
    trainer: object = None
    timings: dict = field(default_factory=dict)


def prepare(config, with_trainer=True, log_dataset=False):
    """config -> dataset (+ the item-text hook) -> RecBole's splits -> model -> trainer.

    The one place the RecBole pipeline is assembled: the quick start, the leaderboard runner,
    the benchmarks and the tests all build their runs through it. The seed is set first, as
    recbole.quick_start.run_recbole does, so a run is reproduced by its config alone."""
    if config["model"] == "LLMEmb":  # its collaborative table, trained first when none is named
        from recbole_tfllmer.llmemb.collab_model import ensure_collab_table

        ensure_collab_table(config)
    init_seed(config["seed"], config["reproducibility"])
    started = time.perf_counter()
    dataset = create_dataset(config)
    if log_dataset:
        getLogger().info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model = build_model(config, train_data)
    timings = {"data_seconds": data_seconds, "model_build_seconds": time.perf_counter() - started}
    trainer = build_trainer(config, model) if with_trainer else None
    return Prepared(config, dataset, train_data, valid_data, test_data, model, trainer, timings)


def run_tfllmer(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved=True,
    queue=None,
    cmd_args=None,
):
    """Train and test one model, exactly as recbole.quick_start.run_recbole does.

    Returns RecBole's result dict plus `model_file`, `train_loss` (per epoch) and `timings`.
    """
    start = time.perf_counter()
    config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    init_seed(config["seed"], config["reproducibility"])
    _make_recbole_dirs(config)
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    run = prepare(config, log_dataset=True)
    dataset, model, trainer = run.dataset, run.model, run.trainer
    train_data, valid_data, test_data = run.train_data, run.valid_data, run.test_data
    logger.info(model)

    resume_from = config["resume_from"] if "resume_from" in config else None
    if resume_from:  # continues after its epoch: weights, optimizer, early-stopping state, RNG
        trainer.resume_checkpoint(resume_from)
    fit_start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    fit_seconds = time.perf_counter() - fit_start
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "model_file": trainer.saved_model_file if saved else None,
        "train_loss": dict(trainer.train_loss_dict),
        "timings": {
            "data_seconds": run.timings["data_seconds"],
            "fit_seconds": fit_seconds,
            "total_seconds": time.perf_counter() - start,
            **{
                f"embedding_{k}": v
                for k, v in getattr(dataset, "embedding_info", {}).items()
                if isinstance(v, (int, float))
            },
            **{
                k: v
                for k, v in (model.init_report.as_dict() if hasattr(model, "init_report") else {}).items()
                if k.endswith("_seconds")
            },
        },
    }
    result["rank"] = config["local_rank"] + (config["offset"] if "offset" in config else 0)
    result["embedding_info"] = dict(getattr(dataset, "embedding_info", {}) or {})
    if not config["single_spec"]:
        dist.destroy_process_group()
    if queue is not None:
        queue.put(result)
    return result


def _make_recbole_dirs(config):
    """Create the folders RecBole creates with a check-then-mkdir (`recbole.utils.ensure_dir`).

    Two distributed workers starting together race on that check and one dies with
    FileExistsError on `./log`; `exist_ok=True` here makes RecBole's own calls no-ops.
    """
    for directory in (os.path.join("./log", config["model"]), config["checkpoint_dir"]):
        os.makedirs(directory, exist_ok=True)


def _run_worker(rank, model, dataset, config_file_list, kwargs):
    kwargs = dict(kwargs)
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    run_tfllmer(model, dataset, config_file_list, **kwargs)


def run(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
    cmd_args=None,
):
    """RecBole's `run`: one process, or `nproc` workers through torch.multiprocessing."""
    if nproc == 1 and world_size <= 0:
        return run_tfllmer(model, dataset, config_file_list, config_dict, saved, cmd_args=cmd_args)
    import torch
    import torch.multiprocessing as mp

    if 0 < torch.cuda.device_count() < nproc:
        # RecBole's DDP path gives each process its own GPU (and asserts so, bare); without CUDA the
        # workers join a gloo group on the CPU instead (config.TFLLMERConfig._init_device)
        from recbole_tfllmer.errors import ConfigError

        raise ConfigError(
            f"--nproc={nproc} needs {nproc} GPUs, this machine has {torch.cuda.device_count()}: RecBole's "
            "distributed training puts one process on each GPU. Use --nproc=1 (or as many as there are GPUs)."
        )
    world_size = nproc if world_size == -1 else world_size
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    # one run id for all workers: they share the checkpoint rank 0 writes (and the log name)
    config_dict.setdefault("run_id", f"{os.getpid()}-{os.urandom(3).hex()}")
    kwargs = {"config_dict": config_dict, "saved": saved, "queue": queue, "cmd_args": cmd_args}
    mp.spawn(_run_worker, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    results = []
    while not queue.empty():
        results.append(queue.get())
    results.sort(key=lambda r: r["rank"])
    if not results:
        return None
    # rank 0's result, with what every rank measured (the same test metrics, one preparation)
    return {**results[0], "ranks": [{k: r[k] for k in ("rank", "test_result", "embedding_info")} for r in results]}


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """RecBole's objective for HyperTuning: train, validate, test; no logging to files."""
    config = build_config(config_dict=config_dict, config_file_list=config_file_list)
    logging.basicConfig(level=logging.ERROR)
    run = prepare(config)
    best_valid_score, best_valid_result = run.trainer.fit(run.train_data, run.valid_data, verbose=False, saved=saved)
    test_result = run.trainer.evaluate(run.test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def load_data_and_model(model_file):
    """Rebuild config, data and model from a checkpoint written by this plugin.

    The config is rebuilt from the user's own options stored in the checkpoint (the
    checkpoint holds no pickled objects), so the data splits and the model come out as
    they were trained.
    """
    checkpoint = load_checkpoint(model_file, map_location="cpu")
    final, external = checkpoint_config(checkpoint)
    config = build_config(model=final["model"], dataset=final["dataset"], config_dict=external)
    init_logger(config)
    run = prepare(config, with_trainer=False)
    load_model_state(run.model, checkpoint, model_file)
    return config, run.model, run.dataset, run.train_data, run.valid_data, run.test_data
