"""What Rec-PCA does to the geometry of real LLM item vectors, along its trade-off alpha.

Not a test. For each dataset: RecBole builds the dataset and its training split exactly as a
run would (the dataset's properties file, `st` MiniLM vectors from the content-hashed cache),
then Rec-PCA runs for both formulations over an alpha grid on that split's co-occurrence
graph, and the table reports, relative to plain PCA, the semantic variance kept and the graph
TV / variance, plus the mean principal-angle sine to PCA and the time.

    python benchmarks/rec_pca_geometry.py                       # ml-100k, Amazon_Beauty, Amazon_Toys
    python benchmarks/rec_pca_geometry.py --datasets ml-100k    # one dataset
Writes results/benchmarks/rec_pca_geometry.md (the README's geometry table).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
