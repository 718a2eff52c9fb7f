"""The defaults search of issue #11 as one table: validation (what decides) and test (for the
record) per variant and dataset, with the paired 95% interval of test NDCG@10 against the best
variant, from the boards' own summaries (results/<board>/leaderboard.csv and paired.csv).

    python benchmarks/rec_pca_defaults_table.py            # prints the table
    python benchmarks/rec_pca_defaults_table.py --readme   # and writes it into README.md
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_blocks import write_block  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BOARDS = ("ml-100k-rec-pca-defaults", "Amazon_Beauty-rec-pca-defaults", "Amazon_Toys-rec-pca-defaults")
MARKS = ("<!-- defaults:begin -->", "<!-- defaults:end -->")


def _rows(board):
    folder = REPO / "results" / board
    if not (folder / "leaderboard.csv").exists():
        return None, {}
    with open(folder / "leaderboard.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    paired = {}
    if (folder / "paired.csv").exists():
        with open(folder / "paired.csv", encoding="utf-8") as f:
            paired = {r["method"]: r for r in csv.DictReader(f) if r["metric"] == "ndcg@10"}
    return rows, paired


def _pm(mean, std):
    mean, std = float(mean), float(std)
    return f"{mean:.4f}" if not math.isfinite(std) else f"{mean:.4f} ± {std:.4f}"


def table():
    lines = [
        "| dataset | variant | seeds | valid NDCG@10 | test NDCG@10 | test − best other [95%] |",
        "|---|---|---|---|---|---|",
    ]
    for board in BOARDS:
        rows, paired = _rows(board)
        if rows is None:
            lines.append(f"| {board.replace('-rec-pca-defaults', '')} | not run yet | | | | |")
            continue
        best_valid = max(float(r["valid_ndcg@10_mean"]) for r in rows)
        for r in rows:
            p = paired.get(r["method"])
            interval = ""
            if p and p["best_other_diff"] not in ("", "nan"):
                interval = (
                    f"{float(p['best_other_diff']):+.4f} [{float(p['best_other_low']):+.4f}, "
                    f"{float(p['best_other_high']):+.4f}] vs {p['best_other'].split('/')[0]}"
                )
            valid = _pm(r["valid_ndcg@10_mean"], r["valid_ndcg@10_std"])
            if float(r["valid_ndcg@10_mean"]) == best_valid:
                valid = f"**{valid}**"
            lines.append(
                f"| {r['dataset']} | {r['method']} | {r['n_seeds']} | {valid} | "
                f"{_pm(r['test_ndcg@10_mean'], r['test_ndcg@10_std'])} | {interval} |"
            )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", action="store_true", help="write the table between the README's markers")
    args = parser.parse_args()
    text = table()
    print(text, end="")
    if args.readme:
        write_block(*MARKS, text)


if __name__ == "__main__":
    main()
