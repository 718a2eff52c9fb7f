"""Encoding throughput: the plugin's cached encoding path vs bare sentence-transformers.

Issue target: the plugin's encode (through `encode_with_cache`, chunked, checksummed, written
atomically) runs at >= 0.95x the throughput of a bare `SentenceTransformer.encode` with the
same batch size on the same texts, and a cached re-run encodes nothing.

    python benchmarks/bench_encoding.py            # ml-100k's 1,682 item texts, MiniLM, 2 repeats
    python benchmarks/bench_encoding.py --items 400 --repeats 1
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ml100k_texts(limit=None):
    import recbole

    from recbole_tfllmer.text.item_text import item_texts_from_file

    item_file = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.item")
    texts, _ = item_texts_from_file(
        item_file, "item_id", template="Title: {movie_title}. Year: {release_year}. Genres: {class}"
    )
    tokens = sorted(texts)[:limit] if limit else sorted(texts)
    return tokens, [texts[t] or "" for t in tokens]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=None, help="use only the first N items")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from recbole_tfllmer.text.encoders import SentenceTransformerEncoder, bundled_model_dir
    from recbole_tfllmer.text.store import encode_with_cache

    tokens, texts = ml100k_texts(args.items)
    model_dir = bundled_model_dir()
    bare = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    plugin = SentenceTransformerEncoder(model_dir, device="cpu", batch_size=args.batch_size)
    plugin.load()
    bare.encode(texts[:64], batch_size=args.batch_size)  # warm-up of both code paths
    plugin.encode(texts[:64])

    bare_times, plugin_times = [], []
    with tempfile.TemporaryDirectory() as cache_root:
        for repeat in range(args.repeats):  # interleaved, so load drifts hit both alike
            t0 = time.perf_counter()
            reference = bare.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            bare_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours, info = encode_with_cache(plugin, tokens, texts, os.path.join(cache_root, str(repeat)), "bench")
            plugin_times.append(time.perf_counter() - t0)
            assert info.n_encoded == len(texts) and not info.cache_hit
        t0 = time.perf_counter()
        cached, info = encode_with_cache(plugin, tokens, texts, os.path.join(cache_root, "0"), "bench")
        cached_seconds = time.perf_counter() - t0

    bare_s, plugin_s = statistics.median(bare_times), statistics.median(plugin_times)
    ratio = bare_s / plugin_s  # throughput ratio: plugin items/s over bare items/s
    same = bool(np.allclose(ours, reference, atol=1e-5))
    print(
        f"{len(texts)} texts, batch {args.batch_size}, torch threads {torch.get_num_threads()}, {args.repeats} repeats"
    )
    print(f"  bare SentenceTransformer.encode  median {bare_s:.2f} s  ({len(texts) / bare_s:.0f} items/s)")
    print(f"  plugin encode_with_cache (miss)  median {plugin_s:.2f} s  ({len(texts) / plugin_s:.0f} items/s)")
    print(
        f"  throughput ratio plugin/bare {ratio:.3f}  {'PASS' if ratio >= args.target else 'FAIL'} (target >= {args.target})"
    )
    print(f"  same vectors as bare encode: {same}")
    print(
        f"  cached re-run: {info.n_encoded} items encoded, cache hit {info.cache_hit}, {cached_seconds:.3f} s"
        f"  {'PASS' if info.cache_hit and info.n_encoded == 0 else 'FAIL'}"
    )
    ok = ratio >= args.target and info.cache_hit and info.n_encoded == 0 and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
