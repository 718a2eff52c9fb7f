"""The defaults search of issue #11 as one table: validation (what decides) and test (for the
record) per variant and dataset, with the paired 95% interval of test NDCG@10 against the best
variant, from the boards' own summaries (results/<board>/leaderboard.csv and paired.csv).

    python benchmarks/rec_pca_defaults_table.py            # prints the table
    python benchmarks/rec_pca_defaults_table.py --readme   # and writes it into README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_blocks import REPO, mean_std, read_csv, table_main  # noqa: E402

BOARDS = ("ml-100k-rec-pca-defaults", "Amazon_Beauty-rec-pca-defaults", "Amazon_Toys-rec-pca-defaults")
MARKS = ("<!-- defaults:begin -->", "<!-- defaults:end -->")


def _rows(board):
    folder = REPO / "results" / board
    rows = read_csv(folder / "leaderboard.csv")
    paired = {r["method"]: r for r in read_csv(folder / "paired.csv") if r["metric"] == "ndcg@10"}
    return (rows or None), paired


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
            valid = mean_std(r["valid_ndcg@10_mean"], r["valid_ndcg@10_std"])
            if float(r["valid_ndcg@10_mean"]) == best_valid:
                valid = f"**{valid}**"
            lines.append(
                f"| {r['dataset']} | {r['method']} | {r['n_seeds']} | {valid} | "
                f"{mean_std(r['test_ndcg@10_mean'], r['test_ndcg@10_std'])} | {interval} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    table_main(__doc__, table, MARKS)
