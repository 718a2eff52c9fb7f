"""Time and memory of graph normalisation + Rec-PCA on a synthetic catalogue.

Not a test.  Builds float32 "LLM" embeddings with semantic clusters (plus a shared offset
and a spread of item norms, as real LLM vectors have), a co-occurrence graph from random
training rows whose collaborative clusters disagree with the semantic ones, then times
``normalized_adjacency`` + ``rec_pca_projection`` (d=64, the package defaults: alpha 0 = PCA,
unless ``--alpha``) and, in the same run, scikit-learn's PCA on the same matrix.  sklearn uses
``svd_solver='randomized'``: it is what its own 'auto' picks for this shape (a full LAPACK SVD
of 100k x 4096 would take minutes and needs several copies of X), so it is the fair "fast PCA"
baseline.  With ``--alpha`` > 0, Rec-PCA at alpha=0 (its exact-PCA path) is timed too, and its
subspace is compared with sklearn's.  Where ``--solver`` (default auto) resolves to the
iterative solver, its result is checked in the same run against the exact solver's (objective
ratio, principal-angle sine, graph total variation) unless ``--no-compare-exact``.
``--device cuda`` also times the same run with its passes over X on that torch device.

Targets (2 CPU cores): normalisation + Rec-PCA <= 30 s; peak RSS during that phase
<= 3x the embedding matrix, measured above the interpreter's own RSS at start-up (X itself
counts as 1x; the graph and every temporary count too).

    python benchmarks/bench_rec_pca.py                       # 100k x 4096, ~5M edges, the defaults
    python benchmarks/bench_rec_pca.py --alpha 0.35          # the boards' RecPCAOnly / TFLLMER presets
    python benchmarks/bench_rec_pca.py --items 20000 --dim 768 --edges 500000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_tfllmer.tfllmer.cooccurrence import build_cooccurrence_graph, normalized_adjacency  # noqa: E402
from recbole_tfllmer.tfllmer.rec_pca import DEFAULT_ALPHA, rec_pca_projection  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None

GIB = 2**30


class PeakRSS:
    """Samples the process RSS every few milliseconds inside a ``with`` block."""

    def __init__(self, interval=0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def current():
        if psutil is not None:
            return psutil.Process().memory_info().rss
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self):
        self.start_rss = self.current()
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def make_embeddings(n, dim, n_clusters, collab_labels, rng, rank=256, collab_strength=0.5):
    """Float32 vectors with semantic clusters, a decaying spectrum, a common offset and
    log-normal norm disparity (the two pathologies the paper names), plus a weaker signal
    of the collaborative clusters that the graph is smooth on."""
    rank = min(rank, dim)
    labels = rng.integers(0, n_clusters, n)
    basis = rng.standard_normal((rank, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    sigma = (np.arange(1, rank + 1, dtype=np.float32) ** -0.6)[None, :]
    centres = rng.standard_normal((n_clusters, rank), dtype=np.float32)
    collab_centres = rng.standard_normal((collab_labels.max() + 1, dim), dtype=np.float32)
    collab_centres *= np.float32(collab_strength / np.sqrt(dim))
    offset = rng.standard_normal(dim, dtype=np.float32) * np.float32(0.5 / np.sqrt(dim))
    norms = rng.lognormal(0.0, 0.5, n).astype(np.float32)
    X = np.empty((n, dim), dtype=np.float32)
    step = max(1, 2**26 // (dim * 4))
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        size = rows.stop - start
        latent = centres[labels[rows]] + np.float32(0.7) * rng.standard_normal((size, rank), dtype=np.float32)
        block = (latent * sigma) @ basis
        block += np.float32(0.02 / np.sqrt(dim)) * rng.standard_normal((size, dim), dtype=np.float32)
        block += collab_centres[collab_labels[rows]]
        block += offset
        block *= norms[rows, None]
        X[rows] = block
    return X


def collaborative_clusters(n, n_clusters, rng):
    """Item ids 1..n, randomly permuted into clusters (not contiguous in id space, as in
    RecBole where ids follow first appearance).  Returns (members, label of item id - 1)."""
    permutation = rng.permutation(n) + 1
    cluster_size = max(1, n // n_clusters)
    labels = np.empty(n, dtype=np.int64)
    labels[permutation - 1] = np.minimum(np.arange(n) // cluster_size, n_clusters - 1)
    return permutation, cluster_size, labels


def make_training_rows(n, n_edges, permutation, cluster_size, n_clusters, rng, max_len=50, in_cluster=0.85):
    """Random augmented-style rows (history, target): each row mostly draws from one
    collaborative cluster.  History lengths are uniform in [1, max_len]."""
    mean_pairs = (1 + max_len) / 2
    n_rows = int(np.ceil(1.15 * n_edges / mean_pairs))
    lens = rng.integers(1, max_len + 1, n_rows)
    cluster = rng.integers(0, n_clusters, n_rows)
    local = cluster[:, None] * cluster_size + rng.integers(0, cluster_size, (n_rows, max_len + 1))
    anywhere = rng.integers(0, n, (n_rows, max_len + 1))
    items = np.where(rng.random((n_rows, max_len + 1)) < in_cluster, local, anywhere)
    items = permutation[np.minimum(items, n - 1)].astype(np.int32)
    targets = items[np.arange(n_rows), lens]
    seqs = np.ascontiguousarray(items[:, :max_len])
    seqs[np.arange(max_len)[None, :] >= lens[:, None]] = 0
    return seqs, lens, targets


def warm_up_libraries():
    """Let OpenBLAS/LAPACK/scipy allocate their per-thread buffers before the baseline RSS
    is taken, so that fixed library overheads are not charged to X."""
    import scipy.linalg
    import scipy.sparse

    for dtype in (np.float32, np.float64):
        a = np.ones((512, 512), dtype=dtype)
        (a.T @ a) @ a
        scipy.linalg.eigh(a.T @ a + np.eye(512, dtype=dtype), subset_by_index=[500, 511])
        scipy.sparse.identity(512, dtype=dtype, format="csr") @ a


def sgemm_throughput(dim, block, seconds=2.0):
    """flop/s of X-pass-shaped float32 products (an 8192 x dim chunk times dim x block, and its
    transpose), measured here and now: the machine's arithmetic limit for the passes over X."""
    rng = np.random.default_rng(1)
    chunk = rng.standard_normal((8192, dim), dtype=np.float32)
    basis = rng.standard_normal((dim, block), dtype=np.float32)
    projected = chunk @ basis
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        projected = chunk @ basis
        chunk.T @ projected
        done += 2
    return done * 2.0 * chunk.shape[0] * dim * block / (time.perf_counter() - started)


def pass_flops(stats, n, dim, d):
    """Flops of the dense products over X that Rec-PCA's PCA part cannot avoid: per subspace step
    X_p V and X_p^T (X_p V) with the block, or the Gram X_p^T X_p for the exact solver; plus the
    final projections (2d columns)."""
    if stats["solver"] == "iterative":
        work = stats["iterations"] * 4.0 * n * dim * stats["block_size"]
    else:
        work = 1.0 * n * dim * dim  # syrk: n D (D + 1) / 2 multiply-adds
    return work + 2.0 * n * dim * 2 * d


def subspace_gap(W1, W2):
    """Largest principal-angle sine between two orthonormal bases (0 = same subspace)."""
    cosines = np.linalg.svd(W1.T @ W2, compute_uv=False)
    return float(np.sqrt(max(0.0, 1.0 - cosines.min() ** 2)))


def span_gap(Z1, Z2):
    """Largest principal-angle sine between the column spans of two embedding matrices."""
    return subspace_gap(np.linalg.qr(Z1.astype(np.float64))[0], np.linalg.qr(Z2.astype(np.float64))[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--edges", type=int, default=5_000_000, help="target number of undirected graph edges")
    parser.add_argument("--components", type=int, default=64, help="output dimension d")
    parser.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help="rec_pca_alpha (default: the package default, 0 = PCA; the boards' RecPCAOnly / TFLLMER presets use 0.35)",
    )
    parser.add_argument("--formulation", choices=["item_space", "projection"], default="item_space")
    parser.add_argument("--semantic-clusters", type=int, default=200)
    parser.add_argument("--collab-clusters", type=int, default=100)
    parser.add_argument("--sklearn", choices=["randomized", "full", "none"], default="randomized")
    parser.add_argument("--skip-lam0", action="store_true", help="do not time the alpha=0 (exact PCA) path")
    parser.add_argument("--solver", choices=["auto", "exact", "iterative"], default="auto", help="rec_pca_solver")
    parser.add_argument("--tol", type=float, default=None, help="rec_pca_tol (default: the library's)")
    parser.add_argument(
        "--no-compare-exact",
        action="store_true",
        help="do not re-run with solver='exact' to measure the iterative solver's accuracy",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="also run the same Rec-PCA with rec_pca_device=DEVICE (e.g. cuda) and compare it with the numpy result",
    )
    parser.add_argument("--time-target", type=float, default=30.0)
    parser.add_argument("--ram-target", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    warm_up_libraries()
    baseline_rss = PeakRSS.current()  # interpreter + initialised libraries; the rest is ours
    print(f"cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    t0 = time.perf_counter()
    permutation, cluster_size, collab_labels = collaborative_clusters(args.items, args.collab_clusters, rng)
    X = make_embeddings(args.items, args.dim, args.semantic_clusters, collab_labels, rng)
    print(f"X: {X.shape} float32, {X.nbytes / GIB:.2f} GiB (made in {time.perf_counter() - t0:.1f} s)")

    seqs, lens, targets = make_training_rows(
        args.items, args.edges, permutation, cluster_size, args.collab_clusters, rng
    )
    t0 = time.perf_counter()
    graph = build_cooccurrence_graph(seqs, lens, targets, args.items + 1, window=0)
    t_build = time.perf_counter() - t0
    n_rows = len(lens)
    del seqs, lens, targets
    graph = graph[1:, 1:].tocsr()  # the wrapper drops the padding row/column
    print(f"graph: {n_rows} training rows -> {graph.nnz // 2} undirected edges (build {t_build:.1f} s, window=0)")

    solver_options = {"solver": args.solver, **({"tol": args.tol} if args.tol is not None else {})}
    tradeoff = {"alpha": args.alpha, "formulation": args.formulation}
    load_before = os.getloadavg()[0]
    with PeakRSS() as memory:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        norm_graph = normalized_adjacency(graph)
        t_norm = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = rec_pca_projection(X, norm_graph, args.components, **tradeoff, **solver_options)
        t_rec = time.perf_counter() - t0
        cpu_rec = time.process_time() - cpu0
    rss_start, rss_peak = memory.start_rss, memory.peak
    del graph
    net_peak = rss_peak - baseline_rss
    print(
        f"Rec-PCA {args.formulation} alpha={args.alpha}: normalise {t_norm:.2f} s + projection {t_rec:.2f} s = {t_norm + t_rec:.2f} s; "
        f"peak RSS {rss_peak / GIB:.2f} GiB, {net_peak / X.nbytes:.2f}x X above the interpreter baseline "
        f"({baseline_rss / GIB:.2f} GiB; X, graph and all temporaries count); "
        f"rise during the phase {(rss_peak - rss_start) / X.nbytes:.2f}x X"
    )
    stats = result.stats
    print(
        f"  semantic variance kept {stats['retained_variance']:.4f} (PCA {stats['retained_variance_pca']:.4f}); "
        f"graph TV / variance {stats['tv_ratio']:.4f} (PCA {stats['tv_ratio_pca']:.4f}); mean principal-angle sine "
        f"to PCA {stats['mean_sine_to_pca']:.3f}; isolated items {stats['n_isolated']}"
        + (f"; semantic kernel rank {stats['kernel_rank']}" if "kernel_rank" in stats else "")
    )
    print("  phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stats["seconds"].items()))
    if stats["solver"] == "iterative":
        print(
            f"  solver iterative (PCA part): {stats['iterations']} steps of block {stats['block_size']}, "
            f"relative residual {stats['relative_residual']:.1e}"
        )
    else:
        print("  solver exact")
    if "tradeoff_product_seconds" in stats:
        tradeoff_seconds = stats["seconds"]["tradeoff"]
        print(
            f"  trade-off (ARPACK, graph scale and trade-off solves): {stats['tradeoff_operator_columns']} operator "
            f"columns, {stats['tradeoff_product_seconds']:.1f} s in the products and the other "
            f"{tradeoff_seconds - stats['tradeoff_product_seconds']:.1f} s mostly in eigsh's own re-orthogonalisation and restarts"
        )
    print(
        f"  process CPU time {cpu_rec:.1f} s over {t_norm + t_rec:.1f} s wall "
        f"(1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"other processes inflate wall time)"
    )

    throughput = sgemm_throughput(args.dim, stats.get("block_size", 2 * args.components))
    flops = pass_flops(stats, args.items, args.dim, args.components)
    pca_seconds = sum(v for k, v in stats["seconds"].items() if k in ("pca_iterations", "gram_matrices", "pca_eigh"))
    print(
        f"  arithmetic limit: the PCA part's products over X are {flops / 1e12:.2f} Tflop; float32 products of "
        f"that shape run at {throughput / 1e9:.1f} Gflop/s here (measured now), so the limit is "
        f"{flops / throughput:.1f} s. PCA part {pca_seconds:.1f} s = {pca_seconds / (flops / throughput):.2f}x the "
        f"limit; whole run {t_norm + t_rec:.1f} s = {(t_norm + t_rec) / (flops / throughput):.2f}x (the graph "
        f"trade-off is sparse and memory-bound, outside this flop count)"
    )

    rows = [(f"Rec-PCA ({stats['solver']})", t_norm + t_rec, net_peak)]
    if stats["solver"] != "exact" and not args.no_compare_exact:
        with PeakRSS() as memory:
            t0 = time.perf_counter()
            exact = rec_pca_projection(X, norm_graph, args.components, **tradeoff, solver="exact")
            t_exact = time.perf_counter() - t0
        rows.append(("Rec-PCA (exact)", t_exact, memory.peak - baseline_rss))
        print(
            f"Rec-PCA {args.formulation} alpha={args.alpha} exact solver: {t_exact:.2f} s, peak {(memory.peak - baseline_rss) / X.nbytes:.2f}x X; "
            f"phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in exact.stats["seconds"].items())
        )
        print(
            f"  iterative vs exact: objective ratio {result.eigenvalues.sum() / exact.eigenvalues.sum():.8f}, "
            f"max principal-angle sine {span_gap(result.embeddings, exact.embeddings):.2e}, graph TV "
            f"{stats['graph_tv']:.6g} vs {exact.stats['graph_tv']:.6g}, retained variance "
            f"{stats['retained_variance']:.6f} vs {exact.stats['retained_variance']:.6f}"
        )
        del exact
    if args.device is not None:
        with PeakRSS() as memory:
            t0 = time.perf_counter()
            on_device = rec_pca_projection(
                X, norm_graph, args.components, **tradeoff, **solver_options, device=args.device
            )
            t_device = time.perf_counter() - t0
        rows.append(
            (f"Rec-PCA ({on_device.stats['solver']}, passes on {args.device})", t_device, memory.peak - baseline_rss)
        )
        print(
            f"Rec-PCA {args.formulation} alpha={args.alpha} with its passes over X on {args.device}: {t_device:.2f} s "
            f"({t_rec / t_device:.2f}x numpy's speed); phases (s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in on_device.stats["seconds"].items())
            + (
                f"; trade-off eigensolver {on_device.stats['tradeoff_eigensolver']}, "
                f"{on_device.stats['tradeoff_operator_columns']} operator columns"
                if "tradeoff_operator_columns" in on_device.stats
                else ""
            )
        )
        print(
            f"  {args.device} vs numpy: objective ratio {on_device.eigenvalues.sum() / result.eigenvalues.sum():.8f}, "
            f"max principal-angle sine {span_gap(on_device.embeddings, result.embeddings):.2e}, retained variance "
            f"{on_device.stats['retained_variance']:.6f} vs {stats['retained_variance']:.6f}"
        )
        del on_device
    lam0 = None
    if not args.skip_lam0 and args.alpha != 0:  # at alpha 0 the main run is this one
        with PeakRSS() as memory:
            t0 = time.perf_counter()
            lam0 = rec_pca_projection(X, norm_graph, args.components, alpha=0.0, solver="exact")
            t_lam0 = time.perf_counter() - t0
        rows.append(("Rec-PCA alpha=0 (exact PCA)", t_lam0, memory.peak - baseline_rss))
        print(
            f"Rec-PCA alpha=0 (exact PCA; graph only for its TV): {t_lam0:.2f} s, "
            f"peak {(memory.peak - baseline_rss) / X.nbytes:.2f}x X"
        )
        print("  phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in lam0.stats["seconds"].items()))
        print(
            f"  alpha={args.alpha} vs PCA: graph TV / variance {stats['tv_ratio'] / lam0.stats['tv_ratio']:.3f}x, "
            f"semantic variance kept {stats['retained_variance']:.4f} vs {lam0.stats['retained_variance']:.4f}"
        )

    if args.sklearn != "none":
        from sklearn.decomposition import PCA

        with PeakRSS() as memory:
            t0 = time.perf_counter()
            pca = PCA(n_components=args.components, svd_solver=args.sklearn, random_state=args.seed).fit(X)
            pca_embeddings = pca.transform(X)
            t_sk = time.perf_counter() - t0
        del pca_embeddings
        rows.append((f"sklearn PCA ({args.sklearn})", t_sk, memory.peak - baseline_rss))
        print(
            f"sklearn PCA svd_solver={args.sklearn}: fit+transform {t_sk:.2f} s, "
            f"peak {(memory.peak - baseline_rss) / X.nbytes:.2f}x X"
        )
        reference = lam0 if lam0 is not None else (result if args.alpha == 0 else None)
        if reference is not None:
            gap = subspace_gap(reference.components, pca.components_.T.astype(np.float64))
            print(
                f"  vs Rec-PCA alpha=0: max principal-angle sine {gap:.2e}; retained variance "
                f"sklearn {pca.explained_variance_ratio_.sum():.6f} vs Rec-PCA {reference.stats['retained_variance']:.6f}"
            )

    print("\n| method | time (s) | peak RSS above baseline / size of X | time / sklearn |")
    print("|---|---|---|---|")
    sk_time = rows[-1][1] if args.sklearn != "none" else None
    for name, seconds, peak in rows:
        ratio = f"{seconds / sk_time:.2f}" if sk_time else "-"
        print(f"| {name} | {seconds:.2f} | {peak / X.nbytes:.2f} | {ratio} |")

    time_ok = t_norm + t_rec <= args.time_target
    ram_ok = net_peak <= args.ram_target * X.nbytes
    print(
        f"\n{'PASS' if time_ok else 'FAIL'}: normalisation + Rec-PCA {t_norm + t_rec:.2f} s <= {args.time_target:.0f} s"
    )
    print(
        f"{'PASS' if ram_ok else 'FAIL'}: peak RSS above baseline {net_peak / X.nbytes:.2f}x X <= {args.ram_target:.1f}x X"
    )
    print(
        f"process max RSS (getrusage): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB; "
        f"load average at end: {os.getloadavg()}"
    )
    return 0 if (time_ok and ram_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
