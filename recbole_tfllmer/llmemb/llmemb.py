r"""LLMEmb over any supported RecBole sequential backbone.

Reference: Liu et al., "LLMEmb: Large Language Model Can Be a Good Embedding Generator for
Sequential Recommendation", AAAI 2025 (arXiv 2409.19925); the method as their public code
implements it is specified in seed-methods.md Part A.

`model: LLMEmb` with `backbone: <RecBole model>` builds the backbone exactly as RecBole would,
then
1. (data hook, item_vectors.py) embeds each item's attribute prompt with the SCFT-fine-tuned
   text encoder (`llmemb_scft`), cached by content;
2. reduces the vectors by PCA to `llmemb_pca_dim` (centred, not whitened) and freezes them;
3. installs a two-layer linear adapter (adapter.py) from that table into the backbone's item
   space as a parametrisation of its item table(s): every lookup and score reads adapter(E);
4. trains with the backbone's RecBole loss + `llmemb_align_alpha` x an in-batch contrastive
   alignment between the adapter rows of the batch's target items and the frozen item table
   of an ID-only backbone trained on the same data (`llmemb_collab`, joined by item token).

Known differences from their code (seed-methods A.7): RecBole's backbones as they are
(causal SASRec, RecBole's CE loss by default), alignment over each row's one target.
"""

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from recbole.utils import set_color
from torch.nn.utils import parametrize

from recbole_tfllmer.backbone_wrapper import BackboneWrapper
from recbole_tfllmer.collab_tables import load_item_table_for
from recbole_tfllmer.errors import ConfigError
from recbole_tfllmer.llmemb.adapter import AdaptedItemTable, install_adapter
from recbole_tfllmer.llmemb.losses import contrastive_loss
from recbole_tfllmer.tfllmer.rec_pca import rec_pca_projection


@dataclass
class LLMEmbReport:
    """What building LLMEmb's table did: logged, and kept in leaderboard records."""

    backbone: str
    pca_dim: int = None  # P after clipping
    pca_dim_requested: int = None
    adapter_hidden: int = None
    pca_retained_variance: float = None
    pca_seconds: float = None
    collab_seconds: float = None
    item_norm_scale: float = None

    def as_dict(self):
        return {k: v for k, v in asdict(self).items() if v is not None}


class LLMEmb(BackboneWrapper):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        options = self.options.llmemb
        self.align_alpha = options.align_alpha
        self.align_tau = options.align_tau
        self.align_loss = options.align_loss
        self.init_report = LLMEmbReport(self.backbone_name, pca_dim_requested=options.pca_dim)
        tables = self.checked_item_tables()
        width = tables[0].embedding_dim

        llm_table = self._pca_table(dataset.item_text_embeddings, options.pca_dim)
        hidden = options.adapter_hidden or max(1, llm_table.shape[1] // 2)
        self.init_report.adapter_hidden = hidden
        self.adapter = AdaptedItemTable(llm_table, width, hidden, self.spec.extra_rows, options.freeze_llm_table)
        for table in tables:  # HGN's two tables share one adapter
            install_adapter(table, self.adapter)
        if self.options.norm.mode != "none":
            self.init_report.item_norm_scale = self.install_normalisation(tables)
        if self.align_alpha > 0:
            self.register_buffer("collab_table", self._collab_table(options.collab, dataset, width), persistent=False)
        self.logger.info(
            set_color("LLMEmb", "pink") + f" [{self.backbone_name}] frozen table {llm_table.shape[0] - 1} x "
            f"{llm_table.shape[1]} (PCA of {dataset.item_text_embeddings.shape[1]}-d vectors, variance kept "
            f"{self.init_report.pca_retained_variance:.3f}) -> adapter {llm_table.shape[1]} -> {hidden} -> {width}; "
            f"alignment alpha {self.align_alpha:g}" + (f" with {options.collab}" if self.align_alpha > 0 else "")
        )

    def _pca_table(self, embeddings, requested):
        """(n_items, P) centred PCA scores, row 0 zeros; P clipped to what the vectors and catalogue allow."""
        vectors = embeddings[1:]
        dim = min(int(requested), vectors.shape[1], vectors.shape[0] - 1)
        if dim < 1:
            raise ConfigError(f"LLMEmb needs at least 2 items with text for its PCA table, got {vectors.shape[0]}")
        if dim < requested:
            self.logger.info(
                f"LLMEmb: llmemb_pca_dim {requested} clipped to {dim} (LLM width {vectors.shape[1]}, "
                f"{vectors.shape[0]} items)"
            )
        start = time.perf_counter()
        result = rec_pca_projection(vectors, None, n_components=dim, alpha=0.0, center=True)
        self.init_report.pca_seconds = time.perf_counter() - start
        self.init_report.pca_dim = dim
        self.init_report.pca_retained_variance = float(result.stats["retained_variance"])
        table = np.zeros((embeddings.shape[0], dim), dtype=np.float32)
        table[1:] = result.embeddings
        return table

    def _collab_table(self, path, dataset, width):
        start = time.perf_counter()
        table = load_item_table_for(path, dataset, option="llmemb_collab")
        if table.shape[1] != width:
            raise ConfigError(
                f"option `llmemb_collab`: item table '{path}' has {table.shape[1]} columns but the backbone's item "
                f"vectors have {width}; the alignment is a dot product in one space. Use a collaborative model of "
                f"width {width}, or set the backbone's embedding_size / hidden_size to {table.shape[1]}"
            )
        self.init_report.collab_seconds = time.perf_counter() - start
        return torch.from_numpy(table)

    def alignment_loss(self, item_ids):
        """seed-methods A.4.3: in-batch contrastive loss between the frozen collaborative vectors
        (a) and the adapter rows (b) of the batch's target items; duplicates kept."""
        return contrastive_loss(
            self.align_loss, self.collab_table[item_ids], self.adapter.item_rows(item_ids), self.align_tau
        )

    # The adapted table is computed once per step / batch (SASRec reads it for input and scores).
    def calculate_loss(self, interaction):
        with parametrize.cached():
            loss = self.backbone.calculate_loss(interaction)
            if self.align_alpha > 0:
                loss = loss + self.align_alpha * self.alignment_loss(interaction[self.ITEM_ID])
        return loss

    def predict(self, interaction):
        with parametrize.cached():
            return self.backbone.predict(interaction)

    def full_sort_predict(self, interaction):
        with parametrize.cached():
            return self.backbone.full_sort_predict(interaction)
