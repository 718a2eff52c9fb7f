"""What every plugin model over a RecBole sequential backbone shares.

The backbone is built exactly as RecBole would build it (its yaml, its `_init_weights`);
the wrapper only changes the item table(s) the backbone table (backbones.py) names, through
torch parametrisations, and delegates RecBole's model interface to the backbone. TFLLMER
(tfllmer/) and LLMEmb (llmemb/) differ only in what they do to those tables, so the
trainers, checkpoints and the leaderboard's diagnostics work for both unchanged.
"""

from logging import getLogger

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import get_model as recbole_get_model

from recbole_tfllmer.backbones import backbone_spec, validate_backbone_options
from recbole_tfllmer.item_tables import normalize_item_table, normalize_rows_once
from recbole_tfllmer.options import plugin_options


class BackboneWrapper(SequentialRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if getattr(config, "plugin_options", None) is None:  # a Config not built by build_config
            validate_backbone_options(config)
        self.options = plugin_options(config)
        self.spec = backbone_spec(config["backbone"])
        self.backbone_name = self.spec.name
        self.backbone = recbole_get_model(self.spec.name)(config, dataset)
        self.logger = getLogger()

    @property
    def item_table(self):
        """The nn.Embedding the backbone scores items with."""
        return getattr(self.backbone, self.spec.item_table)

    def checked_item_tables(self):
        """The scoring table, then any further item tables of the spec (HGN's input table), each
        checked against the shape the backbone table promises."""
        tables = [getattr(self.backbone, name) for name in self.spec.item_tables]
        expected_shape = (self.n_items + self.spec.extra_rows, tables[0].embedding_dim)
        for name, table in zip(self.spec.item_tables, tables):
            if tuple(table.weight.shape) != expected_shape:
                raise AssertionError(
                    f"{self.backbone_name}.{name} has shape {tuple(table.weight.shape)}, expected "
                    f"{expected_shape}; the backbone table in backbones.py is out of date"
                )
        return tables

    # -- TF-LLMER's normalisation (fix 1), which any method can stack on its tables ----------
    def install_normalisation(self, tables):
        """`item_norm` on every table: r * w / ||w|| at every use (always) or once (init)."""
        norm = self.options.norm
        scale = norm.scale_for(tables[0].embedding_dim, self.spec.sequence_layer_norm)
        self._warn_if_degenerate_norm(norm.mode, scale)
        for table in tables:
            if norm.mode == "always":
                normalize_item_table(table, scale, norm.learnable, padding_idx=0)
            elif norm.mode == "init":
                normalize_rows_once(table, scale, padding_idx=0)
        return scale

    def _warn_if_degenerate_norm(self, mode, scale):
        """Scores scale with r under normalisation: far from the useful range the softmax saturates or flattens."""
        if mode != "none" and not 0.01 <= scale <= 100:
            self.logger.warning(
                f"`item_norm_scale: {scale:g}`: every item vector has norm {scale:g}, so scores scale "
                f"by about {scale:g}x the sequence norm and the softmax "
                f"{'saturates' if scale > 100 else 'is nearly uniform'}. Values of 1 to 10 are the useful range."
            )

    # -- RecBole's model interface, delegated to the backbone ---------------------------------
    def forward(self, *args, **kwargs):
        return self.backbone(*args, **kwargs)

    def calculate_loss(self, interaction):
        return self.backbone.calculate_loss(interaction)

    def predict(self, interaction):
        return self.backbone.predict(interaction)

    def full_sort_predict(self, interaction):
        return self.backbone.full_sort_predict(interaction)
