"""Do two versions of the plugin compute the same cells? (refactors must not change results)

Runs two short leaderboard cells (SASRec RandInit and TFLLMER, 2 epochs, 100-user ml-100k
slice, seed 5, one thread) with the plugin found in TREE and prints their test metrics,
losses and validation curves as one JSON line. Run it for two checkouts and compare:

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/check_equivalence.py --tree /tmp/old > old.json
    .venv/bin/python benchmarks/check_equivalence.py --tree .        > new.json
    cmp old.json new.json && echo IDENTICAL
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", default=".", help="checkout whose recbole_tfllmer to run")
    args = p.parse_args(argv)
    tree = str(Path(args.tree).resolve())
    sys.path.insert(0, tree)
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.conftest of this checkout
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    import recbole_tfllmer
    from recbole_tfllmer.leaderboard.runner import run_cell
    from tests.conftest import slice_config, write_ml100k_slice

    assert recbole_tfllmer.__file__.startswith(tree), f"imported {recbole_tfllmer.__file__}, not {tree}"
    work = Path(tempfile.mkdtemp(prefix="tfllmer-equivalence-"))
    os.chdir(work)
    data_path, name = write_ml100k_slice(work / "data", n_users=100)
    out = {}
    for method, preset in [
        ("RandInit", {"item_init": "random", "item_norm": "none"}),
        ("TFLLMER", {"item_init": "rec_pca", "item_norm": "always"}),
    ]:
        config = slice_config(
            data_path,
            name,
            work,
            epochs=2,
            model="TFLLMER",
            backbone="SASRec",
            seed=5,
            metric_decimal_place=10,
            **preset,
        )
        cell = {"dataset": name, "backbone": "SASRec", "method": method, "vectors": "st", "seed": 5}
        record = run_cell(
            {"cell_id": method, "cell": cell, "config_files": [], "config_dict": config, "init_logger": False}
        )
        out[method] = {"test": record["test"], "loss": record["train_loss"], "valid": record["valid_scores"]}
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
