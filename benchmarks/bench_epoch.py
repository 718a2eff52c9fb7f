"""One training epoch through the plugin against plain RecBole, at the converged boards' settings.

Variants, built in one process on the same data (Amazon_Beauty by default) and timed with
RecBole's own `Trainer._train_epoch` and `_valid_epoch`, interleaved round by round so that
load drift on a shared machine hits all of them alike:
  recbole      - RecBole's SASRec and Trainer (`model: SASRec`), RecBole's default threads
  plugin       - `model: TFLLMER`, `backbone: SASRec`, RandInit preset (the same network), same threads
  plugin-1t    - the plugin with 1 torch thread: what a board cell uses, two cells at a time on 2 cores

Target: plugin / recbole <= 1.0 (+ noise). A board's throughput on N cores is N / (plugin-1t
epoch) cells-epochs per second against 1 / (recbole epoch) for one RecBole run using them all.

    .venv/bin/python benchmarks/bench_epoch.py [--dataset Amazon_Beauty] [--rounds 1] [--max-len 50]
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def settings(args, workdir):
    return {
        "data_path": str(Path(args.data_path).resolve()) + os.sep,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 4096,
        "learning_rate": 0.001,
        "embedding_size": 64,
        "hidden_size": 64,
        "seed": 2020,
        "show_progress": False,
        "use_gpu": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "checkpoint_dir": str(Path(workdir) / "saved"),
    }


def build(kind, args, workdir):
    """(trainer, train_data, valid_data) through RecBole's or the plugin's own builders."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    properties = [str(REPO_ROOT / "properties" / f"{args.dataset}.yaml")]
    config_dict = settings(args, workdir)
    if kind == "recbole":
        from recbole.config import Config
        from recbole.data import create_dataset
        from recbole.utils import get_model, get_trainer

        config = Config(model="SASRec", config_file_list=properties, config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model("SASRec")(config, train_data._dataset)
        return get_trainer(config["MODEL_TYPE"], "SASRec")(config, model), train_data, valid_data

    from recbole_tfllmer.leaderboard.spec import METHOD_DIR
    from recbole_tfllmer.quick_start import build_config, prepare

    config = build_config(
        config_file_list=properties + [str(METHOD_DIR / "RandInit.yaml")],
        config_dict={**config_dict, "model": "TFLLMER", "backbone": "SASRec"},
    )
    run = prepare(config)
    return run.trainer, run.train_data, run.valid_data


def timed_epoch(trainer, train_data, valid_data, epoch, threads):
    torch.set_num_threads(threads)
    trainer.model.train()
    t0 = time.perf_counter()
    trainer._train_epoch(train_data, epoch, show_progress=False)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer._valid_epoch(valid_data, show_progress=False)
    return train_seconds, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="Amazon_Beauty")
    p.add_argument("--data-path", default=str(REPO_ROOT.parent / "shared" / "datasets"))
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=1, help="timed epochs per variant")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of recbole / plugin")
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="tfllmer-bench-epoch-"))
    os.chdir(workdir)

    variants = {"recbole": args.threads, "plugin": args.threads, "plugin-1t": 1}
    built = {k: build("recbole" if k == "recbole" else "plugin", args, workdir) for k in variants}
    # RecBole 1.2.1's sine.py switches autograd anomaly detection on at import; plain RecBole
    # runs with it on. Measure plain RecBole as it runs, then the plugin as it runs (off).
    times = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants)[r % 3 :] + list(variants)[: r % 3]
        for kind in order:
            trainer, train_data, valid_data = built[kind]
            if kind == "recbole":
                torch.autograd.set_detect_anomaly(True)  # as sine.py leaves it for RecBole's own Trainer
            else:
                torch.autograd.set_detect_anomaly(False)  # as the plugin trainer's fit() sets it
            train_s, valid_s = timed_epoch(trainer, train_data, valid_data, r, variants[kind])
            times[kind].append((train_s, valid_s))
            print(f"round {r}: {kind:9s} train {train_s:7.1f}s  valid {valid_s:5.1f}s", flush=True)

    n_batches = len(built["plugin"][1])
    print()
    print(
        f"SASRec on {args.dataset}, {n_batches} batches/epoch of {args.batch_size}, max length {args.max_len}, "
        f"full-ranking validation; {os.cpu_count()} CPU cores, torch {torch.__version__}"
    )
    med = {k: statistics.median(t for t, _ in v) for k, v in times.items()}
    for k, v in times.items():
        print(
            f"  {k:9s} ({variants[k]} thread(s)) median train epoch {med[k]:7.1f}s, "
            f"valid {statistics.median(s for _, s in v):5.1f}s"
        )
    ratio = med["plugin"] / med["recbole"]
    print(
        f"  ratio plugin / recbole (same threads)   {ratio:.3f}  {'PASS' if ratio <= 1.02 else 'FAIL'} (target <= 1.0 + 2% noise)"
    )
    cores = os.cpu_count() or 1
    print(
        f"  board throughput: {cores} cells at 1 thread = {cores / med['plugin-1t'] * 3600:.1f} epochs/hour vs "
        f"{3600 / med['recbole']:.1f} for one RecBole run on all cores "
        f"({cores * med['recbole'] / med['plugin-1t']:.2f}x)"
    )
    return 0 if ratio <= 1.02 else 1


if __name__ == "__main__":
    sys.exit(main())
