"""Encoding throughput: the plugin's cached encoding path vs bare sentence-transformers.

Issue target: the plugin's encode (through `encode_with_cache`, chunked, checksummed, written
atomically) runs at >= 0.95x the throughput of a bare `SentenceTransformer.encode` with the
same batch size on the same texts, and a cached re-run encodes nothing.

    python benchmarks/bench_encoding.py            # ml-100k's 1,682 item texts, MiniLM, 2 repeats
    python benchmarks/bench_encoding.py --items 400 --repeats 1
    python benchmarks/bench_encoding.py --device cuda --dtype bfloat16 --decoder 0.5b   # on a GPU

``--decoder SIZE`` also times a decoder-only LLM built from a config (Qwen2 architecture with the
bundled MiniLM tokenizer, random weights: throughput does not depend on them): ``0.5b`` is
Qwen2-0.5B's shape (24 layers, width 896, GQA 14/2 heads; 0.4B parameters with this vocabulary),
``tiny`` a 2-layer one for CPU smoke runs. The plugin's `TransformersEncoder` (last-token pooling,
through `encode_with_cache`) is compared with a bare transformers forward pass over the same
length-sorted batches.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ml100k_texts(limit=None, item_file=None):
    from recbole_tfllmer.text.item_text import item_texts_from_file

    if item_file is None:  # RecBole's wheel ships ml-100k
        import recbole

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
    parser.add_argument("--device", default="cpu", help="torch device for both paths (cuda on a GPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--decoder", choices=["none", "tiny", "0.5b"], default="none")
    parser.add_argument(
        "--decoder-only", action="store_true", help="skip MiniLM (e.g. where only its tokenizer files are at hand)"
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for the decoder (default: MiniLM's)")
    parser.add_argument("--item-file", default=None, help="ml-100k.item (default: the copy in RecBole's wheel)")
    args = parser.parse_args(argv)
    if args.decoder_only:
        tokens, texts = ml100k_texts(args.items, args.item_file)
        return 0 if bench_decoder(args, tokens, texts) else 1

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from recbole_tfllmer.text.encoders import SentenceTransformerEncoder, bundled_model_dir
    from recbole_tfllmer.text.store import encode_with_cache

    tokens, texts = ml100k_texts(args.items, args.item_file)
    model_dir = bundled_model_dir()
    bare = SentenceTransformer(model_dir, device=args.device, local_files_only=True)
    if args.dtype != "float32" and args.device.startswith("cuda"):
        bare.to(getattr(torch, args.dtype))
    plugin = SentenceTransformerEncoder(model_dir, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
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
    same = bool(np.allclose(ours, reference, atol=1e-5 if args.dtype == "float32" else 2e-2))
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
    if args.decoder != "none":
        ok = bench_decoder(args, tokens, texts) and ok
    return 0 if ok else 1


DECODERS = {  # Qwen2 shapes (vocabulary: the bundled MiniLM tokenizer's)
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
    "0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
    ),
}


def bench_decoder(args, tokens, texts):
    """Plugin TransformersEncoder (last-token pooling) vs a bare forward over the same batches."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer, Qwen2Config, Qwen2Model

    from recbole_tfllmer.text.encoders import TransformersEncoder, bundled_model_dir, pool_hidden_states
    from recbole_tfllmer.text.store import encode_with_cache

    with tempfile.TemporaryDirectory() as model_dir, tempfile.TemporaryDirectory() as cache_root:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or bundled_model_dir())
        torch.manual_seed(0)
        config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=512, **DECODERS[args.decoder])
        Qwen2Model(config).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        kwargs = {"dtype": getattr(torch, args.dtype)} if args.dtype != "float32" else {}
        bare = AutoModel.from_pretrained(model_dir, local_files_only=True, **kwargs).to(args.device).eval()
        n_params = sum(p.numel() for p in bare.parameters())
        plugin = TransformersEncoder(
            model_dir, pooling="last", device=args.device, dtype=args.dtype, batch_size=args.batch_size
        )
        plugin.load()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))

        def bare_encode():
            out = np.zeros((len(texts), config.hidden_size), dtype=np.float32)
            for start in range(0, len(texts), args.batch_size):
                idx = order[start : start + args.batch_size]
                batch = tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt"
                )
                batch = {k: v.to(args.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
                with torch.inference_mode():
                    hidden = bare(**batch)[0].float()
                out[idx] = pool_hidden_states(hidden, batch["attention_mask"], "last").cpu().numpy()
            return out

        bare_encode()  # warm-up
        bare_times, plugin_times = [], []
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            reference = bare_encode()
            bare_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours, _ = encode_with_cache(plugin, tokens, texts, os.path.join(cache_root, str(repeat)), "bench")
            plugin_times.append(time.perf_counter() - t0)
    bare_s, plugin_s = statistics.median(bare_times), statistics.median(plugin_times)
    ratio = bare_s / plugin_s
    close = bool(np.allclose(ours, reference, rtol=1e-3, atol=1e-4 if args.dtype == "float32" else 5e-2))
    print(f"decoder {args.decoder} (Qwen2 shape, {n_params / 1e6:.0f}M parameters), {args.dtype} on {args.device}:")
    print(f"  bare transformers forward  median {bare_s:.2f} s  ({len(texts) / bare_s:.0f} items/s)")
    print(f"  plugin TransformersEncoder median {plugin_s:.2f} s  ({len(texts) / plugin_s:.0f} items/s)")
    print(
        f"  throughput ratio plugin/bare {ratio:.3f}  {'PASS' if ratio >= args.target else 'FAIL'}; same vectors {close}"
    )
    return ratio >= args.target and close


if __name__ == "__main__":
    sys.exit(main())
