"""One table of facts about RecBole's sequential backbones.

The wrapper reads only this table to find a backbone's item table(s), so supporting a new
model is one row here (and a test), not an if/else somewhere in the wrapper.

Every model in RecBole 1.2.1's `recbole.model.sequential_recommender` is in exactly one of
SUPPORTED_BACKBONES and UNSUPPORTED_BACKBONES (tests/test_backbones.py enumerates the
package). Each row was checked against RecBole's source: the table's attribute, its row
count (n_items, + 1 for a [mask] row), padding_idx=0, and that the input lookups and every
scoring path (calculate_loss with CE and BPR, predict, full_sort_predict) read the table
through `table(ids)` or `table.weight`, so the wrapper's parametrization (normalise every
row but padding at every access) applies at every use. tests/test_backbones.py checks the
last point numerically: rescaling the raw rows of the table(s) leaves the loss and both
kinds of scores unchanged.
"""

from dataclasses import dataclass

from recbole.utils import get_model as recbole_get_model

from recbole_tfllmer.errors import ConfigError, UnsupportedBackboneError

# When a backbone needs RecBole's sampled negatives (`train_neg_sample_args`).
NEGATIVES_WITH_BPR = "with_bpr"  # only with `loss_type: BPR` (pos/neg item pairs)
NEGATIVES_ALWAYS = "always"  # its loss is pairwise whatever `loss_type` says (TransRec)
NEGATIVES_OWN = "own"  # it draws its own negatives (BERT4Rec's mask_itemseq transform)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    # The nn.Embedding the backbone scores items with (full_sort_predict, CE logits, predict);
    # for all but HGN it is also the input-lookup table.
    item_table: str = "item_embedding"
    # Rows after the n_items real rows (BERT4Rec's [mask] token); normalised like item rows.
    extra_rows: int = 0
    # Further item tables with the same rows that get the same Rec-PCA vectors and the same
    # normalisation (HGN's separate input table). They are not tied to `item_table`.
    extra_tables: tuple = ()
    # NEGATIVES_*: when `train_neg_sample_args` must sample negatives.
    negatives: str = NEGATIVES_WITH_BPR
    # The option that sets the item table's width (RecBole's backbones use either).
    width_option: str = "embedding_size"
    # The sequence vector leaves a LayerNorm (Transformer layers), so it has norm ~ sqrt(d) and
    # the logits r * ||h|| are large already: `item_norm_scale: auto` keeps r = 1 (SASRec's measured
    # best). Backbones without it (RNNs, CNNs, ...) get r = sqrt(d) (GRU4Rec's), README "Choosing
    # TF-LLMER's defaults".
    sequence_layer_norm: bool = False
    # What a user should know (shown in the README's backbone table).
    note: str = ""

    @property
    def item_tables(self):
        """Every table the wrapper initialises and normalises, the scoring table first."""
        return (self.item_table, *self.extra_tables)


_USER_TABLE = "also learns a user table (not initialised from text)"
_FEATURES = (
    "item-feature embeddings (`selected_features`) enter the input side only and are not "
    "initialised from text; load them with `load_col: {item: [item_id, <selected_features>]}`"
)
_REG_CONSTANT = "its L2 penalty on the item table is a constant under normalisation (unless `item_norm_learnable`)"

SUPPORTED_BACKBONES = {
    spec.name: spec
    for spec in [
        BackboneSpec("SASRec", width_option="hidden_size", sequence_layer_norm=True),
        BackboneSpec("GRU4Rec", note="the item table has `embedding_size` columns (`hidden_size` is the GRU's)"),
        BackboneSpec(
            "BERT4Rec",
            width_option="hidden_size",
            sequence_layer_norm=True,
            extra_rows=1,
            negatives=NEGATIVES_OWN,
            note="n_items + 1 rows: the [mask] row is normalised like an item; scores add a "
            "learned per-item `output_bias`; BPR negatives come from its `mask_itemseq` transform",
        ),
        BackboneSpec("NARM"),
        BackboneSpec("STAMP"),
        BackboneSpec("Caser", note=f"{_USER_TABLE}; {_REG_CONSTANT}"),
        BackboneSpec("NextItNet", note=f"{_REG_CONSTANT}; `block_num` x len(`dilations`) residual blocks"),
        BackboneSpec("LightSANs", width_option="hidden_size", sequence_layer_norm=True),
        BackboneSpec(
            "CORE",
            sequence_layer_norm=True,
            note="CE only; CORE already L2-normalises item vectors in its loss and full_sort_predict "
            "and divides by `temperature`, so `item_norm_scale` does not change those scores "
            "(it does scale the session-encoder input and RecBole's un-normalised `predict`)",
        ),
        BackboneSpec(
            "FEARec",
            width_option="hidden_size",
            sequence_layer_norm=True,
            note="needs `n_layers` >= 2 (its frequency filters divide by n_layers - 1); "
            "contrastive terms stay off unless `contrast` is set",
        ),
        BackboneSpec("GCSAN", width_option="hidden_size", note=f"builds a session graph per sequence; {_REG_CONSTANT}"),
        BackboneSpec("SRGNN", note="builds a session graph per sequence"),
        BackboneSpec(
            "SINE",
            note="pairwise input type in RecBole, but its default `loss_type: CE` needs no "
            "negatives; set `train_neg_sample_args` only with `loss_type: BPR`",
        ),
        BackboneSpec("SHAN", note=f"{_USER_TABLE}; `transform: inverse_itemseq`"),
        BackboneSpec("HRM", note=_USER_TABLE),
        BackboneSpec("FOSSIL", note="also learns per-user order weights (`user_lambda`)"),
        BackboneSpec(
            "TransRec",
            negatives=NEGATIVES_ALWAYS,
            note="BPR only: set `train_neg_sample_args` (e.g. uniform, 1); scores are "
            "bias_i - ||h - e_i|| (a distance, not a dot product); the per-item bias and the "
            "user table are not initialised from text",
        ),
        BackboneSpec(
            "HGN",
            item_table="item_embedding_for_prediction",
            extra_tables=("item_embedding",),
            note="two untied item tables (input `item_embedding`, scoring "
            "`item_embedding_for_prediction`): both start from the same Rec-PCA vectors and "
            "both are normalised; also learns a user table; RecBole's BPR branch scores "
            "negatives with the input table",
        ),
        BackboneSpec("GRU4RecF", note=_FEATURES),
        BackboneSpec("SASRecF", width_option="hidden_size", sequence_layer_norm=True, note=_FEATURES),
        BackboneSpec("FDSA", width_option="hidden_size", sequence_layer_norm=True, note=_FEATURES),
    ]
}

# Models whose item vectors do not fit "item tables looked up and scored through
# `table(ids)` / `table.weight`", and why (checked against RecBole 1.2.1's source).
UNSUPPORTED_BACKBONES = {
    "FPMC": "it has no item table used both as input and for scoring: it factorises with three "
    "separate item tables (IU_emb against the user, LI_emb for the last item, IL_emb for the "
    "next item) plus a user table",
    "NPE": "it scores with ReLU(item_embedding): the scored item vectors lose the normalised "
    "norm (and about half their Rec-PCA coordinates), and its item table has no padding row "
    "(padding_idx is unset; embedding_seq_item is never used)",
    "RepeatNet": "its input table (item_matrix) is never scored: the explore decoder scores "
    "with a separate Linear(2 * hidden_size, n_items) and the repeat decoder copies attention "
    "onto the items already in the sequence",
    "KSR": "it scores with dense_layer_i([item_embedding ; entity_embedding]), a learned mix of "
    "the item table and pretrained knowledge-graph entity vectors, so the scored vectors are not "
    "the normalised table; it also needs a knowledge-graph dataset",
    "GRU4RecKG": "it needs a knowledge-graph-linked dataset with pretrained entity vectors "
    "(`preload_weight`), which it feeds as a second, un-normalised item table (entity_embedding) "
    "next to the ID table; the plugin's data hook builds no such dataset",
    "S3Rec": "it trains in two stages with its own trainer (pretrain over item attributes, then "
    "finetune, which torch.loads the pretrained state_dict in __init__): the Rec-PCA table "
    "would overwrite the pretrained one or be overwritten by it",
    "GRU4RecCPR": "its Softmax-CPR head scores several projected facets, top-k reranker and "
    "context partitions of the item table (or a separate output layer with use_out_emb) and "
    "returns mixed probabilities, not one score per item table row; it has no usable predict",
    "SASRecCPR": "its Softmax-CPR head scores several projected facets, top-k reranker and "
    "context partitions of the item table and returns mixed probabilities, not one score per "
    "item table row; it has no usable predict",
    "DIN": "it is a CTR model (pointwise labels, sigmoid predict, no full_sort_predict) whose items "
    "are item-feature embeddings in a ContextSeqEmbLayer, with no item table to replace",
    "DIEN": "it is a CTR model (pointwise labels, sigmoid predict, no full_sort_predict) whose items "
    "are item-feature embeddings in a ContextSeqEmbLayer, with no item table to replace",
}


def backbone_spec(name):
    """The spec of a supported backbone, or a clear error naming the `backbone` option."""
    if name in SUPPORTED_BACKBONES:
        return SUPPORTED_BACKBONES[name]
    supported = ", ".join(SUPPORTED_BACKBONES)
    if name in UNSUPPORTED_BACKBONES:
        raise UnsupportedBackboneError(
            f"backbone '{name}' is not supported by TFLLMER: {UNSUPPORTED_BACKBONES[name]}. "
            f"Set `backbone` to one of: {supported}."
        )
    raise UnsupportedBackboneError(
        f"backbone '{name}' is not a RecBole sequential model that TFLLMER can wrap. "
        f"Set `backbone` to one of: {supported}."
    )


def resolve_backbone(name):
    """The RecBole class of a supported backbone."""
    if not isinstance(name, str) or not name:
        raise UnsupportedBackboneError(f"`backbone` must be a model name, got {name!r}")
    spec = backbone_spec(name)
    return recbole_get_model(spec.name)


def needs_sampled_negatives(spec, config):
    """Whether this backbone, as configured, reads RecBole's sampled negatives (NEG_ITEM_ID)."""
    if spec.negatives == NEGATIVES_ALWAYS:
        return True
    if spec.negatives == NEGATIVES_OWN:
        return False
    return config["loss_type"] == "BPR"


def validate_backbone_options(config):
    """Raise ConfigError, naming the options, when the backbone would fail mid-training.

    RecBole only finds out at the first batch (KeyError 'neg_item_id') that a pairwise loss
    was configured without negative sampling.
    """
    spec = backbone_spec(config["backbone"])
    sampling = config["train_neg_sample_args"] or {}
    distribution = sampling.get("distribution", "none") if isinstance(sampling, dict) else sampling
    if needs_sampled_negatives(spec, config) and distribution in (None, "none", "None"):
        why = "its loss is pairwise (BPR)" if spec.negatives == NEGATIVES_ALWAYS else "`loss_type` is BPR"
        raise ConfigError(
            f"backbone '{spec.name}' needs sampled negative items because {why}, but "
            "`train_neg_sample_args` samples none: set it, e.g. "
            "`train_neg_sample_args: {distribution: uniform, sample_num: 1}`"
        )
