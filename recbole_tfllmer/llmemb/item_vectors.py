"""LLMEmb's data hook: one attribute prompt per item (seed-methods A.1), embedded by the
SCFT-fine-tuned encoder (or the base encoder for LLMEmb w/o SCFT) through the content-hashed
cache. The SCFT recipe is part of the encoder's identity, so a second run with the same
recipe hits the cache: no fine-tuning and no encoding. The LoRA adapter is kept beside the
cache (`<dataset>-scft-<hash>/`), so a killed encoding that resumes does not train again.
"""

import hashlib
import json
import os

from recbole_tfllmer.llmemb.prompts import attribute_lists_from_file, full_prompt
from recbole_tfllmer.options import plugin_options
from recbole_tfllmer.text.encoders import build_text_encoder, config_value
from recbole_tfllmer.text.hook import (
    compute_item_embeddings_with_info,
    dataset_item_tokens,
    embed_item_texts,
    item_file_of,
    reader_options,
    text_fields_of,
)
from recbole_tfllmer.text.store import resolve_cache_dir


def llmemb_item_embeddings(config, dataset):
    """`ItemEmbeddings` of the prompts; `precomputed_embeddings` (vectors fine-tuned elsewhere) wins."""
    options = plugin_options(config)
    if options.text.precomputed:
        return compute_item_embeddings_with_info(config, dataset)
    llmemb = options.llmemb
    attributes, fields = attribute_lists_from_file(
        item_file_of(config), dataset.iid_field, text_fields_of(config), llmemb.prompt, **reader_options(config)
    )
    prompts = {token: full_prompt(attrs, llmemb.prompt) for token, attrs in attributes.items() if attrs}
    tokens = dataset_item_tokens(dataset)
    built = {}

    def encoder_for(rows):
        if not llmemb.scft:
            return build_text_encoder(config)
        built["encoder"] = scft_encoder(config, [attributes[tokens[i]] for i in rows])
        return built["encoder"]

    result = embed_item_texts(config, tokens, prompts, fields, encoder_for, template="llmemb-attribute-prompt")
    report = getattr(built.get("encoder"), "train_report", None)
    result.extra_info = {f"scft_{k}": v for k, v in (report or {}).items()}
    return result


def scft_encoder(config, attributes):
    """The SCFT encoder over the base encoder the `text_*` options describe (its pooling and
    final normalisation), trained on `attributes` (the items that will be encoded)."""
    from recbole_tfllmer.llmemb.scft import SCFTEncoder

    options = plugin_options(config)
    base = build_text_encoder(config)
    identity = base.identity
    pooling = identity["pooling"] if identity["pooling"] in ("mean", "last", "cls") else "mean"
    encoder = SCFTEncoder(
        base.model_path,
        attributes,
        options.llmemb.recipe,
        options.llmemb.prompt,
        pooling=pooling,
        device=base.device,
        dtype=base.dtype,
        batch_size=base.batch_size,
        normalize=bool(identity["normalize"]),
        show_progress=bool(config_value(config, "show_progress", False)),
        allow_download=base.allow_download,
    )
    digest = hashlib.sha256(json.dumps(encoder.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    encoder.adapter_dir = os.path.join(resolve_cache_dir(config), f"{config_value(config, 'dataset')}-scft-{digest}")
    return encoder
