"""The RecBole-aware data hook: one LLM vector per internal item id of the built dataset.

RecBole filters and remaps item ids while building the dataset, so the only safe join key
is the raw token: row i is the vector of `dataset.id2token(iid_field, i)`, row 0 (the
'[PAD]' id) is zeros. Everything else in `recbole_tfllmer.text` is RecBole-free.
"""

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recbole_tfllmer.errors import ConfigError, ItemTextError, ItemVectorsMissingError
from recbole_tfllmer.options import BY_NAME, check_value
from recbole_tfllmer.text.encoders import build_text_encoder, config_value
from recbole_tfllmer.text.item_text import item_texts_from_file, read_header
from recbole_tfllmer.text.store import (
    EncodeInfo,
    encode_with_cache,
    load_precomputed_embeddings,
    resolve_cache_dir,
)


@dataclass
class ItemEmbeddings:
    """The matrix plus what produced it (for logs, leaderboards and tests)."""

    matrix: np.ndarray  # (dataset.item_num, D) float32, row 0 = padding = zeros
    tokens: list  # tokens[i] is the raw token of internal id i ('[PAD]' at 0)
    missing_tokens: list = field(default_factory=list)  # items filled by missing_text_policy
    source: str = "encoder"  # "encoder" or the precomputed file's path
    texts: list = None  # texts[i] embedded for row i (None for padding/missing); encoder only
    encode_info: EncodeInfo = None  # cache file, hit/miss, items encoded, seconds; encoder only
    seconds: float = 0.0  # wall time of the whole hook
    extra_info: dict = field(default_factory=dict)  # what a method's encoder adds (LLMEmb: scft_steps, ...)

    @property
    def info(self):
        """A flat, JSON-friendly summary for logs and result records."""
        enc = self.encode_info
        return {
            "source": self.source,
            "n_items": len(self.tokens) - 1,
            "dim": int(self.matrix.shape[1]),
            "n_missing": len(self.missing_tokens),
            "cache_file": enc.cache_file if enc else None,
            "cache_hit": enc.cache_hit if enc else None,
            "n_encoded": enc.n_encoded if enc else 0,
            "load_seconds": round(enc.load_seconds, 3) if enc else 0.0,
            "encode_seconds": round(enc.encode_seconds, 3) if enc else 0.0,
            "seconds": round(self.seconds, 3),
            **self.extra_info,
        }


def dataset_item_tokens(dataset):
    """Raw item tokens in internal id order, '[PAD]' first."""
    ids = np.arange(dataset.item_num)
    return [str(t) for t in dataset.id2token(dataset.iid_field, ids)]


def text_fields_of(config):
    """`text_fields` as a list of .item fields (None = every text field), checked."""
    fields = config_value(config, "text_fields")
    if fields is None:
        return None
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    fields = [str(f) for f in fields]
    if not fields:
        raise ConfigError("`text_fields` is empty; list .item fields to embed, or use ~ for every text field.")
    return fields


def reader_options(config):
    """The .item reader's separators and encoding, from the RecBole config (every method reads .item this way)."""
    return dict(
        field_separator=config_value(config, "field_separator", "\t"),
        seq_separator=config_value(config, "seq_separator", " "),
        encoding=config_value(config, "encoding", "utf-8"),
    )


def _missing_policy(config):
    return check_value(BY_NAME["missing_text_policy"], config_value(config, "missing_text_policy"))


def _chunk_size(config):
    """`embedding_chunk_size`: items per checksummed chunk of a resumable encoding."""
    return check_value(BY_NAME["embedding_chunk_size"], config_value(config, "embedding_chunk_size"))


def _raw_item_tokens(config, iid_field, opts):
    """Every item token the dataset's atomic files mention (before RecBole's filtering), so a
    bring-your-own file covering filtered-out items is fine but a wrong file is caught."""
    data_path, name = config_value(config, "data_path"), config_value(config, "dataset")
    parts = config_value(config, "benchmark_filename")
    files = [f"{name}.{p}.inter" for p in parts] if parts else [f"{name}.inter"]
    files.append(f"{name}.item")
    known = set()
    for fn in files:
        path = os.path.join(str(data_path), fn)
        if not os.path.isfile(path):
            continue
        header = read_header(path, opts["field_separator"], opts["encoding"])
        cols = [f"{n}:{t}" for n, t in header if n == iid_field]
        if not cols:
            continue
        sep = opts["field_separator"]
        df = pd.read_csv(
            path,
            delimiter=sep,
            usecols=cols,
            dtype=str,
            keep_default_na=False,
            encoding=opts["encoding"],
            engine="c" if len(sep) == 1 else "python",
        )
        known.update(df[cols[0]].tolist())
    return known


def _leading_zero_hint(missing_tokens, item_tokens):
    """Real exports write ids with and without leading zeros ('007' in .inter, '7' in .item):
    RecBole's tokens are strings, so those items find no text. Say so when it is the cause."""
    stripped = {t.lstrip("0") or "0": t for t in item_tokens}
    pairs = [(t, stripped[t.lstrip("0") or "0"]) for t in missing_tokens if (t.lstrip("0") or "0") in stripped]
    if not pairs:
        return ""
    example = pairs[0]
    return (
        f"; {len(pairs)} of them match an .item id up to leading zeros (e.g. {example[0]!r} in the "
        f".inter file, {example[1]!r} in the .item file): write each id identically in both files"
    )


def _apply_missing_policy(matrix, missing_rows, tokens, policy, what, error_class=ItemTextError):
    if not missing_rows:
        return
    examples = ", ".join(repr(tokens[i]) for i in missing_rows[:5])
    if len(missing_rows) == len(tokens) - 1:
        # No policy can help: every vector would be the same (zeros), Rec-PCA would get an
        # all-zero matrix and training would silently run without item information.
        raise error_class(
            f"every one of the dataset's {len(missing_rows)} items has {what} (e.g. {examples}), so "
            f"`missing_text_policy: {policy}` would give all items the same vector. Check that the file "
            f"and the fields are the ones you mean."
        )
    if policy == "error":
        raise error_class(
            f"{len(missing_rows)} item(s) of the dataset have {what}, e.g. {examples}. Add them, or set "
            f"`missing_text_policy` to zero or mean to fill their vectors."
        )
    present = np.ones(matrix.shape[0], dtype=bool)
    present[0] = False
    present[missing_rows] = False
    if policy == "mean" and present.any():
        matrix[missing_rows] = matrix[present].mean(axis=0)
    else:
        matrix[missing_rows] = 0.0
    logging.getLogger().warning(
        f"{len(missing_rows)} item(s) have {what} (e.g. {examples}); "
        f"missing_text_policy={policy}: filled with {'the mean vector' if policy == 'mean' else 'zeros'}."
    )


def compute_item_embeddings_with_info(config, dataset, encoder=None, shard=None):
    """`ItemEmbeddings` for the built dataset; `encoder` overrides `build_text_encoder(config)`.

    `shard=(i, n)`: encode only that share of the cache's chunks and return None (see
    `encode_with_cache`); the run that follows without a shard commits them."""
    t0 = time.perf_counter()
    policy = _missing_policy(config)
    opts = reader_options(config)
    iid_field = dataset.iid_field
    tokens = dataset_item_tokens(dataset)
    n = len(tokens)

    precomputed = config_value(config, "precomputed_embeddings")
    if precomputed and shard is not None:
        raise ConfigError("`precomputed_embeddings` is set: there is nothing to encode, so no shard to run")
    if precomputed:
        precomputed = os.path.expanduser(str(precomputed))
        beside_data = os.path.join(str(config_value(config, "data_path")), precomputed)
        if not os.path.isabs(precomputed) and not os.path.exists(precomputed) and os.path.exists(beside_data):
            precomputed = beside_data  # a bare file name means "next to the dataset's atomic files"
        known = _raw_item_tokens(config, iid_field, opts) | set(tokens[1:])
        file_tokens, vectors = load_precomputed_embeddings(precomputed, known_tokens=known, **opts)
        row_of = {t: i for i, t in enumerate(file_tokens)}
        matrix = np.zeros((n, vectors.shape[1]), dtype=np.float32)
        missing = []
        for i in range(1, n):
            j = row_of.get(tokens[i])
            if j is None:
                missing.append(i)
            else:
                matrix[i] = vectors[j]
        _apply_missing_policy(
            matrix, missing, tokens, policy, f"no vector in {precomputed!r}", error_class=ItemVectorsMissingError
        )
        unused = len(file_tokens) - (n - 1 - len(missing))
        result = ItemEmbeddings(matrix, tokens, [tokens[i] for i in missing], os.path.abspath(precomputed))
        result.seconds = time.perf_counter() - t0
        logging.getLogger().info(
            f"item embeddings: {n - 1} items x {matrix.shape[1]} from {precomputed} "
            f"({unused} vectors for items not in the built dataset ignored) in {result.seconds:.1f} s"
        )
        return result

    item_file = item_file_of(config)
    template = config_value(config, "text_template")
    texts_by_token, fields = item_texts_from_file(item_file, iid_field, text_fields_of(config), template, **opts)

    def encoder_for(rows):  # built only once the texts are known to be usable
        return encoder if encoder is not None else build_text_encoder(config)

    return embed_item_texts(
        config, tokens, texts_by_token, fields, encoder_for, template=template, started=t0, shard=shard
    )


def item_file_of(config):
    return os.path.join(str(config_value(config, "data_path")), f"{config_value(config, 'dataset')}.item")


def embed_item_texts(config, tokens, texts_by_token, fields, encoder_for, template=None, started=None, shard=None):
    """`ItemEmbeddings` of one text per item, aligned to `tokens` (internal id order): the
    missing-text policy, then the content-hashed cache (encoding only on a miss).

    `encoder_for(rows)` builds the encoder from the internal ids that have text, in encoding
    order, so an encoder that trains on the catalogue (LLMEmb's SCFT) sees exactly the items
    it will encode."""
    t0 = time.perf_counter() if started is None else started
    policy = _missing_policy(config)
    n = len(tokens)
    item_file = item_file_of(config)
    row_texts = [None] + [texts_by_token.get(t) for t in tokens[1:]]
    missing = [i for i in range(1, n) if row_texts[i] is None]
    what = f"no text in {item_file} (fields {', '.join(fields)})"
    what += _leading_zero_hint([tokens[i] for i in missing], texts_by_token)
    if missing and (policy == "error" or len(missing) == n - 1):  # fail before paying for an encoder
        _apply_missing_policy(None, missing, tokens, policy, what)

    present = sorted((i for i in range(1, n) if row_texts[i] is not None), key=lambda i: tokens[i])
    encoder = encoder_for(present)
    if present:
        cache_dir = resolve_cache_dir(config)
        vectors, info = encode_with_cache(
            encoder,
            [tokens[i] for i in present],
            [row_texts[i] for i in present],
            cache_dir,
            config_value(config, "dataset"),
            template=template,
            fields=fields,
            chunk_size=_chunk_size(config),
            shard=shard,
        )
        if shard is not None:
            return None
        matrix = np.zeros((n, vectors.shape[1]), dtype=np.float32)
        matrix[present] = vectors
    else:  # nothing to encode: only the policy's fill, but the dimension must still be right
        info = EncodeInfo("", False, 0, 0)
        matrix = np.zeros((n, encoder.dimension), dtype=np.float32)
    _apply_missing_policy(matrix, missing, tokens, policy, what)
    result = ItemEmbeddings(
        matrix, tokens, [tokens[i] for i in missing], "encoder", row_texts, info, time.perf_counter() - t0
    )
    how = "cache hit" if info.cache_hit else f"encoded {info.n_encoded} in {info.encode_seconds:.1f} s"
    logging.getLogger().info(
        f"item embeddings: {n - 1} items x {matrix.shape[1]} ({how}; {len(missing)} missing) in {result.seconds:.1f} s"
    )
    return result


def compute_item_embeddings(config, dataset, encoder=None):
    """(dataset.item_num, D) float32 matrix aligned to RecBole's internal item ids; row 0 zeros.

    Use `compute_item_embeddings_with_info` for the cache file, timings and missing items.
    """
    return compute_item_embeddings_with_info(config, dataset, encoder).matrix
