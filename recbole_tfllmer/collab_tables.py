"""Item tables keyed by item token: exported from a trained model, loaded back for a dataset.

LLMEmb aligns its adapter with the item table of an ID-only backbone trained on the same
data (and A-LLMRec reads one as its frozen collaborative model). RecBole's internal ids
depend on its filtering and remapping, so a table travels as rows plus their raw tokens
(`<stem>.npy` + `<stem>.tokens.txt`, the bring-your-own format of `precomputed_embeddings`)
and is joined to a dataset by token, never by position.

    recbole-tfllmer export-item-table saved/SASRec-....pth randinit_sasrec.npy
"""

import logging
import os

import numpy as np

from recbole_tfllmer.atomic import atomic_write, atomic_write_text
from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.text.hook import dataset_item_tokens
from recbole_tfllmer.text.store import load_precomputed_embeddings


def tokens_path_of(npy_path):
    return str(npy_path)[: -len(".npy")] + ".tokens.txt"


def scoring_table(model):
    """(n_items, d) float32: the vectors the model scores items with (after any parametrisation);
    for A-LLMRec, its joint collaborative-text item vectors."""
    import torch

    if hasattr(model, "joint_item_table"):
        return model.joint_item_table().float().cpu().numpy()
    table = model.item_table if hasattr(model, "item_table") else model.item_embedding
    with torch.no_grad():
        return table.weight[: model.n_items].detach().float().cpu().numpy()


def export_item_table(model, dataset, npy_path):
    """Write the model's scoring table, rows 1.. keyed by their raw tokens (padding row dropped);
    the tokens file first and the .npy last, each atomically, so a reader never sees a .npy
    without its tokens. Returns the .npy path."""
    npy_path = str(npy_path)
    if not npy_path.endswith(".npy"):
        raise ConfigError(f"item-table export path must end in .npy, got '{npy_path}'")
    matrix = scoring_table(model)[1:]
    tokens = dataset_item_tokens(dataset)[1:]
    atomic_write_text(tokens_path_of(npy_path), "".join(f"{t}\n" for t in tokens))
    atomic_write(npy_path, lambda f: np.save(f, np.ascontiguousarray(matrix, dtype=np.float32)))
    logging.getLogger().info(f"item table ({len(tokens)} items x {matrix.shape[1]}) exported to {npy_path}")
    return npy_path


def table_from_checkpoint(model_file):
    """(tokens, matrix) of a checkpoint this plugin wrote, rebuilt with its own config and data,
    so its rows get exactly the tokens they were trained for."""
    from recbole_tfllmer.quick_start import load_data_and_model

    _, model, dataset, *_ = load_data_and_model(model_file)
    return dataset_item_tokens(dataset)[1:], scoring_table(model)[1:]


def load_item_table_for(path, dataset, option="llmemb_collab"):
    """(dataset.item_num, d) float32 table aligned to the dataset's internal ids (row 0 zeros),
    from an exported .npy (+ .tokens.txt) or a checkpoint .pth; every item of the dataset must
    have a row (a table of other data would align the wrong items)."""
    path = os.path.expanduser(str(path))
    if path.endswith(".pth"):
        file_tokens, vectors = table_from_checkpoint(path)
    else:
        file_tokens, vectors = load_precomputed_embeddings(path)
    tokens = dataset_item_tokens(dataset)
    row_of = {t: i for i, t in enumerate(file_tokens)}
    missing = [t for t in tokens[1:] if t not in row_of]
    if missing:
        raise ConfigError(
            f"option `{option}`: item table '{path}' has no row for {len(missing)} of the dataset's "
            f"{len(tokens) - 1} items (e.g. {', '.join(repr(t) for t in missing[:5])}): it was trained on other "
            "data. Export the table of a model trained on this dataset"
        )
    matrix = np.zeros((len(tokens), vectors.shape[1]), dtype=np.float32)
    matrix[1:] = vectors[[row_of[t] for t in tokens[1:]]]
    return matrix
