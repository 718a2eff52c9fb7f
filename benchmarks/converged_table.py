"""The converged boards of issue #9 as one table: every landed row with its seeds, epochs to best
and cap, validation and test NDCG@10, and the paired 95% intervals against LLMInit and the best
other method; then each row's distance to a published result. Read from the boards' own
summaries (results/<board>/leaderboard.csv, paired.csv, anchors.csv), so rerun each board's
`--summary-only` first.

    python benchmarks/converged_table.py            # prints the table
    python benchmarks/converged_table.py --readme   # and writes it into README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_blocks import REPO, mean_std, read_csv, table_main  # noqa: E402

BOARDS = ("Amazon_Beauty-converged", "Amazon_Toys-converged", "ml-100k-converged")
MARKS = ("<!-- converged:begin -->", "<!-- converged:end -->")


def _interval(row, kind):
    if not row or row[f"{kind}_diff"] in ("", "nan"):
        return "—"
    text = f"{float(row[f'{kind}_diff']):+.4f} [{float(row[f'{kind}_low']):+.4f}, {float(row[f'{kind}_high']):+.4f}]"
    return text if kind == "baseline" else text + f" vs {row[kind].split('/')[0]}"


def table():
    lines = [
        "| dataset | backbone | method | seeds | best epoch / run / cap | valid NDCG@10 | test NDCG@10 | "
        "test HR@10 | NDCG@10 − LLMInit [95%] | NDCG@10 − best other [95%] | first? |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    anchor_lines = []
    for board in BOARDS:
        folder = REPO / "results" / board
        rows = read_csv(folder / "leaderboard.csv")
        paired = {(r["backbone"], r["method"]): r for r in read_csv(folder / "paired.csv") if r["metric"] == "ndcg@10"}
        if not rows:
            lines.append(f"| {board.replace('-converged', '')} | not run yet | | | | | | | | | |")
            continue
        for r in rows:
            p = paired.get((r["backbone"], r["method"]))
            first = "**first**" if p and p["first"] == "True" else ""
            epochs = f"{float(r['best_epoch_mean']):.0f} / {float(r['epochs_run_mean']):.0f} / {r['epoch_cap_max']}"
            lines.append(
                f"| {r['dataset']} | {r['backbone']} | {r['method']} | {r['n_seeds']}{'¹' if int(r['n_seeds']) < 2 else ''} | "
                f"{epochs} | {mean_std(r['valid_ndcg@10_mean'], r['valid_ndcg@10_std'])} | "
                f"{mean_std(r['test_ndcg@10_mean'], r['test_ndcg@10_std'])} | "
                f"{mean_std(r['test_hit@10_mean'], r['test_hit@10_std'])} | {_interval(p, 'baseline')} | "
                f"{_interval(p, 'best_other')} | {first} |"
            )
        for a in read_csv(folder / "anchors.csv"):
            metric = a["metric"].replace("hit", "HR").replace("ndcg", "NDCG")
            if int(a["seeds"]) == 0:
                ours = "not run yet"
            else:
                ours = f"{float(a['ours']):.4f}, {float(a['diff']):+.4f}"
                if a["low"] not in ("", "nan"):
                    ours += f" [{float(a['low']):+.4f}, {float(a['high']):+.4f}]"
                ours += f" ({a['seeds']} seed{'s' if int(a['seeds']) > 1 else ''})"
            anchor_lines.append(
                f"| {a['dataset']} | {a['backbone']} {a['method']} | {metric} | {float(a['anchor']):.4f} | "
                f"{a['source']} | {ours} |"
            )
    text = "\n".join(lines) + "\n"
    if anchor_lines:
        text += (
            "\nDistance to published results on the same split and filtering (full ranking; the interval is "
            "ours alone):\n\n| dataset | row | metric | published | source | ours, ours − published [95%] |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(anchor_lines) + "\n"
        )
    return text


if __name__ == "__main__":
    table_main(__doc__, table, MARKS)
