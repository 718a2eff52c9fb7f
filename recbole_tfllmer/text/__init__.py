"""Item text -> LLM embeddings for RecBole datasets (the TF-LLMER data hook).

`compute_item_embeddings(config, dataset)` is the entry point; the pieces below are
RecBole-free and usable on their own.
"""

from recbole_tfllmer.text.encoders import (
    SentenceTransformerEncoder,
    TransformersEncoder,
    build_text_encoder,
    resolve_model_path,
)
from recbole_tfllmer.text.hook import (
    ItemEmbeddings,
    compute_item_embeddings,
    compute_item_embeddings_with_info,
    dataset_item_tokens,
)
from recbole_tfllmer.text.item_text import build_item_text, default_fields, read_header, read_item_table
from recbole_tfllmer.text.store import (
    EncodeInfo,
    compute_cache_key,
    encode_with_cache,
    load_cached_embeddings,
    load_precomputed_embeddings,
    resolve_cache_dir,
)

__all__ = [
    "SentenceTransformerEncoder",
    "TransformersEncoder",
    "build_text_encoder",
    "resolve_model_path",
    "ItemEmbeddings",
    "compute_item_embeddings",
    "compute_item_embeddings_with_info",
    "dataset_item_tokens",
    "build_item_text",
    "default_fields",
    "read_header",
    "read_item_table",
    "EncodeInfo",
    "compute_cache_key",
    "encode_with_cache",
    "load_cached_embeddings",
    "load_precomputed_embeddings",
    "resolve_cache_dir",
]
