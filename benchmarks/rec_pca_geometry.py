"""What Rec-PCA does to the geometry of real LLM item vectors, along its trade-off alpha.

Not a test. For each dataset: RecBole builds the dataset and its training split exactly as a
run would (the dataset's properties file, `st` MiniLM vectors from the content-hashed cache),
then Rec-PCA runs for both formulations over an alpha grid on that split's co-occurrence
graph, and the table reports, relative to plain PCA, the semantic variance kept and the graph
TV / variance, plus the mean principal-angle sine to PCA and the time.

    python benchmarks/rec_pca_geometry.py                       # ml-100k, Amazon_Beauty, Amazon_Toys
    python benchmarks/rec_pca_geometry.py --datasets ml-100k    # one dataset
    python benchmarks/rec_pca_geometry.py --readme-only         # README's compact table from the saved one
Writes results/benchmarks/rec_pca_geometry.md, and the README's compact table (one row per
formulation and alpha, one column per dataset) from it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_blocks import write_block  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATASETS = {
    "ml-100k": {"properties": REPO / "properties" / "ml-100k.yaml", "overrides": {}},
    "Amazon_Beauty": {
        "properties": REPO / "properties" / "Amazon_Beauty.yaml",
        "overrides": {"data_path": str(REPO.parent / "shared" / "datasets")},
    },
    "Amazon_Toys": {
        "properties": REPO / "properties" / "Amazon_Toys.yaml",
        "overrides": {"data_path": str(REPO.parent / "shared" / "datasets")},
    },
}
ALPHAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
FORMULATIONS = ("item_space", "projection")
# The README's compact table: these rows, and the alpha of the boards' RecPCAOnly / TFLLMER presets in bold.
README_ROWS = [("PCA", "0")] + [("item_space", a) for a in ("0.05", "0.1", "0.2", "0.35", "0.5", "0.75", "1")]
README_ROWS += [("projection", a) for a in ("0.35", "0.5", "1")]
PRESET_ROW = ("item_space", "0.35")
MARKS = ("<!-- geometry:begin -->", "<!-- geometry:end -->")


def compact_table(saved):
    """The README's table from the saved one: kept / PCA, TV/var / PCA and sine per dataset."""
    data, datasets = {}, []
    for line in saved.splitlines():
        if not line.startswith("| ") or line.startswith("| dataset (items"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        dataset = cells[0].split(" (")[0]
        if dataset not in datasets:
            datasets.append(dataset)
        data[(cells[1], cells[2], dataset)] = f"{cells[3].split(' ')[0]}, {cells[4].split(' ')[0]}, {cells[5]}"
    lines = [
        "| formulation | α | " + " | ".join(f"{d}: kept / PCA, TV/var / PCA, sine" for d in datasets) + " |",
        "|---|---|" + "---|" * len(datasets),
    ]
    for formulation, alpha in README_ROWS:
        label = f"**{alpha}**" if (formulation, alpha) == PRESET_ROW else alpha
        row = [data[(formulation, alpha, d)] for d in datasets]
        lines.append(f"| {formulation} | {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def training_split_inputs(name, embedding_size):
    """(X, normalised graph) of the dataset's training split, built by RecBole and this plugin."""
    from recbole_tfllmer.quick_start import build_config, prepare
    from recbole_tfllmer.tfllmer.tfllmer import cooccurrence_graph_from_split

    spec = DATASETS[name]
    config = build_config(
        model="TFLLMER",
        dataset=name,
        config_file_list=[str(spec["properties"])],
        config_dict={
            **spec["overrides"],
            "item_init": "pca",
            "embedding_size": embedding_size,
            "hidden_size": embedding_size,
            "show_progress": False,
        },
    )
    prepared = prepare(config, with_trainer=False)
    train = prepared.train_data.dataset
    _, norm_adjacency = cooccurrence_graph_from_split(config, train)
    return np.asarray(train.item_text_embeddings[1:]), norm_adjacency[1:, 1:], int(norm_adjacency.nnz // 2)


def main():
    from recbole_tfllmer.tfllmer.rec_pca import rec_pca_projection

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--d", type=int, default=64, help="embedding size (the board's 64)")
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "rec_pca_geometry.md"))
    parser.add_argument("--readme-only", action="store_true", help="only rewrite the README's table from --out")
    args = parser.parse_args()
    if args.readme_only:
        write_block(*MARKS, compact_table(Path(args.out).read_text(encoding="utf-8")))
        return
    torch.set_num_threads(1)

    lines = [
        "| dataset (items, edges) | formulation | α | kept / PCA | TV / variance, / PCA | mean sine to PCA | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.datasets:
        X, graph, edges = training_split_inputs(name, args.d)
        pca = rec_pca_projection(X, graph, args.d, alpha=0.0).stats
        where = f"{name} ({X.shape[0]:,}, {edges:,})"
        lines.append(
            f"| {where} | PCA | 0 | 1 (kept {pca['retained_variance']:.3f}) | 1 ({pca['tv_ratio']:.3f}) | 0 | "
            f"{pca['seconds']['total']:.2f} |"
        )
        for formulation in FORMULATIONS:
            for alpha in ALPHAS:
                started = time.perf_counter()
                stats = rec_pca_projection(X, graph, args.d, alpha=alpha, formulation=formulation).stats
                seconds = time.perf_counter() - started
                lines.append(
                    f"| {where} | {formulation} | {alpha:g} | {stats['retained_variance'] / pca['retained_variance']:.2f} | "
                    f"{stats['tv_ratio'] / pca['tv_ratio']:.2f} ({stats['tv_ratio']:.3f}) | "
                    f"{stats['mean_sine_to_pca']:.2f} | {seconds:.2f} |"
                )
                print(lines[-1], flush=True)
    header = (
        f"# python benchmarks/rec_pca_geometry.py ({time.strftime('%Y-%m-%d')}; MiniLM `st` vectors, adjacent-pair "
        f"graph of RecBole's training split, d = {args.d}, exact PCA part, 1 BLAS thread for the eigensolvers)\n\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if set(args.datasets) == set(DATASETS):
        write_block(*MARKS, compact_table(Path(args.out).read_text(encoding="utf-8")))
        print("wrote the README's geometry table")


if __name__ == "__main__":
    main()
