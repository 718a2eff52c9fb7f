r"""TFLLMER: TF-LLMER over any supported RecBole sequential backbone.

Reference: Zhu and Zhang, "Break the Optimization Barrier of LLM-Enhanced Recommenders:
A Theoretical Analysis and Practical Framework", arXiv 2604.20490 (2026).

`model: TFLLMER` with `backbone: <RecBole model>` builds the backbone exactly as RecBole
would (its yaml, its `_init_weights`), then
1. replaces its item table with the Rec-PCA projection of the LLM item embeddings
   (`item_init`: random | pca | rec_pca), computed on the training split's co-occurrence
   graph, and
2. keeps item vectors at norm r at every use (`item_norm`: always | init | none).
Training, evaluation and checkpoints are the backbone's and RecBole's own.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from recbole.utils import set_color

from recbole_tfllmer.backbone_wrapper import BackboneWrapper
from recbole_tfllmer.errors import ConfigError, GraphError
from recbole_tfllmer.options import plugin_options
from recbole_tfllmer.tfllmer.cooccurrence import build_cooccurrence_graph, normalized_adjacency
from recbole_tfllmer.tfllmer.rec_pca import rec_pca_projection

# Rec-PCA logs each phase as it ends from this many entries of the LLM matrix on (~10^5 items
# x 384 dims, where a run takes over ten seconds on 2 cores); below, one line at the end.
_PROGRESS_MIN_ENTRIES = 2**25


def cooccurrence_graph_from_split(config, dataset):
    """Normalised co-occurrence graph over the items of RecBole's *training* split."""
    if getattr(dataset, "split_name", None) != "train":
        raise GraphError(
            "TFLLMER builds its co-occurrence graph from the dataset it is constructed with, "
            "which must be RecBole's training split (train_data.dataset), so that no validation "
            f"or test target enters the graph; got split {getattr(dataset, 'split_name', None)!r}"
        )
    graph = plugin_options(config).graph
    item_seqs, seq_lens, targets = dataset.training_rows()
    adjacency = build_cooccurrence_graph(
        item_seqs,
        seq_lens,
        targets,
        n_items=dataset.item_num,
        window=graph.window,
        weighting=graph.weighting,
        topk=graph.topk,
    )
    if adjacency.nnz == 0:
        raise GraphError(
            f"the co-occurrence graph of dataset '{config['dataset']}' has no edges (every training "
            "sequence has a single item?): Rec-PCA has nothing to align with. Use `item_init: pca`, "
            "or `rec_pca_alpha: 0`."
        )
    return adjacency, normalized_adjacency(adjacency)


@dataclass
class InitReport:
    """What initialising the item table did: logged, and kept in leaderboard records."""

    backbone: str
    item_norm_scale: float = None  # the r the tables were normalised to (sqrt(d) when the option is ~)
    graph_edges: int = None
    graph_seconds: float = None
    rec_pca_seconds: float = None
    rec_pca: dict = field(default_factory=dict)  # rec_pca_projection's statistics (solver, variance kept, TV)

    def as_dict(self):
        """Flat keys (rec_pca_<stat>), as the records have always stored them."""
        flat = {
            "backbone": self.backbone,
            "item_norm_scale": self.item_norm_scale,
            "graph_edges": self.graph_edges,
            "graph_seconds": self.graph_seconds,
            "rec_pca_seconds": self.rec_pca_seconds,
            **{f"rec_pca_{k}": v for k, v in self.rec_pca.items()},
        }
        return {k: v for k, v in flat.items() if v is not None}


class TFLLMER(BackboneWrapper):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.init_report = InitReport(self.backbone_name)
        tables = self.checked_item_tables()  # each gets the same Rec-PCA vectors and its own normalisation
        if self.options.init.uses_llm_vectors:
            self._initialise_from_llm(config, dataset, tables)
        self.item_norm_scale = self.install_normalisation(tables)
        if self.options.norm.mode != "none":
            self.init_report.item_norm_scale = self.item_norm_scale

    def _initialise_from_llm(self, config, dataset, tables):
        embeddings = dataset.item_text_embeddings
        self._warn_if_degenerate_vectors(embeddings[1:])
        dim = tables[0].embedding_dim
        if dim > embeddings.shape[1]:
            raise ConfigError(
                f"the backbone's embedding_size / hidden_size ({dim}) exceeds the LLM embedding dimension "
                f"({embeddings.shape[1]}); Rec-PCA can only reduce dimensions. Use a text encoder with at "
                f"least {dim} dimensions or set embedding_size / hidden_size <= {embeddings.shape[1]}."
            )
        init = self.options.init
        norm_adjacency = None
        if init.alpha > 0:
            start = time.perf_counter()
            adjacency, norm_adjacency = cooccurrence_graph_from_split(config, dataset)
            norm_adjacency = norm_adjacency[1:, 1:]
            self.init_report.graph_seconds = time.perf_counter() - start
            self.init_report.graph_edges = int(adjacency.nnz // 2)
            self.logger.info(
                f"co-occurrence graph of the training split: {self.init_report.graph_edges} edges over "
                f"{self.n_items - 1} items in {self.init_report.graph_seconds:.2f} s; Rec-PCA next"
            )

        start = time.perf_counter()
        result = rec_pca_projection(
            embeddings[1:],
            norm_adjacency,
            n_components=dim,
            alpha=init.alpha,
            formulation=init.formulation,
            center=init.center,
            row_normalize=init.row_normalize,
            whiten=init.whiten,
            solver=init.solver,
            tol=init.tol,
            max_iter=init.max_iter,
            device=init.pca_device(config["device"]),
            progress=self.logger.info if embeddings[1:].size >= _PROGRESS_MIN_ENTRIES else None,
        )
        stats = dict(result.stats)
        stats.pop("seconds", None)  # rec_pca's per-phase timings; the total is kept below
        if init.alpha == 0:  # LLMInit: no trade-off ran, so its fields would only mislead
            stats.pop("formulation", None)
        self.init_report.rec_pca = stats
        self.init_report.rec_pca_seconds = time.perf_counter() - start

        vectors = np.asarray(result.embeddings, dtype=np.float32)
        if init.init_scale is not None:
            mean_norm = float(np.linalg.norm(vectors, axis=1).mean())
            vectors = vectors * (init.init_scale / max(mean_norm, 1e-12))
        with torch.no_grad():
            for table in tables:
                weight = table.weight
                weight[1 : self.n_items] = torch.from_numpy(vectors).to(weight.device, weight.dtype)
                weight[0].zero_()
        self._log_geometry(result.stats, init.alpha, dim, embeddings.shape[1], self.init_report.rec_pca_seconds)

    def _log_geometry(self, stats, alpha, dim, dim_in, seconds):
        """One line: what Rec-PCA did to the geometry, against plain PCA."""
        if alpha > 0:
            message = f"Rec-PCA ({stats['formulation']}, alpha={alpha:g}) {dim_in} -> {dim} dims in {seconds:.2f} s"
        else:
            message = f"PCA {dim_in} -> {dim} dims in {seconds:.2f} s"
        message += f": semantic variance kept {stats['retained_variance']:.3f}"
        if alpha > 0:
            message += f" (PCA {stats['retained_variance_pca']:.3f})"
        if stats.get("tv_ratio") is not None:
            message += f", graph TV / variance {stats['tv_ratio']:.3f}"
            if alpha > 0:
                message += (
                    f" (PCA {stats['tv_ratio_pca']:.3f}), principal-angle sine to PCA max "
                    f"{stats['max_sine_to_pca']:.2f} / mean {stats['mean_sine_to_pca']:.2f}"
                )
        if alpha > 0 and "tradeoff_eigensolver" in stats:
            message += f"; trade-off eigensolver {stats['tradeoff_eigensolver']} ({stats['device']})"
        self.logger.info(set_color("TFLLMER", "pink") + f" [{self.backbone_name}] {message}")

    def _warn_if_degenerate_vectors(self, vectors):
        """Items that all share one LLM vector (e.g. one text for all) give an all-zero PCA table."""
        spread = float(np.abs(vectors - vectors.mean(axis=0)).max()) if len(vectors) else 0.0
        if spread < 1e-6:
            self.logger.warning(
                f"all {len(vectors)} items have the same LLM vector (largest deviation from the mean {spread:.2g}): "
                "after centring the initial item table is all zeros. Check `text_fields` / `text_template` "
                "(do the items' texts differ?)"
            )
