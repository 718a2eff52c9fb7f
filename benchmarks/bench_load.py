"""Wall time and peak memory of the two data-sized steps of TF-LLMER.

Not a test. Each measurement runs in a fresh Python process, so peak RSS is not inflated
by an earlier one; memory is reported above the RSS the process had just before the
step (its inputs already resident), and as a multiple of the item embedding matrix.

(a) The data hook on Amazon_Beauty (12,101 items, MiniLM, 384 dims): RecBole's own
    dataset build (for scale), then `compute_item_embeddings_with_info` with a warm cache
    (the usual case: a checksum and a read), and -- with --cold, or when the cache is
    empty -- once with a cold cache (model load + encoding every item).
(b) Co-occurrence graph + Rec-PCA on a synthetic catalogue of 200,000 items x 384 float32
    (an LLM matrix of 293 MiB) with realistic sequences: 200k users, Zipf item popularity
    inside collaborative clusters, lengths 5 + geometric (mean ~10), RecBole's
    leave-one-out training rows with MAX_ITEM_LIST_LENGTH=50, window 1 (the default).

    python benchmarks/bench_load.py                 # (a) warm (cold if no cache yet) and (b)
    python benchmarks/bench_load.py --cold          # also time a cold encode of Amazon_Beauty
    python benchmarks/bench_load.py --skip-hook --items 50000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_rec_pca import PeakRSS, make_embeddings  # noqa: E402

MIB = 2**20
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "tfllmer-bench-embedding-cache"


def release_freed_memory():
    """Give memory freed by earlier steps back to the OS (glibc keeps it otherwise), so the
    next step's RSS rise counts the pages it really needs, not pages it found free."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------- (a) hook
def beauty_config(cache_dir):
    from recbole_tfllmer.quick_start import build_config

    return build_config(
        "TFLLMER",
        "Amazon_Beauty",
        config_file_list=[str(REPO / "properties" / "Amazon_Beauty.yaml")],
        config_dict={
            "data_path": str(REPO.parent / "shared" / "datasets"),
            "embedding_cache_dir": str(cache_dir),
            "use_gpu": False,
            "show_progress": False,
            "item_init": "random",
        },
    )


def part_hook(cache_dir):
    import logging

    from recbole_tfllmer.data import create_dataset
    from recbole_tfllmer.text.hook import compute_item_embeddings_with_info

    logging.basicConfig(level=logging.WARNING)
    config = beauty_config(cache_dir)
    with PeakRSS() as data_memory:
        t0 = time.perf_counter()
        dataset = create_dataset(config)  # item_init random: RecBole's build only
        data_seconds = time.perf_counter() - t0
    config["item_init"] = "rec_pca"
    release_freed_memory()
    with PeakRSS() as memory:
        t0 = time.perf_counter()
        result = compute_item_embeddings_with_info(config, dataset)
        seconds = time.perf_counter() - t0
    info = result.info
    return {
        "items": info["n_items"],
        "dim": info["dim"],
        "cache_hit": info["cache_hit"],
        "n_encoded": info["n_encoded"],
        "encode_seconds": info["encode_seconds"],
        "seconds": seconds,
        "matrix_bytes": result.matrix.nbytes,
        "rss_before": memory.start_rss,
        "rss_peak": memory.peak,
        "recbole_seconds": data_seconds,
        "recbole_rss_rise": data_memory.peak - data_memory.start_rss,
        "threads": __import__("torch").get_num_threads(),
    }


# ------------------------------------------------------------------- (b) graph + Rec-PCA
def zipf_cdf(n, exponent):
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return np.cumsum(weights / weights.sum())


def make_sequences(n_items, n_users, rng, cluster_size=100, in_cluster=0.75, exponent=1.0):
    """Per-user item sequences (flat array + user offsets): each user has a home cluster
    (clusters drawn by popularity), 75% of picks inside it, the rest anywhere; Zipf
    popularity within clusters and over the catalogue. Item ids 1..n_items."""
    n_clusters = n_items // cluster_size
    members = (rng.permutation(n_items) + 1).reshape(n_clusters, cluster_size)
    global_order = rng.permutation(n_items) + 1
    lengths = 5 + rng.geometric(1 / 6, n_users) - 1
    lengths = np.minimum(lengths, 200)
    total = int(lengths.sum())
    home = np.searchsorted(zipf_cdf(n_clusters, 0.8), rng.random(n_users))
    user_of = np.repeat(np.arange(n_users), lengths)
    local = members[home[user_of], np.searchsorted(zipf_cdf(cluster_size, exponent), rng.random(total))]
    anywhere = global_order[np.minimum(np.searchsorted(zipf_cdf(n_items, exponent), rng.random(total)), n_items - 1)]
    flat = np.where(rng.random(total) < in_cluster, local, anywhere).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return flat, starts, lengths


def training_rows(flat, starts, lengths, max_len=50, chunk=500_000):
    """RecBole's augmented rows of the training split under leave-one-out (valid_and_test):
    targets at positions 1 .. n-3 of each user's sequence, history = the up to `max_len`
    items before, left-aligned and zero-padded (RecBole's item_id_list layout)."""
    n_train = np.maximum(lengths - 3, 0)
    target_pos = (
        np.repeat(starts, n_train) + (np.arange(n_train.sum()) - np.repeat(np.cumsum(n_train) - n_train, n_train)) + 1
    )
    user_start = np.repeat(starts, n_train)
    hist_start = np.maximum(user_start, target_pos - max_len)
    seqs = np.zeros((len(target_pos), max_len), dtype=np.int64)
    offsets = np.arange(max_len)
    for lo in range(0, len(target_pos), chunk):
        hi = min(lo + chunk, len(target_pos))
        positions = hist_start[lo:hi, None] + offsets[None, :]
        valid = positions < target_pos[lo:hi, None]
        seqs[lo:hi] = np.where(valid, flat[np.minimum(positions, len(flat) - 1)], 0)
    return seqs, (target_pos - hist_start).astype(np.int64), flat[target_pos]


def part_graph(n_items, n_users, dim, components, alpha, window, seed):
    from recbole_tfllmer.tfllmer.cooccurrence import build_cooccurrence_graph, normalized_adjacency
    from recbole_tfllmer.tfllmer.rec_pca import rec_pca_projection

    rng = np.random.default_rng(seed)
    flat, starts, lengths = make_sequences(n_items, n_users, rng)
    seqs, lens, targets = training_rows(flat, starts, lengths)
    collab = np.zeros(n_items, dtype=np.int64)
    X = make_embeddings(n_items, dim, 200, collab, rng)
    del flat
    out = {
        "interactions": int(lengths.sum()),
        "rows": len(lens),
        "rows_bytes": seqs.nbytes + lens.nbytes + targets.nbytes,
        "x_bytes": X.nbytes,
    }
    release_freed_memory()
    with PeakRSS() as memory:
        t0 = time.perf_counter()
        graph = build_cooccurrence_graph(seqs, lens, targets, n_items=n_items + 1, window=window)
        out["graph_seconds"] = time.perf_counter() - t0
        out["edges"] = int(graph.nnz // 2)
    out["graph_rss_before"], out["graph_rss_peak"] = memory.start_rss, memory.peak
    release_freed_memory()
    with PeakRSS() as memory:
        t0 = time.perf_counter()
        norm = normalized_adjacency(graph)[1:, 1:]  # as the wrapper: drop the padding row/column
        result = rec_pca_projection(X, norm, components, alpha=alpha)
        out["rec_pca_seconds"] = time.perf_counter() - t0
    out["rec_pca_rss_before"], out["rec_pca_rss_peak"] = memory.start_rss, memory.peak
    out["graph_bytes"] = graph.data.nbytes + graph.indices.nbytes + graph.indptr.nbytes
    out["isolated"] = result.stats["n_isolated"]
    out["phases"] = result.stats["seconds"]
    return out


# ---------------------------------------------------------------------------- driver
def run_part(argv):
    """This script in a fresh process; returns the JSON it prints last."""
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"part {argv} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report_hook(label, r):
    rise = r["rss_peak"] - r["rss_before"]
    how = "cache hit" if r["cache_hit"] else f"encoded {r['n_encoded']} items in {r['encode_seconds']:.1f} s"
    print(
        f"(a) hook, {label}: {r['items']} items x {r['dim']} -> {r['seconds']:.2f} s wall ({how}, "
        f"torch threads {r['threads']}); peak RSS {r['rss_peak'] / MIB:.0f} MiB, +{rise / MIB:.0f} MiB during the "
        f"hook = {rise / r['matrix_bytes']:.1f}x the {r['matrix_bytes'] / MIB:.1f} MiB embedding matrix"
    )
    return rise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["hook", "graph"], help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache for Amazon_Beauty")
    parser.add_argument("--cold", action="store_true", help="also time a cold encode (a fresh cache dir)")
    parser.add_argument("--skip-hook", action="store_true")
    parser.add_argument("--skip-graph", action="store_true")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.35, help="rec_pca_alpha")
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.part == "hook":
        print(json.dumps(part_hook(args.cache_dir)))
        return
    if args.part == "graph":
        print(
            json.dumps(
                part_graph(args.items, args.users, args.dim, args.components, args.alpha, args.window, args.seed)
            )
        )
        return

    print(f"cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    rows = []
    if not args.skip_hook:
        cache = Path(args.cache_dir)
        if args.cold or not any(cache.glob("Amazon_Beauty-*.emb.json")):
            cold_dir = (
                Path(tempfile.mkdtemp(prefix="tfllmer-cold-cache-"))
                if any(cache.glob("Amazon_Beauty-*.emb.json"))
                else cache
            )
            r = run_part(["--part", "hook", "--cache-dir", str(cold_dir)])
            rise = report_hook("cold cache", r)
            rows.append(("hook, cold cache (model load + encode)", r["seconds"], rise, r["matrix_bytes"]))
        r = run_part(["--part", "hook", "--cache-dir", str(cache)])
        rise = report_hook("warm cache", r)
        print(
            f"    (RecBole's own dataset build before it: {r['recbole_seconds']:.1f} s, "
            f"+{r['recbole_rss_rise'] / MIB:.0f} MiB)"
        )
        rows.append(("hook, warm cache (checksum + read)", r["seconds"], rise, r["matrix_bytes"]))
    if not args.skip_graph:
        r = run_part(
            [
                "--part",
                "graph",
                "--items",
                str(args.items),
                "--users",
                str(args.users),
                "--dim",
                str(args.dim),
                "--components",
                str(args.components),
                "--alpha",
                str(args.alpha),
                "--window",
                str(args.window),
                "--seed",
                str(args.seed),
            ]
        )
        x = r["x_bytes"]
        g_rise = r["graph_rss_peak"] - r["graph_rss_before"]
        p_rise = r["rec_pca_rss_peak"] - r["rec_pca_rss_before"]
        print(
            f"(b) synthetic catalogue: {args.items} items x {args.dim} float32 ({x / MIB:.0f} MiB), "
            f"{r['interactions']} interactions, {r['rows']} training rows ({r['rows_bytes'] / MIB:.0f} MiB, "
            f"resident before either step)"
        )
        print(
            f"    graph (window {args.window}): {r['graph_seconds']:.2f} s, {r['edges']} edges "
            f"({r['graph_bytes'] / MIB:.0f} MiB CSR), +{g_rise / MIB:.0f} MiB peak = {g_rise / x:.2f}x X"
        )
        print(
            f"    normalise + Rec-PCA (d={args.components}, alpha={args.alpha}): {r['rec_pca_seconds']:.2f} s, "
            f"+{p_rise / MIB:.0f} MiB peak = {p_rise / x:.2f}x X; {r['isolated']} isolated items"
        )
        print("    phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))
        rows.append(
            (f"co-occurrence graph, {args.items // 1000}k items (window {args.window})", r["graph_seconds"], g_rise, x)
        )
        rows.append(
            (
                f"normalise + Rec-PCA, {args.items // 1000}k x {args.dim} -> {args.components}",
                r["rec_pca_seconds"],
                p_rise,
                x,
            )
        )
    print("\n| step | wall time (s) | peak RSS rise | x embedding matrix |")
    print("|---|---|---|---|")
    for name, seconds, rise, base in rows:
        print(f"| {name} | {seconds:.1f} | {rise / MIB:.0f} MiB | {rise / base:.2f}x |")


if __name__ == "__main__":
    main()
