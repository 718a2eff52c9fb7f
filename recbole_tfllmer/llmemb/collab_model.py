"""LLMEmb's collaborative table when no `llmemb_collab` is given (seed-methods A.3): their
pipeline trains an ID-only SASRec first and aligns with its item table. Here that model is a
RandInit SASRec trained with the run's own data, split, seed and training settings, once: its
table is cached by content (`<dataset>-collab-<hash>.npy` + `.tokens.txt`, beside the text
embeddings), so the next LLMEmb run with the same settings reuses it."""

import hashlib
import json
import logging
import os
import tempfile

from recbole_tfllmer.collab_tables import export_item_table, tokens_path_of
from recbole_tfllmer.options import plugin_options
from recbole_tfllmer.text.store import _cache_lock, resolve_cache_dir

COLLAB_BACKBONE = "SASRec"
# what only LLMEmb (or this run) reads: not part of the collaborative model's configuration
_NOT_FOR_THE_COLLAB_MODEL = {"model", "backbone", "checkpoint_dir", "run_id", "resume_from", "precomputed_embeddings"}
_NOT_FOR_THE_COLLAB_MODEL_PREFIXES = ("llmemb_", "scft_", "item_norm", "text_")


def collab_config_dict(config):
    """The run's own options, minus LLMEmb's, for an ID-only SASRec (RandInit) of the same seed."""
    options = {
        k: v
        for k, v in config.external_config_dict.items()
        if k not in _NOT_FOR_THE_COLLAB_MODEL and not k.startswith(_NOT_FOR_THE_COLLAB_MODEL_PREFIXES)
    }
    options.update(backbone=COLLAB_BACKBONE, item_init="random", item_norm="none", seed=config["seed"])
    return options


def ensure_collab_table(config):
    """Set `llmemb_collab` on an LLMEmb config that aligns but names no table: the cached table of
    the RandInit SASRec these settings train (trained now on a miss)."""
    options = plugin_options(config).llmemb
    if options is None or options.align_alpha <= 0 or options.collab:
        return config
    collab = collab_config_dict(config)
    key = hashlib.sha256(json.dumps(collab, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = os.path.join(resolve_cache_dir(config), f"{config['dataset']}-collab-{key}.npy")
    logger = logging.getLogger()
    with _cache_lock(path):
        if os.path.isfile(path) and os.path.isfile(tokens_path_of(path)):
            logger.info(f"LLMEmb: collaborative table cache hit: {path}")
        else:
            logger.info(
                f"LLMEmb: no `llmemb_collab` given: training the ID-only {COLLAB_BACKBONE} (RandInit) it aligns "
                f"with, on the same data, split and seed (cached as {path})"
            )
            _train_and_export(config, collab, path)
    config["llmemb_collab"] = path
    return config


def _train_and_export(config, collab, path):
    from recbole_tfllmer.quick_start import build_config, prepare

    with tempfile.TemporaryDirectory(prefix="llmemb-collab-") as checkpoints:
        collab_config = build_config(
            "TFLLMER", config["dataset"], config_dict={**collab, "checkpoint_dir": checkpoints}
        )
        run = prepare(collab_config)
        run.trainer.fit(run.train_data, run.valid_data, saved=True, show_progress=False)
        run.trainer.load_best_model()
        export_item_table(run.model, run.dataset, path)
