"""The data hook: a RecBole SequentialDataset that also carries LLM item embeddings.

Embeddings are computed (or read from cache) once, when the dataset is built, and are
aligned to RecBole's internal item ids of *this* dataset, after RecBole's filtering
(row 0 = padding = zeros). Splits made by `build()` share them and know which split they
are, so the wrapper can insist on building its co-occurrence graph from training rows.
"""

import os
import time

import numpy as np
import pandas as pd
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import SequentialDataset
from recbole.utils import FeatureSource

from recbole_tfllmer.errors import DatasetFileError, DatasetFileNotFoundError, ItemTextError
from recbole_tfllmer.utils import is_plugin_model

SPLIT_NAMES = ("train", "valid", "test")


def needs_text_embeddings(config):
    if config["model"] == "ALLMRec":  # frozen text vectors, unless stage 1 fine-tunes the encoder on raw text
        return not config["allmrec_finetune_text_encoder"]
    return config["model"] == "LLMEmb" or config["item_init"] in ("pca", "rec_pca")


class TFLLMERDataset(SequentialDataset):
    def __init__(self, config, embed_items=True):
        """`embed_items=False` reads the atomic files only (the `encode-items` command encodes itself)."""
        super().__init__(config)
        self.split_name = None
        self._item_text_embeddings = None
        self.embedding_info = {}
        if embed_items and needs_text_embeddings(config):
            self._load_item_text_embeddings()

    # -- RecBole's file loading, with errors that name the file and the fix --------------
    def _download(self):
        """RecBole downloads a missing dataset directory when the name is one it knows and
        raises a bare ValueError otherwise; say which option to fix instead."""
        try:
            self._get_download_url("url")
        except ValueError:
            raise DatasetFileNotFoundError(
                f"dataset directory '{self.dataset_path}' does not exist and '{self.dataset_name}' is not a "
                "dataset RecBole can download. Set `data_path` to the directory that holds "
                f"{self.dataset_name}/{self.dataset_name}.inter, or fix `dataset`."
            ) from None
        super()._download()

    def _load_inter_feat(self, token, dataset_path):
        if self.benchmark_filename_list is None:
            path = os.path.join(dataset_path, f"{token}.inter")
            if not os.path.isfile(path):
                raise DatasetFileNotFoundError(
                    f"Interaction file '{path}' does not exist. Check `data_path` and `dataset`: the "
                    f"directory must hold {token}.inter (and {token}.item for item text)."
                )
        super()._load_inter_feat(token, dataset_path)

    def _load_feat(self, filepath, source):
        """RecBole's reader; a file pandas cannot parse raises DatasetFileError (ItemTextError
        for the .item file) naming the line, instead of a pandas/codec traceback."""
        from recbole_tfllmer.text.item_text import decode_error, garbled_file_error

        error_class = ItemTextError if source == FeatureSource.ITEM else DatasetFileError
        encoding = self.config["encoding"]  # None: RecBole opens with the locale's default
        try:
            return super()._load_feat(filepath, source)
        except UnicodeDecodeError as err:
            raise decode_error(filepath, err.encoding, err, error_class) from None
        except pd.errors.ParserError as err:
            separator = self.config["field_separator"]
            with open(filepath, "r", encoding=encoding, newline="") as f:
                n_fields = len(f.readline().rstrip("\r\n").split(separator))
            raise garbled_file_error(filepath, separator, encoding, n_fields, str(err).strip(), error_class) from None

    # -- item text embeddings ------------------------------------------------------------
    def _load_item_text_embeddings(self):
        start = time.perf_counter()
        if self.config["model"] == "LLMEmb":
            from recbole_tfllmer.llmemb.item_vectors import llmemb_item_embeddings

            result = llmemb_item_embeddings(self.config, self)
        else:
            from recbole_tfllmer.text.hook import compute_item_embeddings_with_info

            result = compute_item_embeddings_with_info(self.config, self)
        matrix = np.asarray(result.matrix, dtype=np.float32)
        if matrix.shape[0] != self.item_num:
            raise AssertionError(
                f"item embeddings have {matrix.shape[0]} rows, the dataset has {self.item_num} item ids"
            )
        self._item_text_embeddings = matrix
        self.embedding_info = dict(result.info or {})
        self.embedding_info.setdefault("seconds", time.perf_counter() - start)

    @property
    def item_text_embeddings(self):
        """(item_num, D) float32 LLM embeddings; row i is internal item id i, row 0 is zeros."""
        if self._item_text_embeddings is None:
            raise AttributeError(
                "this dataset has no item text embeddings: `item_init` is 'random', "
                "set it to 'pca' or 'rec_pca' to embed item text"
            )
        return self._item_text_embeddings

    def build(self):
        datasets = super().build()
        for name, dataset in zip(SPLIT_NAMES, datasets):
            dataset.split_name = name
        return datasets

    def training_rows(self):
        """(item_seqs, seq_lens, targets) numpy arrays of this dataset's rows."""
        item_seq_field = self.iid_field + self.config["LIST_SUFFIX"]
        return (
            self.inter_feat[item_seq_field].numpy(),
            self.inter_feat[self.item_list_length_field].numpy(),
            self.inter_feat[self.iid_field].numpy(),
        )


def create_dataset(config):
    """RecBole's create_dataset, except that plugin models get a TFLLMERDataset."""
    if not is_plugin_model(config["model"]):
        return recbole_create_dataset(config)
    dataset = TFLLMERDataset(config)
    if config["save_dataset"]:
        dataset.save()
    return dataset
