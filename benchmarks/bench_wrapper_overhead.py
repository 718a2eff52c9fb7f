"""Training-epoch overhead of the TF-LLMER wrapper.

Compares, on the same backbone and the same data, in one process:
  plain    - RecBole's own backbone (`model: SASRec`), no wrapper
  randinit - `model: TFLLMER`, `item_init: random`, `item_norm: none` (the wrapper alone)
  tfllmer  - `model: TFLLMER`, `item_init: rec_pca`, `item_norm: always` (Rec-PCA init and
             the always-on row normalisation, which runs at every forward)
Epochs are interleaved (plain, randinit, tfllmer, then rotated) so drift in a shared
machine's load hits all three alike; the medians are compared. Target: tfllmer / plain and
tfllmer / randinit <= 1.05 (one-off preprocessing such as Rec-PCA is reported, not timed).

    .venv/bin/python benchmarks/bench_wrapper_overhead.py [--users 300] [--repeats 5] [--backbone SASRec]
"""

import argparse
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
sys.path.insert(0, str(REPO_ROOT))


def write_ml100k_slice(root, name, n_users):
    """The first `n_users` users of RecBole's ml-100k (and only their items), as atomic files."""
    import recbole

    source = Path(recbole.__file__).resolve().parent / "dataset_example" / "ml-100k"
    target = Path(root) / name
    target.mkdir(parents=True, exist_ok=True)
    header, *rows = (source / "ml-100k.inter").read_text(encoding="utf-8").splitlines()
    keep = [r for r in rows if n_users <= 0 or int(r.split("\t")[0]) <= n_users]
    items = {r.split("\t")[1] for r in keep}
    (target / f"{name}.inter").write_text("\n".join([header, *keep]) + "\n", encoding="utf-8")
    item_header, *item_rows = (source / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    item_keep = [r for r in item_rows if r.split("\t")[0] in items]
    (target / f"{name}.item").write_text("\n".join([item_header, *item_keep]) + "\n", encoding="utf-8")
    return Path(root)


def base_config(args, data_path, name, workdir):
    return {
        "data_path": str(data_path),
        "dataset": name,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 4096,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "metrics": ["NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "show_progress": False,
        "use_gpu": False,
        "seed": 2020,
        "checkpoint_dir": str(Path(workdir) / "saved"),
        "text_fields": ["movie_title", "release_year", "class"],
        "text_template": "Title: {movie_title}. Year: {release_year}. Genres: {class}",
        "embedding_cache_dir": str(args.cache_dir),
    }


def build_variant(kind, args, data_path, name, workdir):
    """(trainer, train_data, info) for one variant, through RecBole's or the plugin's own builders."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    config_dict = base_config(args, data_path, name, workdir)
    if kind == "plain":
        from recbole.config import Config
        from recbole.data import create_dataset
        from recbole.utils import get_model, get_trainer

        config = Config(model=args.backbone, config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(args.backbone)(config, train_data._dataset)
        trainer = get_trainer(config["MODEL_TYPE"], args.backbone)(config, model)
        return trainer, train_data, {}

    from recbole_tfllmer.quick_start import build_config, prepare

    preset = {
        "randinit": {"item_init": "random", "item_norm": "none"},
        "tfllmer": {"item_init": "rec_pca", "item_norm": "always"},
    }[kind]
    run = prepare(build_config(config_dict={**config_dict, **preset, "model": "TFLLMER", "backbone": args.backbone}))
    return run.trainer, run.train_data, run.model.init_report.as_dict()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="SASRec")
    p.add_argument("--users", type=int, default=300, help="first N users of ml-100k (0 = all 943)")
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (after one warm-up epoch each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", type=float, default=1.05)
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "tfllmer-bench-embedding-cache"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import logging

    logging.getLogger().setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="tfllmer-bench-"))
    os.chdir(workdir)  # RecBole's ./log_tensorboard
    name = f"ml100k-u{args.users}"
    data_path = write_ml100k_slice(workdir / "data", name, args.users)

    variants = ["plain", "randinit", "tfllmer"]
    built = {}
    for kind in variants:
        t0 = time.perf_counter()
        built[kind] = build_variant(kind, args, data_path, name, workdir)
        print(
            f"built {kind:8s} in {time.perf_counter() - t0:6.1f}s {built[kind][2] if built[kind][2] else ''}",
            flush=True,
        )

    times = {k: [] for k in variants}
    epoch = {k: 0 for k in variants}
    for r in range(args.repeats + 1):
        order = variants[r % 3 :] + variants[: r % 3]
        for kind in order:
            trainer, train_data, _ = built[kind]
            trainer.model.train()
            t0 = time.perf_counter()
            trainer._train_epoch(train_data, epoch[kind], show_progress=False)
            seconds = time.perf_counter() - t0
            epoch[kind] += 1
            if r > 0:  # the first round is a warm-up
                times[kind].append(seconds)
        print(
            f"round {r}{' (warm-up)' if r == 0 else ''}: "
            + ", ".join(f"{k} {times[k][-1]:.2f}s" if r > 0 else k for k in order),
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(
        f"backbone {args.backbone}, ml-100k first {args.users or 943} users, "
        f"{len(built['plain'][1])} batches/epoch of {args.batch_size}, max length {args.max_len}, "
        f"{args.threads} thread(s), {args.repeats} interleaved epochs per variant"
    )
    for k in variants:
        print(f"  {k:8s} median epoch {med[k]:.3f}s  (all: {', '.join(f'{t:.2f}' for t in times[k])})")
    ratios = {
        "tfllmer/plain": med["tfllmer"] / med["plain"],
        "tfllmer/randinit": med["tfllmer"] / med["randinit"],
        "randinit/plain": med["randinit"] / med["plain"],
    }
    ok = True
    for label, value in ratios.items():
        verdict = "PASS" if value <= args.target else "FAIL"
        if label.startswith("tfllmer"):
            ok &= value <= args.target
        print(f"  ratio {label:17s} {value:.3f}  {verdict} (target <= {args.target})")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
